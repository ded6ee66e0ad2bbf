//! The rate gate shared by every call of a process, against a real HTTP server (wiremock) and a
//! real PostgreSQL: one 429 holds back every call of its endpoint group until the time the
//! marketplace named, in seconds or as an HTTP-date, up to `marketplace.retry_after_ceiling`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::spawn_app;
use futures::future::join_all;
use marketplace_sim::{Behaviour, OrderSpec, Scripted};
use order_acceptance::acceptance;
use order_acceptance::config::{
    ApiCallsSettings, GateSettings, MarketplaceSettings, RetrySettings,
};
use order_acceptance::marketplace::{Endpoint, MarketplaceClient};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn settings(base: &str) -> MarketplaceSettings {
    MarketplaceSettings {
        url: url::Url::parse(base).unwrap(),
        api_key: SecretString::from("gate-test-key"),
        shop_id: None,
        name: "BestBuy".into(),
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        retry: RetrySettings {
            attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            budget: Duration::from_secs(5),
        },
        gate: GateSettings {
            retry_after_ceiling: Duration::from_secs(60),
            max_requests_per_second: None,
            learn_pace: false,
        },
        max_response_bytes: 64 * 1024,
        acceptance_window: Duration::from_secs(24 * 3600),
    }
}

fn client(settings: &MarketplaceSettings, pool: &PgPool) -> MarketplaceClient {
    let api_calls = ApiCallsSettings {
        retention: Duration::from_secs(86_400),
        max_body_bytes: 8 * 1024,
    };
    MarketplaceClient::new(settings, &api_calls, pool.clone()).unwrap()
}

/// Answers the first `throttled` requests 429 with the given `Retry-After`, then OR11 with one
/// order per requested id; notes when each request arrived and what it got.
struct Throttling {
    throttled: usize,
    /// 429 unless told otherwise.
    status: u16,
    retry_after: RetryAfter,
    seen: AtomicUsize,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    at_wall: SystemTime,
    status: u16,
}

impl Throttling {
    fn new(throttled: usize, retry_after: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Throttling {
            throttled,
            status: 429,
            retry_after: Box::new(retry_after),
            seen: AtomicUsize::new(0),
            arrivals: Arc::default(),
        }
    }
}

impl Throttling {
    fn with_status(self, status: u16) -> Self {
        Throttling { status, ..self }
    }
}

impl Respond for Throttling {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let throttle = self.seen.fetch_add(1, Ordering::SeqCst) < self.throttled;
        let response = if throttle {
            let retry_after = (self.retry_after)();
            let response = ResponseTemplate::new(self.status)
                .set_body_json(json!({"message": "Too many requests"}));
            // An empty value sends no header at all.
            if retry_after.is_empty() {
                response
            } else {
                response.insert_header("Retry-After", retry_after.as_str())
            }
        } else {
            ResponseTemplate::new(200).set_body_json(echo_orders(request))
        };
        self.arrivals.lock().unwrap().push(Arrival {
            at: Instant::now(),
            at_wall: SystemTime::now(),
            status: if throttle { self.status } else { 200 },
        });
        response
    }
}

fn echo_orders(request: &Request) -> Value {
    let ids = request
        .url
        .query_pairs()
        .find(|(key, _)| key == "order_ids")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let orders: Vec<Value> = ids
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| {
            json!({
                "order_id": id,
                "order_state": "WAITING_ACCEPTANCE",
                "created_date": "2026-01-05T10:00:00Z",
                "order_lines": [{"order_line_id": format!("{id}-1"), "order_line_state": "WAITING_ACCEPTANCE", "quantity": 1}]
            })
        })
        .collect();
    json!({ "orders": orders, "total_count": orders.len() })
}

/// Mounts the responder on OR11 and hands back its arrival log.
async fn serve(server: &MockServer, responder: Throttling) -> Arc<Mutex<Vec<Arrival>>> {
    let arrivals = responder.arrivals.clone();
    Mock::given(path("/api/orders"))
        .respond_with(responder)
        .mount(server)
        .await;
    arrivals
}

fn arrivals(log: &Arc<Mutex<Vec<Arrival>>>) -> Vec<Arrival> {
    log.lock().unwrap().clone()
}

