//! The acceptance run end to end: real PostgreSQL, the project's simulator over real HTTP.

mod common;

use std::time::Duration;

use common::{TestApp, spawn_app};
use marketplace_sim::{Behaviour, OrderSpec, Scripted, SimConfig};
use order_acceptance::acceptance::{self, RunError, RunResult};
use order_acceptance::terminal::Width;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn waiting(id: &str, behaviour: Behaviour) -> OrderSpec {
    OrderSpec {
        order_id: Some(id.into()),
        lines: Some(2),
        behaviour,
        ..OrderSpec::default()
    }
}

fn in_state(id: &str, state: &str, reason: Option<&str>) -> OrderSpec {
    OrderSpec {
        order_id: Some(id.into()),
        state: Some(state.into()),
        reason_code: reason.map(Into::into),
        lines: Some(1),
        ..OrderSpec::default()
    }
}

fn or21_script(script: Vec<Scripted>) -> Behaviour {
    Behaviour {
        or21: script,
        ..Behaviour::default()
    }
}

async fn run_once(app: &TestApp) -> acceptance::RunSummary {
    acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run completes")
}

#[sqlx::test]
async fn imported_orders_are_accepted_and_validated(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 25, &[]).await;
    let summary = run_once(&app).await;

    assert_eq!(summary.result, RunResult::Completed);
    assert_eq!(
        (summary.imported, summary.claimed, summary.accepted),
        (25, 25, 25)
    );
    assert_eq!((summary.cancelled, summary.failed), (0, 0));
    let stats = app.sim.stats();
    assert_eq!(stats.or21_accepted, 25);
    assert!(
        stats.or21_calls_per_order.values().all(|&n| n == 1),
        "{stats:?}"
    );
    assert_eq!(stats.or21_not_waiting, 0);

    let ids: Vec<String> = sqlx::query_scalar("SELECT order_id FROM orders ORDER BY order_id")
        .fetch_all(&app.pool)
        .await
        .expect("orders");
    assert_eq!(ids.len(), 25);
    for id in &ids {
        let (status, note) = app.current_status(id).await;
        assert_eq!(status, "accepted");
        let note = note.unwrap_or_default();
        assert!(note.starts_with("Validated as '"), "{id}: {note}");
        assert_eq!(
            app.statuses(id).await,
            ["pending_acceptance", "accepting", "accepted"]
        );
    }
    // Every HTTP call has its api_calls row.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM api_calls")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows as u64, summary.api_calls);
    assert_eq!(summary.api_calls, stats.requests.values().sum::<u64>());
}

#[sqlx::test]
async fn a_multi_page_import_stores_every_page_before_claiming(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 250, &[]).await;
    let summary = run_once(&app).await;
    assert_eq!(
        (summary.imported, summary.claimed, summary.accepted),
        (250, 250, 250)
    );
    let stats = app.sim.stats();
    assert!(
        stats.or21_calls_per_order.values().all(|&n| n == 1),
        "{stats:?}"
    );
    let import_pages: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT request_payload->>'offset') FROM api_calls WHERE endpoint = 'OR11' AND request_payload ? 'order_state_codes'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(import_pages, 3);
}

#[sqlx::test]
async fn parallel_import_pages_store_every_page(pool: PgPool) {
    let app = spawn_app(
        pool,
        |sim| sim.orders = 250,
        &[("ORDER_ACCEPTANCE__IMPORT__PARALLEL_PAGES", "3")],
    )
    .await;
    let summary = run_once(&app).await;
    assert_eq!(
        (summary.imported, summary.claimed, summary.accepted),
        (250, 250, 250)
    );
    let import_pages: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT request_payload->>'offset') FROM api_calls WHERE endpoint = 'OR11' AND request_payload ? 'order_state_codes'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(import_pages, 3);
}

