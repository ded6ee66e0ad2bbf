//! The rate learner and the gate state replicas share, over real HTTP (the simulator, wiremock)
//! and a real PostgreSQL: a limit that changes while the worker runs is followed down and found
//! again up; a closing and a learned pace reach the other replicas through `rate_gates`; a row
//! that is missing, corrupt or written by another clock leaves each process to its own gate;
//! and an order's re-sends do not count the time the gate was closed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::spawn_app;
use futures::future::join_all;
use marketplace_sim::{Behaviour, OrderSpec, Scripted};
use order_acceptance::acceptance;
use order_acceptance::marketplace::{Endpoint, MarketplaceClient};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `workers` callers hammer OR11 until `answered` calls were served; returns the 429s the
/// simulator sent meanwhile. The deadline only keeps a broken learner from hanging the test.
async fn hammer(
    app: &common::TestApp,
    client: &MarketplaceClient,
    workers: usize,
    answered: u64,
) -> u64 {
    let throttled_before = throttled(app);
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    join_all((0..workers).map(|_| {
        let (client, ok) = (client.clone(), ok.clone());
        async move {
            while ok.load(Ordering::Relaxed) < answered {
                assert!(
                    Instant::now() < deadline,
                    "stalled: {} of {answered} calls served in 2 minutes",
                    ok.load(Ordering::Relaxed)
                );
                if client.orders_by_ids(&["L-1".into()]).await.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }))
    .await;
    throttled(app) - throttled_before
}

fn throttled(app: &common::TestApp) -> u64 {
    app.sim.stats().throttled.get("OR11").copied().unwrap_or(0)
}

#[sqlx::test]
async fn a_limit_changing_mid_run_is_followed_down_and_found_again_up(pool: PgPool) {
    // 429s without a wait named (Retry-After: 0), so closings last a back-off delay.
    let app = spawn_app(
        pool,
        |sim| {
            sim.faults.rate_limit = Some(5);
            sim.faults.retry_after = Duration::ZERO;
        },
        &[("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "4")],
    )
    .await;
    let client = app.worker().client;
    assert_eq!(
        client.learned_rate(Endpoint::OR11),
        None,
        "unpaced at first"
    );

    hammer(&app, &client, 8, 20).await;
    assert!(
        client.learned_rate(Endpoint::OR11).is_some(),
        "paced after the first burst against 5 per second"
    );

    app.sim.set_rate_limit(Some(2));
    let throttled_2 = hammer(&app, &client, 8, 20).await;
    // Unpaced, 8 callers would draw a 429 on nearly every request (hundreds for 20 served);
    // paced, the limit is followed down within a closing or two.
    assert!(
        throttled_2 < 20,
        "at 2 per second: 20 served, {throttled_2} throttled"
    );

    // The higher limit is found: the pace climbs past what 5 per second allowed.
    app.sim.set_rate_limit(Some(10));
    let mut served = 0;
    while client
        .learned_rate(Endpoint::OR11)
        .is_some_and(|rate| rate <= 6.0)
    {
        served += 20;
        assert!(served <= 2000, "the pace never climbed past 6 per second");
        hammer(&app, &client, 8, 20).await;
    }
}

/// OR11 answered 429 (`Retry-After` as given) for the first request, then 200s.
async fn throttling_server(retry_after: &str) -> MockServer {
    failing_first(
        ResponseTemplate::new(429).insert_header("Retry-After", retry_after),
        1,
    )
    .await
}

/// OR11 answered `failure` for the first `times` requests, then 200s with no order.
async fn failing_first(failure: ResponseTemplate, times: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .respond_with(failure)
        .up_to_n_times(times)
        .mount(&server)
        .await;
    Mock::given(path("/api/orders"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"orders": [], "total_count": 0})),
        )
        .mount(&server)
        .await;
    server
}

async fn wiremock_app(pool: PgPool, server: &MockServer) -> common::TestApp {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let settings = app.settings_with(&[("MARKETPLACE_URL", &server.uri())]);
    common::TestApp { settings, ..app }
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

#[sqlx::test]
async fn a_closing_holds_back_the_other_replicas_of_the_shop(pool: PgPool) {
    let server = throttling_server("2").await;
    let app = wiremock_app(pool.clone(), &server).await;
    let (one, two) = (app.worker().client, app.worker().client);
    one.start_run().await;

    let started = Instant::now();
    let first = tokio::spawn({
        let one = one.clone();
        async move { one.orders_by_ids(&["R-1".into()]).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shared: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM closed_until - now())::float8 FROM rate_gates WHERE shop = 'default' AND api_group = 'OR11'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if shared.is_some_and(|wait| wait > 0.5) {
            break;
        }
        assert!(Instant::now() < deadline, "the closing was never shared");
        tokio::task::yield_now().await;
    }
    // The second replica starts a run now: it waits with the first instead of drawing its own
    // 429.
    two.start_run().await;
    two.orders_by_ids(&["R-2".into()])
        .await
        .expect("after the wait");
    first.await.unwrap().expect("after the wait");

    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "the second replica's call went before the 2 s the first was told"
    );
    assert_eq!(received(&server).await, 3, "one 429, then one call each");
    assert_eq!(two.gate_closings(Endpoint::OR11), 0, "no 429 of its own");
}

#[sqlx::test]
async fn a_fresh_run_starts_from_the_pace_learned_recently(pool: PgPool) {
    let app = spawn_app(
        pool.clone(),
        |sim| {
            sim.faults.rate_limit = Some(5);
            sim.faults.retry_after = Duration::from_secs(1);
        },
        &[("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "4")],
    )
    .await;
    let learner = app.worker().client;
    learner.start_run().await;
    // 16 calls at once against 5 per second: a limit, learned when the gate reopens.
    join_all((0..16).map(|i| {
        let learner = learner.clone();
        async move { learner.orders_by_ids(&[format!("F-{i}")]).await }
    }))
    .await;
    let (rate, w_max): (f64, f64) = sqlx::query_as(
        "SELECT learned_rate, last_max_rate FROM rate_gates WHERE shop = 'default' AND api_group = 'OR11'",
    )
    .fetch_one(&pool)
    .await
    .expect("the learned pace is shared");
    assert!(
        (0.5..=w_max).contains(&rate) && w_max <= 8.0,
        "{rate} towards {w_max}"
    );

    let fresh = app.worker().client;
    assert_eq!(fresh.learned_rate(Endpoint::OR11), None);
    fresh.start_run().await;
    let adopted = fresh.learned_rate(Endpoint::OR11).expect("adopted");
    assert!((rate..=w_max + 1e-9).contains(&adopted), "{adopted}");
}

#[sqlx::test]
async fn a_replica_whose_run_began_before_another_learned_the_pace_sends_its_first_calls_at_it(
    pool: PgPool,
) {
    let app = spawn_app(
        pool,
        |sim| {
            sim.faults.rate_limit = Some(5);
            sim.faults.retry_after = Duration::from_secs(1);
        },
        &[("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "6")],
    )
    .await;
    let (early, learner) = (app.worker().client, app.worker().client);
    // The early replica's run begins while nothing is shared yet.
    early.start_run().await;
    learner.start_run().await;
    let burst = |client: MarketplaceClient, prefix: &'static str| async move {
        join_all((0..16).map(|i| {
            let client = client.clone();
            async move { client.orders_by_ids(&[format!("{prefix}-{i}")]).await }
        }))
        .await
    };
    burst(learner.clone(), "L").await;
    assert!(
        learner.learned_rate(Endpoint::OR11).is_some(),
        "a limit learned"
    );

    // 16 calls at once: the first reads what the other replica learned, the rest wait for it
    // instead of going out unpaced (which would draw about 11 429s from a bucket of 5).
    let before = throttled(&app);
    let results = burst(early.clone(), "E").await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let drawn = throttled(&app) - before;
    assert!(drawn <= 3, "{drawn} of 16 calls throttled");
    assert!(
        early.learned_rate(Endpoint::OR11).is_some(),
        "the pace was adopted"
    );
}

#[sqlx::test]
async fn a_missing_corrupt_or_foreign_clock_row_leaves_each_process_its_own_gate(pool: PgPool) {
    let server = throttling_server("1").await;
    // The first request is throttled for 1 s; the rows below must neither hold calls longer
    // nor pace them.
    let app = wiremock_app(pool.clone(), &server).await;
    let missing = app.worker().client;
    missing.start_run().await;
    assert_eq!(
        missing.learned_rate(Endpoint::OR11),
        None,
        "no row: unpaced"
    );

    sqlx::query(
        r#"
        INSERT INTO rate_gates (shop, api_group, closed_until, learned_rate, last_max_rate, updated_at, updated_by)
        VALUES ('default', 'OR11', now() + interval '100 years', 'NaN', 5, now(), 'corrupt'),
               ('default', 'OR21', now() + interval '30 seconds', 3, 5, now() + interval '2 hours', 'other-clock'),
               ('default', 'A01', NULL, 1e12, 1e12, now(), 'absurd'),
               ('default', 'P11', now() + interval '1 hour', 1, 1, now(), 'unknown group')
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();

    let client = app.worker().client;
    client.start_run().await;
    for endpoint in [Endpoint::OR11, Endpoint::OR21, Endpoint::A01] {
        assert_eq!(
            client.learned_rate(endpoint),
            None,
            "{endpoint}: no pace taken"
        );
    }
    let started = Instant::now();
    // One 429 of its own (1 s), then the answer: the 100-year closing was not taken.
    client.orders_by_ids(&["C-1".into()]).await.expect("served");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "held by a corrupt row"
    );
    assert_eq!(client.gate_closings(Endpoint::OR11), 1);
    // Its own closing overwrote the corrupt row with one other replicas can use.
    let corrupt: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rate_gates WHERE api_group = 'OR11' AND closed_until > now() + interval '1 day'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(corrupt, 0);
}

#[sqlx::test]
async fn an_orders_resends_do_not_count_the_time_its_gate_was_closed(pool: PgPool) {
    // A 2 s closing, then an unclear answer, with a 1 s re-send budget: the order is re-read
    // and sent again, not given up because the marketplace made it wait.
    let app = spawn_app(
        pool,
        |sim| sim.faults.retry_after = Duration::from_secs(2),
        &[
            ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_BUDGET", "1s"),
            ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "3"),
        ],
    )
    .await;
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some("W-1".into()),
        lines: Some(1),
        behaviour: Behaviour {
            or21: vec![Scripted::Throttle, Scripted::Status500],
            ..Behaviour::default()
        },
        ..OrderSpec::default()
    }]);

    let summary = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run");

    assert_eq!((summary.accepted, summary.failed), (1, 0), "{summary:?}");
    assert_eq!(
        app.or21_calls("W-1"),
        3,
        "429, the unclear 500, the re-send"
    );
    assert_eq!(app.sim.stats().or21_not_waiting, 0, "accepted once");
}

#[sqlx::test]
async fn three_replicas_against_one_limit_share_it_and_send_no_order_twice(pool: PgPool) {
    let app = spawn_app(
        pool.clone(),
        |sim| {
            sim.orders = 90;
            sim.faults.rate_limit = Some(5);
            sim.faults.retry_after = Duration::from_secs(1);
        },
        common::ROOM_TO_SPARE,
    )
    .await;
    let replicas = [app.worker(), app.worker(), app.worker()];
    let stop = CancellationToken::new();

    let summaries = join_all(replicas.iter().map(|ctx| acceptance::run(ctx, &stop))).await;

    let (mut accepted, mut failed) = (0, 0);
    for summary in summaries {
        let summary = summary.expect("run");
        accepted += summary.accepted;
        failed += summary.failed;
    }
    assert_eq!(
        (accepted, failed),
        (90, 0),
        "every order accepted in the one run"
    );
    let stats = app.sim.stats();
    assert_eq!(
        stats.or21_not_waiting, 0,
        "no order was sent twice: {stats:?}"
    );
    let requests: u64 = stats.requests.values().sum();
    let throttled: u64 = stats.throttled.values().sum();
    // Each replica pacing at the whole limit would keep the three at three times it, and
    // draw a 429 on a third of the requests or more.
    assert!(
        throttled * 100 <= requests * THREE_REPLICAS_MOST_THROTTLED_PERCENT,
        "{throttled} of {requests} requests throttled: {stats:?}"
    );
    let plateau: Option<f64> = sqlx::query_scalar(
        "SELECT last_max_rate FROM rate_gates WHERE shop = 'default' AND api_group = 'OR21'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap()
    .flatten();
    assert!(
        plateau.is_none_or(|rate| rate <= 10.0),
        "the shop's plateau is the shop's limit, not a sum: {plateau:?}"
    );
}

/// The most 429s in a hundred requests for three replicas sharing a limit.
const THREE_REPLICAS_MOST_THROTTLED_PERCENT: u64 = 20;

#[sqlx::test]
async fn a_503_storm_with_retry_after_is_waited_out_and_teaches_no_pace(pool: PgPool) {
    // The first 16 OR11 requests are answered 503 with Retry-After: 1, then the service is back.
    let server = failing_first(
        ResponseTemplate::new(503).insert_header("Retry-After", "1"),
        16,
    )
    .await;
    // A caller may meet the storm at each of its attempts: attempts enough that none runs out
    // (what is checked is the pace, not the retry schedule).
    let app = spawn_app(pool, |_| {}, &[]).await;
    let settings = app.settings_with(&[
        ("MARKETPLACE_URL", &server.uri()),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "20"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_BUDGET", "30s"),
    ]);
    let app = common::TestApp { settings, ..app };
    let client = app.worker().client;
    client.start_run().await;

    let calls = join_all((0..8).map(|i| {
        let client = client.clone();
        async move { client.orders_by_ids(&[format!("S-{i}")]).await }
    }))
    .await;

    assert!(
        calls.iter().all(Result::is_ok),
        "every call goes through once the storm passes: {calls:?}"
    );
    assert!(
        client.gate_closings(Endpoint::OR11) >= 1,
        "the 503s closed the gate"
    );
    assert_eq!(
        client.learned_rate(Endpoint::OR11),
        None,
        "an outage is no rate limit: nothing served is no rate to pace at"
    );
}