/// Waits until the client has seen `n` closings of the OR11 gate.
async fn closed(client: &MarketplaceClient, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.gate_closings(Endpoint::OR11) < n {
        assert!(Instant::now() < deadline, "the gate never closed");
        tokio::task::yield_now().await;
    }
}

#[sqlx::test]
async fn one_429_holds_back_every_call_of_the_group_until_retry_after(pool: PgPool) {
    let server = MockServer::start().await;
    let log = serve(&server, Throttling::new(1, || "1".into())).await;
    let client = client(&settings(&server.uri()), &pool);

    let first = tokio::spawn({
        let client = client.clone();
        async move { client.orders_by_ids(&["G-0".into()]).await }
    });
    closed(&client, 1).await;
    // Seven more calls through clones of the client, started while the gate is closed.
    let others = join_all((1..8).map(|i| {
        let client = client.clone();
        async move { client.orders_by_ids(&[format!("G-{i}")]).await }
    }))
    .await;

    assert_eq!(first.await.unwrap().unwrap().len(), 1);
    for result in others {
        assert_eq!(result.unwrap().len(), 1);
    }
    let arrivals = arrivals(&log);
    assert_eq!(arrivals.len(), 9, "one 429, then each of the 8 calls once");
    let throttled_at = arrivals[0].at;
    assert_eq!(arrivals[0].status, 429);
    for later in &arrivals[1..] {
        assert!(
            later.at >= throttled_at + Duration::from_secs(1),
            "a request reached the server {:?} after the 429 that asked for 1 s",
            later.at - throttled_at
        );
    }
    assert_eq!(client.gate_closings(Endpoint::OR11), 1);
    assert_eq!(
        client.gate_closings(Endpoint::OR21),
        0,
        "OR21 has its own gate"
    );
}

#[sqlx::test]
async fn an_http_date_retry_after_is_honoured(pool: PgPool) {
    let server = MockServer::start().await;
    // A whole second at least: an HTTP-date has no fractions.
    let asked = Arc::new(Mutex::new(None));
    let date = asked.clone();
    let log = serve(
        &server,
        Throttling::new(1, move || {
            let at = SystemTime::now() + Duration::from_secs(2);
            *date.lock().unwrap() =
                Some(httpdate::parse_http_date(&httpdate::fmt_http_date(at)).unwrap());
            httpdate::fmt_http_date(at)
        }),
    )
    .await;
    let client = client(&settings(&server.uri()), &pool);

    let orders = client.orders_by_ids(&["D-1".into()]).await.unwrap();

    assert_eq!(orders.len(), 1);
    let arrivals = arrivals(&log);
    assert_eq!(arrivals.len(), 2);
    let until = asked.lock().unwrap().expect("the date sent");
    // SystemTime and Instant may drift apart by a hair within one test.
    assert!(
        arrivals[1].at_wall + Duration::from_millis(10) >= until,
        "retried at {:?}, before the date named ({until:?})",
        arrivals[1].at_wall
    );
}

#[sqlx::test]
async fn a_retry_after_past_the_ceiling_fails_as_transient_without_waiting(pool: PgPool) {
    let server = MockServer::start().await;
    let log = serve(&server, Throttling::new(1, || "3600".into())).await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client.orders_by_ids(&["C-1".into()]).await.unwrap_err();
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("marketplace.retry_after_ceiling"),
        "{message}"
    );
    assert!(message.contains("nothing was sent"), "{message}");

    // The gate stays shut until the time named: the next call fails at once, sending nothing.
    let again = client.orders_by_ids(&["C-2".into()]).await.unwrap_err();
    assert!(again.is_transient(), "{again:?}");
    assert_eq!(arrivals(&log).len(), 1, "one request, no retry");
}

#[sqlx::test]
async fn an_absurd_retry_after_fails_the_call_instead_of_the_process(pool: PgPool) {
    // Seconds past any clock, and a date past the year 9999 once added to now.
    for absurd in ["10000000000000000000", "300000000000"] {
        let server = MockServer::start().await;
        let log = serve(&server, Throttling::new(1, move || absurd.into())).await;
        let client = client(&settings(&server.uri()), &pool);

        let err = client.orders_by_ids(&["C-1".into()]).await.unwrap_err();
        assert!(err.is_transient(), "{absurd}: {err:?}");
        assert!(
            err.to_string().contains("marketplace.retry_after_ceiling"),
            "{absurd}: {err}"
        );
        assert_eq!(arrivals(&log).len(), 1, "{absurd}: one request, no retry");
    }
}