#[sqlx::test]
async fn validations_first_tick_reads_every_order_accepted_so_far(pool: PgPool) {
    // Every order is accepted well within the first interval, and reads SHIPPING right after
    // its 204: OR11 calls are the 3 import pages and one tick of ceil(250 / 100) reads.
    let app = spawn_app(
        pool,
        |sim| {
            sim.orders = 250;
            sim.step = Duration::ZERO;
        },
        &[
            ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "5s"),
            ("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "100"),
            ("ORDER_ACCEPTANCE__ACCEPTANCE__CONCURRENCY", "16"),
        ],
    )
    .await;
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 250);
    assert_eq!(app.sim.stats().requests.get("OR11"), Some(&6));
    let mut per_call = or11_ids_per_call(&app).await;
    per_call.sort_unstable();
    assert_eq!(per_call, [50, 100, 100]);
}

#[sqlx::test]
async fn a_run_whose_import_failed_is_degraded(pool: PgPool) {
    // Every OR11 answer is a proxy's HTML page: no page of the import can be read.
    let app = spawn_app(pool, |sim| sim.faults.html_rate = 1.0, &[]).await;
    app.sim
        .add_orders(vec![waiting("D-1", Behaviour::default())]);
    let summary = run_once(&app).await;
    assert_eq!(summary.result, RunResult::Degraded);
    assert_eq!((summary.imported, summary.claimed), (0, 0));
    let reason = summary.import_failed.clone().unwrap_or_default();
    assert!(reason.contains("not the JSON expected"), "{reason}");
    let table = acceptance::summary_table("run", &summary, Width::Wide).to_string();
    assert!(table.contains("degraded"), "{table}");
    assert!(table.contains("the import failed"), "{table}");

    let (result, error): (String, Option<String>) =
        sqlx::query_as("SELECT result, error FROM acceptance_runs")
            .fetch_one(&app.pool)
            .await
            .expect("run row");
    assert_eq!(result, "degraded");
    let error = error.unwrap_or_default();
    assert!(error.starts_with("the import failed"), "{error}");
}

#[sqlx::test]
async fn a_second_run_finds_nothing_to_do(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 3, &[]).await;
    run_once(&app).await;
    let again = run_once(&app).await;
    assert_eq!((again.imported, again.claimed), (0, 0));
    assert_eq!(app.sim.stats().or21_accepted, 3);
}

#[sqlx::test]
async fn lag_after_the_204_is_read_again_until_it_clears(pool: PgPool) {
    // Each state change takes 1 s while validation reads every 200 ms: the first read sees the
    // lag and a later one WAITING_DEBIT, with room for a loaded host's stalls.
    let app = spawn_app(
        pool,
        |sim| sim.step = Duration::from_secs(1),
        &[
            ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "200ms"),
            ("ORDER_ACCEPTANCE__VALIDATION__MAX_ATTEMPTS", "20"),
        ],
    )
    .await;
    app.sim
        .add_orders(vec![waiting("LAG-1", Behaviour::default())]);
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    let (status, note) = app.current_status("LAG-1").await;
    assert_eq!(status, "accepted");
    assert_eq!(note.as_deref(), Some("Validated as 'WAITING_DEBIT'."));
    let reads: i64 = sqlx::query_scalar("SELECT count(*) FROM api_calls WHERE endpoint = 'OR11' AND request_payload::text LIKE '%LAG-1%'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert!(reads >= 2, "the first read saw the lag, reads = {reads}");
}

#[sqlx::test]
async fn an_order_cancelled_after_acceptance_is_recorded_cancelled(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let behaviour = Behaviour {
        cancel_after_accept: true,
        ..Behaviour::default()
    };
    app.sim.add_orders(vec![waiting("C-1", behaviour)]);
    let summary = run_once(&app).await;
    assert_eq!(summary.cancelled, 1);
    let (status, note) = app.current_status("C-1").await;
    assert_eq!(status, "cancelled");
    assert!(note.unwrap_or_default().contains("CANCELED"));
    assert!(app.open_failures("C-1").await.is_empty());
}

#[sqlx::test]
async fn preflight_records_decided_orders_without_sending_or21(pool: PgPool) {
    let app = spawn_without_import(pool).await;
    app.sim.add_orders(vec![
        in_state("REF-1", "REFUSED", Some("OUT_OF_STOCK")),
        in_state("CAN-1", "CANCELED", None),
        in_state("SHIP-1", "SHIPPING", None),
        in_state("DEB-1", "WAITING_DEBIT", None),
    ]);
    for id in ["REF-1", "CAN-1", "SHIP-1", "DEB-1"] {
        app.insert_pending(id, json!({"order_id": id})).await;
    }
    let summary = run_once(&app).await;
    assert_eq!(
        (
            summary.accepted,
            summary.refused,
            summary.cancelled,
            summary.failed
        ),
        (2, 1, 1, 0)
    );
    assert_eq!(app.sim.stats().requests.get("OR21"), None, "no OR21 at all");

    // Issue 9: REFUSED is recorded as `refused`, its reason code in its own column.
    let (status, note) = app.current_status("REF-1").await;
    assert_eq!(status, "refused");
    assert_eq!(
        note.as_deref(),
        Some("Order is REFUSED at the marketplace (reason: OUT_OF_STOCK).")
    );
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT reason_code FROM order_status_history WHERE order_id = 'REF-1' AND status = 'refused'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("reason code");
    assert_eq!(reason.as_deref(), Some("OUT_OF_STOCK"));
    assert_eq!(app.current_status("CAN-1").await.0, "cancelled");
    let (status, note) = app.current_status("SHIP-1").await;
    assert_eq!(status, "accepted");
    assert!(
        note.unwrap_or_default()
            .starts_with("Already SHIPPING at the marketplace")
    );
    // Preflight refreshed the stored JSON from OR11.
    let state: String = sqlx::query_scalar(
        "SELECT raw_order_data->>'order_state' FROM orders WHERE order_id = 'DEB-1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("raw");
    assert_eq!(state, "WAITING_DEBIT");
}

#[sqlx::test]
async fn a_500_is_resolved_by_reading_before_sending_again(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    app.sim
        .add_orders(vec![waiting("E-1", or21_script(vec![Scripted::Status500]))]);
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    assert_eq!(app.current_status("E-1").await.0, "accepted");
    assert_eq!(
        app.or21_calls("E-1"),
        2,
        "the 500 did not apply; the re-read showed it waiting"
    );
    assert_eq!(app.sim.stats().or21_not_waiting, 0);
    assert!(app.open_failures("E-1").await.is_empty());
}

#[sqlx::test]
async fn two_5xx_then_success_is_accepted_in_the_same_run(pool: PgPool) {
    let app = spawn_app(
        pool,
        |_| {},
        &[("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "3")],
    )
    .await;
    let script = vec![Scripted::Status500, Scripted::Status502, Scripted::Ok];
    app.sim
        .add_orders(vec![waiting("E-2", or21_script(script))]);
    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.failed), (1, 0));
    assert_eq!(app.current_status("E-2").await.0, "accepted");
    assert_eq!(app.or21_calls("E-2"), 3, "re-read and sent again twice");
    // Each re-send follows a read of the order by id that showed it still waiting.
    let sequence: Vec<String> = sqlx::query_scalar(
        "SELECT endpoint FROM api_calls WHERE related_id = 'E-2' OR request_payload::text LIKE '%E-2%' ORDER BY call_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("api calls");
    let sends: Vec<usize> = sequence
        .iter()
        .enumerate()
        .filter(|(_, endpoint)| *endpoint == "OR21")
        .map(|(at, _)| at)
        .collect();
    for pair in sends.windows(2) {
        assert!(
            sequence[pair[0]..pair[1]].iter().any(|e| e == "OR11"),
            "OR21 sent again without a read in between: {sequence:?}"
        );
    }
    let stats = app.sim.stats();
    assert_eq!(stats.or21_accepted, 1, "one 204");
    assert_eq!(stats.or21_not_waiting, 0);
    assert!(app.open_failures("E-2").await.is_empty());
}

#[sqlx::test]
async fn unclear_answers_of_several_orders_are_re_read_in_one_or11_call(pool: PgPool) {
    // The re-read waits one back-off (300 ms and up) after the first unclear answer; the other
    // three come within milliseconds and join it. Validation then reads all four at one tick.
    let app = spawn_app(
        pool,
        |sim| sim.step = Duration::ZERO,
        &[
            (
                "ORDER_ACCEPTANCE__MARKETPLACE__RETRY_INITIAL_DELAY",
                "300ms",
            ),
            ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "1s"),
        ],
    )
    .await;
    let ids = ["U-1", "U-2", "U-3", "U-4"];
    app.sim.add_orders(
        ids.iter()
            .map(|id| waiting(id, or21_script(vec![Scripted::Status500])))
            .collect(),
    );
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 4);
    for id in ids {
        assert_eq!(app.or21_calls(id), 2, "{id}: one 500, one 204");
    }
    assert_eq!(
        app.sim.stats().requests.get("OR11"),
        Some(&3),
        "one import page, one re-read, one validation read"
    );
    let by_ids = or11_ids_per_call(&app).await;
    assert_eq!(
        by_ids,
        [4, 4],
        "the re-read and the validation read each had all four"
    );
}