#[sqlx::test]
async fn a_429_storm_does_not_use_up_the_budgets_of_calls_queued_behind_the_gate(pool: PgPool) {
    let server = MockServer::start().await;
    // Ten calls in flight answered 429 twice over: two closings of 1 s each.
    let log = serve(&server, Throttling::new(20, || "1".into())).await;
    let mut settings = settings(&server.uri());
    // Shorter than the first 1 s closing, so counting gate time would end every call's retries,
    // yet room for a loaded host's round trips and writes.
    settings.retry.budget = Duration::from_millis(700);
    let client = client(&settings, &pool);

    let started = Instant::now();
    let results = join_all((0..10).map(|i| {
        let client = client.clone();
        async move { client.orders_by_ids(&[format!("S-{i}")]).await }
    }))
    .await;
    let took = started.elapsed();

    for result in results {
        assert_eq!(result.unwrap().len(), 1, "every queued call succeeds");
    }
    assert!(
        took > settings.retry.budget,
        "the calls waited {took:?} in all, more than their budget"
    );
    let arrivals = arrivals(&log);
    assert_eq!(arrivals.iter().filter(|a| a.status == 429).count(), 20);
    assert_eq!(arrivals.iter().filter(|a| a.status == 200).count(), 10);
    assert_eq!(
        client.gate_closings(Endpoint::OR11),
        2,
        "ten answers at once are one closing"
    );
}

#[sqlx::test]
async fn max_requests_per_second_spaces_the_calls_of_a_group(pool: PgPool) {
    let server = MockServer::start().await;
    let log = serve(&server, Throttling::new(0, String::new)).await;
    let mut settings = settings(&server.uri());
    settings.gate.max_requests_per_second = Some(20.0);
    let client = client(&settings, &pool);

    let results = join_all((0..11).map(|i| {
        let client = client.clone();
        async move { client.orders_by_ids(&[format!("P-{i}")]).await }
    }))
    .await;

    assert!(results.iter().all(Result::is_ok));
    let mut arrivals: Vec<Instant> = arrivals(&log).iter().map(|a| a.at).collect();
    arrivals.sort();
    let span = arrivals[10] - arrivals[0];
    // Ten gaps of 50 ms: 500 ms. A burst of two would give 450 ms, and unpaced about none; the
    // bound leaves a loaded host 40 ms for a request's own travel time at either end.
    assert!(
        span >= Duration::from_millis(460),
        "11 requests at 20/s arrived within {span:?}"
    );
}

#[sqlx::test]
async fn a_rate_limited_marketplace_has_every_order_accepted_in_one_run(pool: PgPool) {
    let app = spawn_app(
        pool,
        |sim| {
            sim.orders = 30;
            sim.faults.rate_limit = Some(10);
            sim.faults.retry_after = Duration::from_secs(1);
        },
        common::ROOM_TO_SPARE,
    )
    .await;
    let ctx = app.worker();

    let summary = acceptance::run(&ctx, &CancellationToken::new())
        .await
        .expect("run");

    assert_eq!((summary.accepted, summary.failed), (30, 0), "{summary:?}");
    let stats = app.sim.stats();
    assert!(
        stats
            .faults_injected
            .get("rate_limit")
            .copied()
            .unwrap_or(0)
            > 0,
        "the marketplace throttled the run: {stats:?}"
    );
    assert!(
        ctx.client.gate_closings(Endpoint::OR21) + ctx.client.gate_closings(Endpoint::OR11) > 0
    );
    // With the learner on (the default), whatever pace a closing taught is near the limit,
    // well below what 4 calls in flight at the simulator's speed would send. (Whether a closing
    // teaches one depends on how many answers the host managed around it: the learner's own
    // tests cover that with a made-up clock.)
    let learned: Vec<f64> = [Endpoint::OR11, Endpoint::OR21]
        .into_iter()
        .filter_map(|endpoint| ctx.client.learned_rate(endpoint))
        .collect();
    assert!(learned.iter().all(|rate| *rate < 20.0), "{learned:?}");
    assert_eq!(stats.or21_not_waiting, 0, "no order was accepted twice");
}