#[sqlx::test]
async fn a_400_without_a_code_is_re_read_and_found_accepted(pool: PgPool) {
    let (app, server) = spawn_with_mock(pool).await;
    mount_or11_states(&server, &["WAITING_ACCEPTANCE", "WAITING_DEBIT"]).await;
    mount_or21_bad_request(&server).await;
    app.insert_pending("B-1", json!({"order_id": "B-1"})).await;

    let summary = mock_run(&app, &server).await;
    assert_eq!((summary.accepted, summary.failed), (1, 0));
    let (status, note) = app.current_status("B-1").await;
    assert_eq!(status, "accepted");
    let note = note.unwrap_or_default();
    assert!(note.starts_with("Confirmed as 'WAITING_DEBIT'"), "{note}");
    assert_eq!(requests_to(&server, "PUT").await, 1, "no second OR21");
    assert_eq!(
        requests_to(&server, "GET").await,
        2,
        "preflight, one re-read"
    );
}

#[sqlx::test]
async fn a_400_without_a_code_still_waiting_after_the_re_read_is_for_a_person(pool: PgPool) {
    let (app, server) = spawn_with_mock(pool).await;
    mount_or11_states(&server, &["WAITING_ACCEPTANCE"]).await;
    mount_or21_bad_request(&server).await;
    app.insert_pending("B-1", json!({"order_id": "B-1"})).await;

    let summary = mock_run(&app, &server).await;
    assert_eq!((summary.failed, summary.retry_scheduled), (1, 0));
    assert_eq!(app.current_status("B-1").await.0, "acceptance_failed");
    let failures = app.open_failures("B-1").await;
    assert_eq!(failures.len(), 1);
    assert!(!failures[0].1, "not retryable: a person decides");
    assert!(
        failures[0]
            .0
            .contains("The marketplace refused to accept order B-1")
            && failures[0]
                .0
                .contains("A re-read shows it still WAITING_ACCEPTANCE"),
        "{failures:?}"
    );
    assert_eq!(requests_to(&server, "PUT").await, 1, "no second OR21");
    assert_eq!(
        requests_to(&server, "GET").await,
        2,
        "preflight, one re-read"
    );
}

#[sqlx::test]
async fn a_429_waits_for_retry_after_then_succeeds(pool: PgPool) {
    let app = spawn_app(
        pool,
        |sim| sim.faults.retry_after = Duration::from_secs(1),
        &[],
    )
    .await;
    app.sim
        .add_orders(vec![waiting("T-1", or21_script(vec![Scripted::Throttle]))]);
    let started = std::time::Instant::now();
    let summary = run_once(&app).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(summary.accepted, 1);
    let attempts: Vec<(Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT status_code, attempt FROM api_calls WHERE endpoint = 'OR21' ORDER BY call_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("calls");
    assert_eq!(attempts, [(Some(429), Some(1)), (Some(204), Some(2))]);
}

#[sqlx::test]
async fn a_timeout_after_the_acceptance_applied_sends_no_second_or21(pool: PgPool) {
    let app = spawn_app(
        pool,
        |sim| sim.faults.slow_delay = Duration::from_secs(5),
        &[],
    )
    .await;
    app.sim.add_orders(vec![waiting(
        "SLOW-1",
        or21_script(vec![Scripted::SlowApplied]),
    )]);
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    let (status, note) = app.current_status("SLOW-1").await;
    assert_eq!(status, "accepted");
    let note = note.unwrap_or_default();
    assert!(
        note.starts_with("Confirmed as '"),
        "the re-read settled it: {note}"
    );
    assert_eq!(app.or21_calls("SLOW-1"), 1);
    assert_eq!(app.sim.stats().or21_not_waiting, 0);
}

#[sqlx::test]
async fn an_order_unknown_to_the_marketplace_is_a_failure_for_a_person(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    app.insert_pending("GHOST-1", json!({"order_id": "GHOST-1"}))
        .await;
    let summary = run_once(&app).await;
    assert_eq!((summary.failed, summary.retry_scheduled), (1, 0));
    assert_eq!(app.current_status("GHOST-1").await.0, "acceptance_failed");
    let failures = app.open_failures("GHOST-1").await;
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].0.contains("was not found at the marketplace"),
        "{failures:?}"
    );
    assert!(!failures[0].1, "not retryable");
}