#[sqlx::test]
async fn an_order_throttled_past_the_ceiling_is_left_for_a_later_run(pool: PgPool) {
    // The harness's ceiling is 1 minute; the marketplace asks for 2.
    let app = spawn_app(
        pool,
        |sim| sim.faults.retry_after = Duration::from_secs(120),
        &[],
    )
    .await;
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some("T-9".into()),
        lines: Some(1),
        behaviour: Behaviour {
            or21: vec![Scripted::Throttle],
            ..Behaviour::default()
        },
        ..OrderSpec::default()
    }]);

    let started = Instant::now();
    let summary = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run");

    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run did not wait"
    );
    assert_eq!(
        (summary.accepted, summary.retry_scheduled),
        (0, 1),
        "{summary:?}"
    );
    assert_eq!(app.or21_calls("T-9"), 1, "no retry within the run");
    let failures = app.open_failures("T-9").await;
    assert_eq!(failures.len(), 1);
    let (details, retryable) = &failures[0];
    assert!(*retryable, "a later run tries again");
    assert!(
        details.contains("marketplace.retry_after_ceiling"),
        "{details}"
    );
}

/// What a throttled answer's `Retry-After` says; empty for no header.
type RetryAfter = Box<dyn Fn() -> String + Send + Sync>;

#[sqlx::test]
async fn a_retry_after_that_names_no_wait_is_a_429_without_one(pool: PgPool) {
    // Negative, not a number, a date already past, and none at all: each closes the gate for
    // the back-off delay only, and the call goes again at once.
    let past = || httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let cases: [(&str, RetryAfter); 4] = [
        ("negative", Box::new(|| "-5".into())),
        ("unparseable", Box::new(|| "soon, maybe".into())),
        ("in the past", Box::new(past)),
        ("missing", Box::new(String::new)),
    ];
    for (case, retry_after) in cases {
        let server = MockServer::start().await;
        let log = serve(&server, Throttling::new(1, retry_after)).await;
        let client = client(&settings(&server.uri()), &pool);

        let orders = client.orders_by_ids(&["N-1".into()]).await;

        assert_eq!(orders.expect(case).len(), 1, "{case}");
        let arrivals = arrivals(&log);
        assert_eq!(
            arrivals.iter().map(|a| a.status).collect::<Vec<_>>(),
            [429, 200],
            "{case}"
        );
        // The settings' back-off is at most 40 ms; anything near a second would be a wait the
        // header did not ask for.
        let gap = arrivals[1].at - arrivals[0].at;
        assert!(
            gap < Duration::from_millis(500),
            "{case}: retried after {gap:?}"
        );
        assert_eq!(client.gate_closings(Endpoint::OR11), 1, "{case}");
    }
}

#[sqlx::test]
async fn a_503_storm_with_retry_after_holds_the_group_like_429s(pool: PgPool) {
    let server = MockServer::start().await;
    // Ten calls answered 503 twice over, each asking for 1 s: two closings, then all succeed.
    let log = serve(&server, Throttling::new(20, || "1".into()).with_status(503)).await;
    let mut settings = settings(&server.uri());
    // Shorter than the first 1 s closing, so counting gate time would end every call's retries,
    // yet room for a loaded host's round trips and writes.
    settings.retry.budget = Duration::from_millis(700);
    let client = client(&settings, &pool);

    let results = join_all((0..10).map(|i| {
        let client = client.clone();
        async move { client.orders_by_ids(&[format!("U-{i}")]).await }
    }))
    .await;

    for result in results {
        assert_eq!(
            result.unwrap().len(),
            1,
            "every call succeeds after the storm"
        );
    }
    let arrivals = arrivals(&log);
    assert_eq!(arrivals.iter().filter(|a| a.status == 503).count(), 20);
    assert_eq!(client.gate_closings(Endpoint::OR11), 2);
    let first_503 = arrivals[0].at;
    assert!(
        arrivals
            .iter()
            .filter(|a| a.status == 200)
            .all(|a| a.at >= first_503 + Duration::from_secs(2)),
        "no call went before both waits asked for were over"
    );
}