#[sqlx::test]
async fn stored_orders_without_lines_take_their_lines_from_or11(pool: PgPool) {
    let app = spawn_without_import(pool).await;
    app.sim
        .add_orders(vec![waiting("NOLINES-1", Behaviour::default())]);
    app.insert_pending("NOLINES-1", json!({"order_id": "NOLINES-1"}))
        .await;
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    assert_eq!(app.sim.stats().or21_accepted, 1);
    let sent: serde_json::Value =
        sqlx::query_scalar("SELECT request_payload FROM api_calls WHERE endpoint = 'OR21'")
            .fetch_one(&app.pool)
            .await
            .expect("OR21 payload");
    assert_eq!(sent["order_lines"].as_array().map(Vec::len), Some(2));
}

#[sqlx::test]
async fn an_unknown_state_is_retried_later_not_accepted(pool: PgPool) {
    let app = spawn_without_import(pool).await;
    app.sim.add_orders(vec![in_state("ODD-1", "PARTY", None)]);
    app.insert_pending("ODD-1", json!({"order_id": "ODD-1"}))
        .await;
    let summary = run_once(&app).await;
    assert_eq!((summary.failed, summary.retry_scheduled), (1, 1));
    assert_eq!(app.current_status("ODD-1").await.0, "acceptance_failed");
    let failures = app.open_failures("ODD-1").await;
    assert!(
        failures[0].0.contains("is PARTY at the marketplace"),
        "{failures:?}"
    );
    assert!(failures[0].1, "retryable");
    assert_eq!(app.or21_calls("ODD-1"), 0);
}

#[sqlx::test]
async fn a_never_moving_order_fails_after_the_validation_attempts(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let behaviour = Behaviour {
        never_moves: true,
        ..Behaviour::default()
    };
    app.sim.add_orders(vec![waiting("STUCK-1", behaviour)]);
    let summary = run_once(&app).await;
    assert_eq!((summary.failed, summary.retry_scheduled), (1, 0));
    assert_eq!(app.current_status("STUCK-1").await.0, "acceptance_failed");
    let (details, payload): (String, serde_json::Value) = sqlx::query_as(
        "SELECT details, payload FROM process_failures WHERE related_id = 'STUCK-1' AND resolved_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("open failure");
    assert!(
        details.contains("still reads WAITING_ACCEPTANCE after 4 reads"),
        "{details}"
    );
    assert_eq!(payload["last_state"], "WAITING_ACCEPTANCE");
    assert_eq!(payload["order"]["order_id"], "STUCK-1");
    assert_eq!(app.or21_calls("STUCK-1"), 1);
}

#[sqlx::test]
async fn a_refused_key_stops_the_run_with_an_error(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 2, &[]).await;
    let wrong = app.settings_with(&[("MARKETPLACE_API_KEY", "wrong-key")]);
    let err = acceptance::run(&app.worker_with(&wrong), &CancellationToken::new())
        .await
        .expect_err("unauthorized");
    assert!(matches!(err, RunError::Unauthorized(_)), "{err}");
    assert!(err.to_string().contains("marketplace.api_key"), "{err}");
    let (result, error): (String, Option<String>) =
        sqlx::query_as("SELECT result, error FROM acceptance_runs")
            .fetch_one(&app.pool)
            .await
            .expect("run row");
    assert_eq!(result, "failed");
    assert!(!error.unwrap_or_default().contains("wrong-key"));
}

#[sqlx::test]
async fn two_runs_at_once_send_one_or21_per_order(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 60, &[]).await;
    let (first, second) = (app.worker(), app.worker());
    let stop = CancellationToken::new();
    let (a, b) = tokio::join!(
        acceptance::run(&first, &stop),
        acceptance::run(&second, &stop)
    );
    let (a, b) = (a.expect("first run"), b.expect("second run"));
    assert_eq!(a.claimed + b.claimed, 60);
    assert_eq!(a.accepted + b.accepted, 60);
    let stats = app.sim.stats();
    assert_eq!(stats.or21_accepted, 60);
    assert!(
        stats.or21_calls_per_order.values().all(|&n| n == 1),
        "{stats:?}"
    );
    assert_eq!(stats.or21_not_waiting, 0);
    let accepting_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_status_history WHERE status = 'accepting'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(accepting_rows, 60, "each order claimed once");
}

#[sqlx::test]
async fn a_run_killed_during_validation_is_finished_by_the_next_without_a_second_or21(
    pool: PgPool,
) {
    let app = spawn_app(pool, |sim| sim.orders = 8, &[]).await;
    crash_after_accepting(&app, 8).await;

    let stuck: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_current_status WHERE status = 'accepting'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(stuck, 8, "the dead worker's hold keeps the orders");
    assert_eq!(
        run_once(&app).await.claimed,
        0,
        "nobody takes orders whose run's heartbeat is within its lease"
    );

    app.let_time_pass().await;
    let summary = run_once(&app).await;
    assert_eq!((summary.claimed, summary.accepted), (8, 8));
    let stats = app.sim.stats();
    assert!(
        stats.or21_calls_per_order.values().all(|&n| n == 1),
        "{stats:?}"
    );
    let notes: Vec<String> = sqlx::query_scalar(
        "SELECT h.notes FROM order_current_status c JOIN order_status_history h USING (history_id)",
    )
    .fetch_all(&app.pool)
    .await
    .expect("notes");
    assert!(notes.iter().all(|n| n.starts_with("Already ")), "{notes:?}");
}

#[sqlx::test]
async fn after_a_crash_a_204_on_record_is_confirmed_not_sent_again(pool: PgPool) {
    // The order never leaves WAITING_ACCEPTANCE after its 204, so the next claim cannot tell
    // from the marketplace that it was accepted; our own api_calls can.
    let app = spawn_app(pool, |_| {}, &[]).await;
    let behaviour = Behaviour {
        never_moves: true,
        ..Behaviour::default()
    };
    app.sim.add_orders(vec![waiting("STUCK-2", behaviour)]);
    crash_after_accepting(&app, 1).await;

    app.let_time_pass().await;
    let summary = run_once(&app).await;
    assert_eq!((summary.claimed, summary.failed), (1, 1));
    assert_eq!(app.or21_calls("STUCK-2"), 1, "no second OR21");
    assert_eq!(app.sim.stats().or21_not_waiting, 0);
    let failures = app.open_failures("STUCK-2").await;
    assert!(
        failures[0].0.contains("still reads WAITING_ACCEPTANCE"),
        "{failures:?}"
    );
}

#[sqlx::test]
async fn a_retryable_failure_is_retried_by_a_later_run_and_resolved(pool: PgPool) {
    // Two 503s use up the client's two attempts; the next run's OR21 goes through.
    let app = spawn_app(pool, |_| {}, &[]).await;
    let script = vec![Scripted::Status503, Scripted::Status503];
    app.sim
        .add_orders(vec![waiting("R-1", or21_script(script))]);
    let first = run_once(&app).await;
    assert_eq!((first.failed, first.retry_scheduled), (1, 1));
    let failures = app.open_failures("R-1").await;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].1, "retryable");
    assert!(
        failures[0].0.contains("Attempt 1 of 3; next attempt in 1m"),
        "{failures:?}"
    );

    assert_eq!(
        run_once(&app).await.claimed,
        0,
        "not due before its retry time"
    );
    app.let_time_pass().await;
    let second = run_once(&app).await;
    assert_eq!(second.accepted, 1);
    assert_eq!(app.current_status("R-1").await.0, "accepted");
    assert!(app.open_failures("R-1").await.is_empty());
    let note: String =
        sqlx::query_scalar("SELECT resolution_note FROM process_failures WHERE related_id = 'R-1'")
            .fetch_one(&app.pool)
            .await
            .expect("resolved");
    assert_eq!(
        note,
        "Resolved automatically: attempt 2 recorded the order as accepted."
    );
}

#[sqlx::test]
async fn after_the_last_attempt_the_failure_stays_for_a_person(pool: PgPool) {
    let app = spawn_app(
        pool,
        |_| {},
        &[("ORDER_ACCEPTANCE__ACCEPTANCE__MAX_ATTEMPTS", "2")],
    )
    .await;
    let script = vec![Scripted::Status503; 4];
    app.sim
        .add_orders(vec![waiting("R-2", or21_script(script))]);
    run_once(&app).await;
    app.let_time_pass().await;
    let last = run_once(&app).await;
    assert_eq!((last.failed, last.retry_scheduled), (1, 0));
    let failures = app.open_failures("R-2").await;
    assert_eq!(
        failures.len(),
        1,
        "the first attempt's failure was superseded"
    );
    assert!(!failures[0].1);
    assert!(
        failures[0].0.contains("That was the last of 2 attempts"),
        "{failures:?}"
    );
    app.let_time_pass().await;
    assert_eq!(run_once(&app).await.claimed, 0, "no further attempts");
}

#[sqlx::test]
async fn orders_in_other_statuses_are_never_touched(pool: PgPool) {
    let app = spawn_without_import(pool).await;
    app.sim
        .add_orders(vec![waiting("SHIPPED-1", Behaviour::default())]);
    app.insert_pending("SHIPPED-1", json!({"order_id": "SHIPPED-1"}))
        .await;
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status) VALUES ('SHIPPED-1', 'shipped')",
    )
    .execute(&app.pool)
    .await
    .expect("shipped");
    let summary = run_once(&app).await;
    assert_eq!(summary.claimed, 0);
    assert_eq!(
        app.statuses("SHIPPED-1").await,
        ["pending_acceptance", "shipped"]
    );
    assert!(app.sim.stats().requests.is_empty(), "no call about it");
}

#[sqlx::test]
async fn a_stop_signal_ends_claiming_and_drains_what_was_claimed(pool: PgPool) {
    // 20 ms per call and batches of 5: the signal comes while most orders are still unclaimed.
    let configure = |sim: &mut SimConfig| {
        sim.orders = 30;
        sim.faults.latency = Some((Duration::from_millis(20), Duration::from_millis(20)));
    };
    let app = spawn_app(
        pool,
        configure,
        &[("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "5")],
    )
    .await;
    let stop = CancellationToken::new();
    let ctx = app.worker();
    let run = acceptance::run(&ctx, &stop);
    tokio::pin!(run);
    // Signal as soon as the first order is accepted: the batch in hand finishes, no more are claimed.
    let summary = tokio::select! {
        summary = &mut run => summary,
        () = wait_until(|| app.sim.stats().or21_accepted > 0) => {
            stop.cancel();
            run.await
        }
    }
    .expect("drained");
    assert_eq!(summary.result, RunResult::Completed);
    assert!(summary.claimed < 30, "claiming stopped: {summary:?}");
    assert_eq!(
        summary.accepted, summary.claimed,
        "every claimed order recorded"
    );
    let accepting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_current_status WHERE status = 'accepting'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(accepting, 0);
}

#[sqlx::test]
async fn when_the_grace_period_ends_held_orders_come_back_one_fence_margin_later(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 3, &[]).await;
    let settings = app.settings_with(&[
        ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "60s"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "1h"),
        ("ORDER_ACCEPTANCE__SHUTDOWN__GRACE", "50ms"),
    ]);
    let ctx = app.worker_with(&settings);
    let stop = CancellationToken::new();
    let run = acceptance::run(&ctx, &stop);
    tokio::pin!(run);
    let summary = tokio::select! {
        summary = &mut run => summary,
        () = wait_until(|| app.sim.stats().or21_accepted == 3) => {
            stop.cancel();
            run.await
        }
    }
    .expect("interrupted cleanly");
    assert_eq!(summary.result, RunResult::Interrupted);
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM order_current_status WHERE status = 'accepting' AND claimable_at IS NULL AND run_id IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        held, 3,
        "an OR21 cut short may still land: the orders stay held"
    );
    // Held for the fence margin (timeout 400ms + a tenth of the 1h lease), not the lease.
    let (result, held_for): (String, f64) = sqlx::query_as(
        "SELECT result, extract(epoch FROM held_until - finished_at)::float8 FROM acceptance_runs",
    )
    .fetch_one(&app.pool)
    .await
    .expect("run");
    assert_eq!(result, "interrupted");
    assert!((360.0..=360.5).contains(&held_for), "{held_for}");
}

/// An app whose orders come from an upstream system, not from the import.
async fn spawn_without_import(pool: PgPool) -> TestApp {
    spawn_app(
        pool,
        |_| {},
        &[("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false")],
    )
    .await
}

/// A worker that dies after its acceptances and before their outcomes: its validation would
/// wait a minute, and its run is dropped once `api_calls` holds `accepted` OR21 204s. (A kill
/// between a 204 and its `api_calls` row is the one window our records cannot cover.)
async fn crash_after_accepting(app: &TestApp, accepted: i64) {
    let slow = app.settings_with(&[
        ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "60s"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "1h"),
    ]);
    let worker = app.worker_with(&slow);
    let run =
        tokio::spawn(async move { acceptance::run(&worker, &CancellationToken::new()).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_calls WHERE endpoint = 'OR21' AND status_code = 204",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        if recorded >= accepted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{recorded} of {accepted} 204s in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.abort();
    let _ = run.await;
}

/// Waits for a condition the simulator reports, checking every few milliseconds, for at most
/// ten seconds.
async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Order ids per OR11 call by ids (re-reads, preflight and validation), in call order.
async fn or11_ids_per_call(app: &TestApp) -> Vec<usize> {
    let lists: Vec<String> = sqlx::query_scalar(
        "SELECT request_payload->>'order_ids' FROM api_calls WHERE endpoint = 'OR11' AND request_payload ? 'order_ids' ORDER BY call_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("OR11 calls");
    lists.iter().map(|ids| ids.split(',').count()).collect()
}

/// An app whose marketplace is `wiremock`, for answers the simulator cannot give; orders come
/// from `insert_pending`.
async fn spawn_with_mock(pool: PgPool) -> (TestApp, MockServer) {
    let app = spawn_without_import(pool).await;
    let server = MockServer::start().await;
    (app, server)
}

async fn mock_run(app: &TestApp, server: &MockServer) -> acceptance::RunSummary {
    let settings = app.settings_with(&[
        ("MARKETPLACE_URL", server.uri().as_str()),
        ("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false"),
    ]);
    acceptance::run(&app.worker_with(&settings), &CancellationToken::new())
        .await
        .expect("run completes")
}

/// OR11 answers order B-1 in each of `states` in turn, the last one from then on.
async fn mount_or11_states(server: &MockServer, states: &[&str]) {
    for (i, state) in states.iter().enumerate() {
        let body = json!({"orders": [mock_order("B-1", state)], "total_count": 1});
        let mock = Mock::given(method("GET"))
            .and(path("/api/orders"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .with_priority(i as u8 + 1);
        let mock = match i + 1 < states.len() {
            true => mock.up_to_n_times(1),
            false => mock,
        };
        mock.mount(server).await;
    }
}

/// OR21 answers 400 with a message and no code, as some gateways do.
async fn mount_or21_bad_request(server: &MockServer) {
    Mock::given(method("PUT"))
        .and(path("/api/orders/B-1/accept"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "Bad Request", "status": 400})),
        )
        .mount(server)
        .await;
}

fn mock_order(id: &str, state: &str) -> Value {
    json!({
        "order_id": id,
        "order_state": state,
        "created_date": "2026-01-05T10:00:00Z",
        "order_lines": [
            {"order_line_id": format!("{id}-1"), "order_line_state": state, "quantity": 1}
        ]
    })
}

async fn requests_to(server: &MockServer, http_method: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == http_method)
        .count()
}
