//! The operator commands against a real PostgreSQL: each test gets a fresh database with the
//! migrations applied (`#[sqlx::test]`). Command functions take `now`, so ages and thresholds are
//! checked against a fixed reference time. The last tests run the built binary.

use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use order_acceptance::db::failures::FailureFilter;
use order_acceptance::inbox::{self, InboxError, render};
use order_acceptance::terminal::Width;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The acceptance window of the tests: Best Buy's 24 hours.
const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const BIN: &str = env!("CARGO_BIN_EXE_order-acceptance");
const TWENTY_HOURS: Duration = Duration::from_secs(20 * 3600);

/// The reference time of every test that passes `now`.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn hours_ago(hours: i64) -> DateTime<Utc> {
    now() - TimeDelta::hours(hours)
}

fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    now() - TimeDelta::minutes(minutes)
}

// Seeding -----------------------------------------------------------------------------------

async fn insert_order(pool: &PgPool, order_id: &str, placed_at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data, placed_at, created_at)
         VALUES ($1, jsonb_build_object('order_id', $1::text), $2, $2)",
    )
    .bind(order_id)
    .bind(placed_at)
    .execute(pool)
    .await?;
    Ok(())
}

async fn add_status(
    pool: &PgPool,
    order_id: &str,
    status: &str,
    at: DateTime<Utc>,
    attempt: i32,
    next_attempt_at: Option<DateTime<Utc>>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"INSERT INTO order_status_history (order_id, status, notes, "timestamp", attempt, next_attempt_at)
           VALUES ($1, $2, $2 || ' (seeded)', $3, $4, $5)
           RETURNING history_id"#,
    )
    .bind(order_id)
    .bind(status)
    .bind(at)
    .bind(attempt)
    .bind(next_attempt_at)
    .fetch_one(pool)
    .await
}

/// An order placed `placed_hours_ago`, pending since then, then in `status` if not pending.
async fn order_in(
    pool: &PgPool,
    order_id: &str,
    status: &str,
    placed_hours_ago: i64,
) -> sqlx::Result<()> {
    insert_order(pool, order_id, hours_ago(placed_hours_ago)).await?;
    add_status(
        pool,
        order_id,
        "pending_acceptance",
        hours_ago(placed_hours_ago),
        0,
        None,
    )
    .await?;
    if status != "pending_acceptance" {
        add_status(pool, order_id, status, minutes_ago(30), 1, None).await?;
    }
    Ok(())
}

async fn add_failure(
    pool: &PgPool,
    order_id: Option<&str>,
    process: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"INSERT INTO process_failures (related_id, process_name, details, payload, "timestamp")
           VALUES ($1, $2, 'OR21 answered 400 for order ' || coalesce($1, '?') || E'\nsecond line',
                   jsonb_build_object('order_id', $1::text, 'lines', jsonb_build_array(1, 2)), $3)
           RETURNING failure_id"#,
    )
    .bind(order_id)
    .bind(process)
    .bind(at)
    .fetch_one(pool)
    .await
}

async fn add_api_call(
    pool: &PgPool,
    order_id: &str,
    endpoint: &str,
    status_code: i32,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"INSERT INTO api_calls (service, endpoint, related_id, status_code, is_success, duration_ms,
                                  method, path, attempt, "timestamp")
           VALUES ('BestBuy', $2, $1, $3, $3 < 300, 120, 'PUT', '/api/orders/' || $1 || '/accept', 1, $4)"#,
    )
    .bind(order_id)
    .bind(endpoint)
    .bind(status_code)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

async fn history_count(pool: &PgPool, order_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM order_status_history WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
}

async fn is_open(pool: &PgPool, failure_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT resolved_at IS NULL FROM process_failures WHERE failure_id = $1")
        .bind(failure_id)
        .fetch_one(pool)
        .await
}

fn open_only(limit: i64) -> FailureFilter {
    FailureFilter {
        include_resolved: false,
        process_name: None,
        shop: None,
        since: None,
        limit,
    }
}

/// Three failures: #a 3 h old (resolved), #b 2 h old on order B, #c 10 min old of another
/// process with no order.
async fn three_failures(pool: &PgPool) -> anyhow::Result<(i64, i64, i64)> {
    order_in(pool, "A", "accepted", 5).await?;
    order_in(pool, "B", "acceptance_failed", 5).await?;
    let a = add_failure(pool, Some("A"), "OrderAcceptance", hours_ago(3)).await?;
    let b = add_failure(pool, Some("B"), "OrderAcceptance", hours_ago(2)).await?;
    let c = add_failure(pool, None, "Invoicing", minutes_ago(10)).await?;
    inbox::resolve_failure(pool, a, "accepted by hand in the portal", "bob").await?;
    Ok((a, b, c))
}

// failures list -----------------------------------------------------------------------------

#[sqlx::test]
async fn list_shows_open_failures_newest_first_with_age(pool: PgPool) -> anyhow::Result<()> {
    let (_, b, c) = three_failures(&pool).await?;
    let list = inbox::list_failures(&pool, &open_only(50), now()).await?;
    let ids: Vec<i64> = list.failures.iter().map(|f| f.failure.failure_id).collect();
    assert_eq!(ids, vec![c, b]);
    assert_eq!(list.failures[0].age_seconds, 600);
    assert_eq!(list.failures[1].age_seconds, 7200);
    assert_eq!(
        list.failures[1].failure.order_status.as_deref(),
        Some("acceptance_failed")
    );
    assert_eq!(list.failures[0].failure.order_status, None);
    Ok(())
}

#[sqlx::test]
async fn list_filters_by_resolution_process_time_and_limit(pool: PgPool) -> anyhow::Result<()> {
    let (a, b, c) = three_failures(&pool).await?;
    let ids = |list: inbox::FailureList| -> Vec<i64> {
        list.failures.iter().map(|f| f.failure.failure_id).collect()
    };

    let all = FailureFilter {
        include_resolved: true,
        ..open_only(50)
    };
    assert_eq!(
        ids(inbox::list_failures(&pool, &all, now()).await?),
        vec![c, b, a]
    );

    let one_process = FailureFilter {
        process_name: Some("OrderAcceptance".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(inbox::list_failures(&pool, &one_process, now()).await?),
        vec![b, a]
    );

    let since = inbox::time_before(now(), Duration::from_secs(150 * 60), "--since")?;
    let recent = FailureFilter {
        since: Some(since),
        ..all.clone()
    };
    assert_eq!(
        ids(inbox::list_failures(&pool, &recent, now()).await?),
        vec![c, b]
    );

    let limited = FailureFilter { limit: 1, ..all };
    assert_eq!(
        ids(inbox::list_failures(&pool, &limited, now()).await?),
        vec![c]
    );
    Ok(())
}

#[sqlx::test]
async fn list_renders_a_table_and_json(pool: PgPool) -> anyhow::Result<()> {
    let (a, b, _) = three_failures(&pool).await?;
    let all = FailureFilter {
        include_resolved: true,
        ..open_only(50)
    };
    let list = inbox::list_failures(&pool, &all, now()).await?;

    let table = render::failure_list(&list, Width::Fit);
    assert!(table.contains("STATE"), "{table}");
    assert!(table.contains("2h"), "{table}");
    assert!(table.contains("OR21 answered 400 for order B"), "{table}");
    assert!(
        !table.contains("second line"),
        "details are one line: {table}"
    );

    let parsed: Value = serde_json::from_str(&render::json(&list)?)?;
    assert_eq!(parsed["failures"][1]["failure_id"], json!(b));
    assert_eq!(parsed["failures"][1]["age_seconds"], json!(7200));
    assert_eq!(parsed["failures"][2]["failure_id"], json!(a));
    assert!(parsed["failures"][2]["resolved_at"].is_string());
    Ok(())
}

#[test]
fn ages_read_in_the_two_largest_units() {
    assert_eq!(render::humanise_age(-5), "0s");
    assert_eq!(render::humanise_age(0), "0s");
    assert_eq!(render::humanise_age(45), "45s");
    assert_eq!(render::humanise_age(200), "3m 20s");
    assert_eq!(render::humanise_age(7200), "2h");
    assert_eq!(render::humanise_age(7500), "2h 5m");
    assert_eq!(render::humanise_age(100_000), "1d 3h");
}

#[test]
fn the_operator_is_the_name_given_else_the_login_else_unknown() {
    let name = |given: Option<&str>, login: Option<&str>| {
        inbox::operator_name(given.map(String::from), login.map(String::from))
    };
    assert_eq!(name(Some("alice"), Some("root")), "alice");
    assert_eq!(name(None, Some("root")), "root");
    assert_eq!(name(None, Some("  ")), "unknown");
    assert_eq!(name(None, None), "unknown");
}

// failures show -----------------------------------------------------------------------------

#[sqlx::test]
async fn show_returns_details_payload_and_the_orders_status(pool: PgPool) -> anyhow::Result<()> {
    let (a, b, _) = three_failures(&pool).await?;
    let report = inbox::show_failure(&pool, b, now()).await?;
    assert_eq!(report.failure.related_id.as_deref(), Some("B"));
    assert_eq!(
        report.failure.order_status.as_deref(),
        Some("acceptance_failed")
    );
    assert_eq!(
        report.failure.payload,
        Some(json!({"order_id": "B", "lines": [1, 2]}))
    );
    assert_eq!(report.age_seconds, 7200);
    assert!(report.failure.resolved_at.is_none());

    let text = render::failure(&report, Width::Wide);
    assert!(text.contains("second line"), "details in full: {text}");
    assert!(
        text.contains("\"lines\": ["),
        "payload pretty-printed: {text}"
    );
    assert!(text.contains("acceptance_failed"), "{text}");

    let resolved = inbox::show_failure(&pool, a, now()).await?;
    assert_eq!(resolved.failure.resolved_by.as_deref(), Some("bob"));
    assert!(render::failure(&resolved, Width::Wide).contains("accepted by hand in the portal"));
    Ok(())
}

#[sqlx::test]
async fn show_of_an_unknown_id_says_so(pool: PgPool) -> anyhow::Result<()> {
    let err = inbox::show_failure(&pool, 4242, now()).await.err();
    assert!(
        matches!(err, Some(InboxError::FailureNotFound(4242))),
        "{err:?}"
    );
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("#4242") && message.contains("failures list --all"),
        "{message}"
    );
    Ok(())
}

// failures resolve --------------------------------------------------------------------------

#[sqlx::test]
async fn resolve_records_when_who_and_why(pool: PgPool) -> anyhow::Result<()> {
    let (_, b, _) = three_failures(&pool).await?;
    let resolution = inbox::resolve_failure(&pool, b, "  refused in the portal  ", "alice").await?;
    assert_eq!(resolution.failure_id, b);
    assert_eq!(resolution.resolution_note, "refused in the portal");
    assert_eq!(resolution.resolved_by.as_deref(), Some("alice"));
    assert!(!is_open(&pool, b).await?);
    assert!(render::resolution(&resolution).contains("by alice"));
    Ok(())
}

#[sqlx::test]
async fn resolving_twice_changes_nothing_and_says_who_did_it(pool: PgPool) -> anyhow::Result<()> {
    let (_, b, _) = three_failures(&pool).await?;
    let first = inbox::resolve_failure(&pool, b, "first", "alice").await?;
    let err = inbox::resolve_failure(&pool, b, "second", "carol")
        .await
        .err();
    match &err {
        Some(InboxError::AlreadyResolved {
            failure_id,
            resolved_by,
            note,
            ..
        }) => {
            assert_eq!(*failure_id, b);
            assert_eq!(resolved_by.as_deref(), Some("alice"));
            assert_eq!(note, "first");
        }
        other => panic!("expected AlreadyResolved, got {other:?}"),
    }
    let row: (String, Option<String>) = sqlx::query_as(
        "SELECT resolution_note, resolved_by FROM process_failures WHERE failure_id = $1",
    )
    .bind(b)
    .fetch_one(&pool)
    .await?;
    assert_eq!(row, ("first".to_string(), Some("alice".to_string())));
    let shown = inbox::show_failure(&pool, b, now()).await?;
    assert_eq!(shown.failure.resolved_at, Some(first.resolved_at));

    let missing = inbox::resolve_failure(&pool, 999, "x", "alice").await.err();
    assert!(matches!(missing, Some(InboxError::FailureNotFound(999))));
    Ok(())
}

// failures retry ----------------------------------------------------------------------------

#[sqlx::test]
async fn retry_puts_the_order_back_in_the_queue_and_resolves(pool: PgPool) -> anyhow::Result<()> {
    let (_, b, _) = three_failures(&pool).await?;
    let before = history_count(&pool, "B").await?;

    let outcome = inbox::retry_failure(&pool, b, "alice").await?;
    assert_eq!(outcome.order_id, "B");
    assert_eq!(outcome.previous_status, "acceptance_failed");

    assert_eq!(history_count(&pool, "B").await?, before + 1);
    let (status, notes, attempt): (String, String, Option<i32>) = sqlx::query_as(
        "SELECT status, notes, attempt FROM order_status_history WHERE history_id = $1",
    )
    .bind(outcome.history_id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "pending_acceptance");
    assert_eq!(
        notes,
        format!("Retry requested from failure #{b} by alice.")
    );
    assert_eq!(
        attempt, None,
        "a person's retry starts a fresh set of attempts"
    );
    let projected: i32 =
        sqlx::query_scalar("SELECT attempt FROM order_current_status WHERE order_id = 'B'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(projected, 0, "the next claim is attempt 1");

    let (current, claimable): (String, bool) = sqlx::query_as(
        "SELECT status, claimable_at IS NOT NULL FROM order_current_status WHERE order_id = 'B'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((current.as_str(), claimable), ("pending_acceptance", true));

    assert!(!is_open(&pool, b).await?);
    assert_eq!(outcome.resolution.resolved_by.as_deref(), Some("alice"));
    assert!(
        outcome
            .resolution
            .resolution_note
            .contains(&format!("history #{}", outcome.history_id))
    );
    assert!(render::retry(&outcome).contains("back in the queue"));

    let again = inbox::retry_failure(&pool, b, "alice").await.err();
    assert!(
        matches!(again, Some(InboxError::AlreadyResolved { .. })),
        "{again:?}"
    );
    assert_eq!(history_count(&pool, "B").await?, before + 1);
    Ok(())
}

#[sqlx::test]
async fn retry_moves_a_status_stamped_ahead_of_the_clock(pool: PgPool) -> anyhow::Result<()> {
    // A failure row written with a clock ahead of the database's: the retry row must still
    // become the current status.
    insert_order(&pool, "F", hours_ago(1)).await?;
    let future = Utc::now() + TimeDelta::hours(1);
    add_status(&pool, "F", "acceptance_failed", future, 2, None).await?;
    let failure = add_failure(&pool, Some("F"), "OrderAcceptance", hours_ago(1)).await?;
    inbox::retry_failure(&pool, failure, "alice").await?;
    let (current, due): (String, bool) = sqlx::query_as(
        "SELECT status, claimable_at <= now() FROM order_current_status WHERE order_id = 'F'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((current.as_str(), due), ("pending_acceptance", true));
    Ok(())
}

#[sqlx::test]
async fn retry_is_refused_unless_the_worker_may_take_the_order(pool: PgPool) -> anyhow::Result<()> {
    for status in ["accepted", "cancelled", "accepting", "shipped"] {
        let order = format!("order-{status}");
        order_in(&pool, &order, status, 3).await?;
        let failure = add_failure(&pool, Some(&order), "OrderAcceptance", hours_ago(1)).await?;
        let before = history_count(&pool, &order).await?;

        let err = inbox::retry_failure(&pool, failure, "alice").await.err();
        match &err {
            Some(InboxError::NotRetryable {
                failure_id,
                order_id,
                status: refused,
            }) => {
                assert_eq!((*failure_id, order_id.as_str()), (failure, order.as_str()));
                assert_eq!(refused, status);
            }
            other => panic!("{status}: expected NotRetryable, got {other:?}"),
        }
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains(&order) && message.contains(status),
            "{message}"
        );
        assert_eq!(
            history_count(&pool, &order).await?,
            before,
            "{status}: no new row"
        );
        assert!(
            is_open(&pool, failure).await?,
            "{status}: failure stays open"
        );
    }
    Ok(())
}

#[sqlx::test]
async fn retry_needs_an_order_with_a_status(pool: PgPool) -> anyhow::Result<()> {
    let without_order = add_failure(&pool, None, "OrderAcceptance", hours_ago(1)).await?;
    let err = inbox::retry_failure(&pool, without_order, "alice")
        .await
        .err();
    assert!(
        matches!(err, Some(InboxError::NoRelatedOrder(id)) if id == without_order),
        "{err:?}"
    );

    let unknown_order = add_failure(&pool, Some("GHOST"), "OrderAcceptance", hours_ago(1)).await?;
    let err = inbox::retry_failure(&pool, unknown_order, "alice")
        .await
        .err();
    assert!(
        matches!(err, Some(InboxError::OrderHasNoStatus { .. })),
        "{err:?}"
    );
    assert!(is_open(&pool, unknown_order).await?);

    let err = inbox::retry_failure(&pool, 31337, "alice").await.err();
    assert!(
        matches!(err, Some(InboxError::FailureNotFound(31337))),
        "{err:?}"
    );
    Ok(())
}

#[sqlx::test]
async fn retry_makes_a_scheduled_automatic_retry_due_now(pool: PgPool) -> anyhow::Result<()> {
    insert_order(&pool, "R", hours_ago(2)).await?;
    let later = Utc::now() + TimeDelta::hours(3);
    add_status(
        &pool,
        "R",
        "acceptance_failed",
        minutes_ago(5),
        2,
        Some(later),
    )
    .await?;
    let failure = add_failure(&pool, Some("R"), "OrderAcceptance", minutes_ago(5)).await?;
    inbox::retry_failure(&pool, failure, "alice").await?;
    let due: bool = sqlx::query_scalar(
        "SELECT claimable_at <= now() FROM order_current_status WHERE order_id = 'R'",
    )
    .fetch_one(&pool)
    .await?;
    assert!(due);
    Ok(())
}

// order -------------------------------------------------------------------------------------

#[sqlx::test]
async fn order_shows_timeline_failures_and_api_calls(pool: PgPool) -> anyhow::Result<()> {
    insert_order(&pool, "T", hours_ago(4)).await?;
    add_status(&pool, "T", "pending_acceptance", hours_ago(4), 0, None).await?;
    add_status(&pool, "T", "accepting", hours_ago(3), 1, Some(hours_ago(2))).await?;
    add_api_call(&pool, "T", "OR21", 503, hours_ago(3)).await?;
    add_api_call(
        &pool,
        "T",
        "OR21",
        400,
        hours_ago(3) + TimeDelta::seconds(2),
    )
    .await?;
    add_status(
        &pool,
        "T",
        "acceptance_failed",
        hours_ago(3) + TimeDelta::seconds(3),
        1,
        None,
    )
    .await?;
    let failure = add_failure(&pool, Some("T"), "OrderAcceptance", hours_ago(3)).await?;
    add_api_call(&pool, "OTHER", "OR21", 204, hours_ago(3)).await?;

    let report = inbox::order_report(&pool, "T", None).await?;
    assert_eq!(report.current_status.as_deref(), Some("acceptance_failed"));
    let statuses: Vec<&str> = report.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["pending_acceptance", "accepting", "acceptance_failed"]
    );
    assert_eq!(report.history[1].attempt, Some(1));
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].failure_id, failure);
    let codes: Vec<Option<i32>> = report.api_calls.iter().map(|c| c.status_code).collect();
    assert_eq!(codes, [Some(503), Some(400)]);
    assert_eq!(report.api_calls[0].duration_ms, Some(120));

    let text = render::order(&report, Width::Wide);
    for expected in [
        "Timeline:",
        "accepting",
        "Failures:",
        "API calls:",
        "503",
        "120 ms",
    ] {
        assert!(text.contains(expected), "missing {expected}: {text}");
    }
    let parsed: Value = serde_json::from_str(&render::json(&report)?)?;
    assert_eq!(parsed["history"].as_array().map(Vec::len), Some(3));
    assert_eq!(parsed["api_calls"][1]["status_code"], json!(400));
    Ok(())
}

#[sqlx::test]
async fn order_of_an_unknown_id_says_so(pool: PgPool) -> anyhow::Result<()> {
    let err = inbox::order_report(&pool, "NOPE-1", None).await.err();
    assert!(
        matches!(&err, Some(InboxError::OrderNotFound(id)) if id == "NOPE-1"),
        "{err:?}"
    );
    Ok(())
}

// status ------------------------------------------------------------------------------------

/// Orders in every interesting state: two pending too long (22 h, 21 h), one pending briefly,
/// one claimed, one due for an automatic retry, one failed for good, accepted and cancelled.
async fn seed_queue(pool: &PgPool) -> anyhow::Result<()> {
    order_in(pool, "OLD-1", "pending_acceptance", 22).await?;
    order_in(pool, "OLD-2", "accepting", 21).await?;
    order_in(pool, "NEW-1", "pending_acceptance", 1).await?;
    insert_order(pool, "RETRY-1", hours_ago(19)).await?;
    add_status(
        pool,
        "RETRY-1",
        "acceptance_failed",
        hours_ago(1),
        1,
        Some(now()),
    )
    .await?;
    order_in(pool, "DEAD-1", "acceptance_failed", 23).await?;
    order_in(pool, "DONE-1", "accepted", 30).await?;
    order_in(pool, "DONE-2", "accepted", 30).await?;
    order_in(pool, "GONE-1", "cancelled", 30).await?;
    add_failure(pool, Some("DEAD-1"), "OrderAcceptance", hours_ago(1)).await?;
    let resolved = add_failure(pool, Some("GONE-1"), "OrderAcceptance", hours_ago(1)).await?;
    inbox::resolve_failure(pool, resolved, "customer cancelled", "bob").await?;
    sqlx::query(
        "INSERT INTO acceptance_runs (worker_id, started_at, finished_at, result, claimed, accepted, failed)
         VALUES ('w1', $1, $2, 'completed', 4, 3, 1), ('w2', $3, NULL, 'running', 0, 0, 0)",
    )
    .bind(hours_ago(2))
    .bind(hours_ago(2) + TimeDelta::minutes(1))
    .bind(minutes_ago(1))
    .execute(pool)
    .await?;
    Ok(())
}

#[sqlx::test]
async fn status_counts_the_queue_at_a_reference_time(pool: PgPool) -> anyhow::Result<()> {
    seed_queue(&pool).await?;
    let report =
        inbox::status_report(&pool, None, &[("default", DAY)], TWENTY_HOURS, now()).await?;

    let counts: Vec<(&str, i64)> = report
        .statuses
        .iter()
        .map(|c| (c.status.as_str(), c.orders))
        .collect();
    assert_eq!(
        counts,
        [
            ("acceptance_failed", 2),
            ("accepted", 2),
            ("accepting", 1),
            ("cancelled", 1),
            ("pending_acceptance", 2)
        ]
    );
    assert_eq!(
        report.pending.total, 4,
        "DEAD-1 is left to a person, not pending"
    );
    let oldest = report.pending.oldest.clone();
    assert_eq!(oldest.as_ref().map(|o| o.order_id.as_str()), Some("OLD-1"));
    assert_eq!(oldest.map(|o| o.age_seconds), Some(22 * 3600));
    assert_eq!(report.pending.too_long_count, 2);
    let late: Vec<&str> = report
        .pending
        .too_long
        .iter()
        .map(|o| o.order_id.as_str())
        .collect();
    assert_eq!(late, ["OLD-1", "OLD-2"]);
    assert_eq!(report.pending.alert_after_seconds, 20 * 3600);
    assert_eq!(report.open_failures, 1);
    let run = report.last_run.clone();
    assert_eq!(run.as_ref().map(|r| r.worker_id.as_str()), Some("w2"));
    assert_eq!(run.map(|r| r.result), Some("running".to_string()));

    // A later reference time or a shorter threshold moves more orders past it.
    let later = inbox::status_report(
        &pool,
        None,
        &[("default", DAY)],
        TWENTY_HOURS,
        now() + TimeDelta::hours(2),
    )
    .await?;
    assert_eq!(later.pending.too_long_count, 3, "RETRY-1 reaches 21 h");
    let strict = inbox::status_report(
        &pool,
        None,
        &[("default", DAY)],
        Duration::from_secs(1800),
        now(),
    )
    .await?;
    assert_eq!(strict.pending.too_long_count, 4);
    Ok(())
}

#[sqlx::test]
async fn status_renders_the_deadline_and_json(pool: PgPool) -> anyhow::Result<()> {
    seed_queue(&pool).await?;
    let report =
        inbox::status_report(&pool, None, &[("default", DAY)], TWENTY_HOURS, now()).await?;
    let text = render::status(&report, Width::Wide);
    for expected in [
        "Pending longer than 20h: 2",
        "24 h after its creation",
        "OLD-1",
        "Open failures: 1",
        "still running",
    ] {
        assert!(text.contains(expected), "missing {expected}: {text}");
    }
    let parsed: Value = serde_json::from_str(&render::json(&report)?)?;
    assert_eq!(parsed["pending"]["too_long_count"], json!(2));
    assert_eq!(parsed["pending"]["oldest"]["order_id"], json!("OLD-1"));
    assert_eq!(parsed["open_failures"], json!(1));
    Ok(())
}

#[sqlx::test]
async fn status_of_an_empty_database(pool: PgPool) -> anyhow::Result<()> {
    let report =
        inbox::status_report(&pool, None, &[("default", DAY)], TWENTY_HOURS, now()).await?;
    assert!(report.statuses.is_empty());
    assert_eq!(report.pending.total, 0);
    assert!(report.pending.oldest.is_none());
    assert!(report.last_run.is_none());
    assert!(render::status(&report, Width::Wide).contains("Last run: none yet"));
    Ok(())
}

// Views -------------------------------------------------------------------------------------

#[sqlx::test]
async fn views_answer_the_runbooks_questions(pool: PgPool) -> anyhow::Result<()> {
    // The views read the database clock, so this seed is relative to it.
    seed_queue(&pool).await?;
    let shift = TimeDelta::seconds((Utc::now() - now()).num_seconds());
    sqlx::query("UPDATE order_current_status SET order_created_at = order_created_at + $1")
        .bind(shift)
        .execute(&pool)
        .await?;

    let open: Vec<(String, String)> = sqlx::query_as(
        "SELECT related_id, order_status FROM open_failures ORDER BY \"timestamp\" DESC",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        open,
        [("DEAD-1".to_string(), "acceptance_failed".to_string())]
    );

    let late: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM orders_pending_too_long ORDER BY order_created_at",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(late, ["OLD-1", "OLD-2"]);

    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_orders")
        .fetch_one(&pool)
        .await?;
    assert_eq!(pending, 4);

    add_api_call(&pool, "DEAD-1", "OR21", 400, minutes_ago(31)).await?;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM order_timeline WHERE order_id = 'DEAD-1' ORDER BY at, kind",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(kinds, ["status", "failure", "api_call", "status"]);

    let (accepted, cancelled, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(accepted)::bigint, sum(cancelled)::bigint, sum(failed_attempts)::bigint
         FROM daily_outcomes",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((accepted, cancelled, failed), (2, 1, 2));
    Ok(())
}

#[sqlx::test]
async fn the_views_migration_can_run_again(pool: PgPool) -> anyhow::Result<()> {
    // Migration 10 gave every view a `shop` column and holds their current definitions; the
    // views of migration 2 cannot be put back over it (PostgreSQL does not drop view columns).
    let sql = include_str!("../migrations/20261201000010_several_shops.sql");
    sqlx::raw_sql(sql).execute(&pool).await?;
    sqlx::raw_sql(sql).execute(&pool).await?;
    Ok(())
}

// The binary --------------------------------------------------------------------------------

/// Runs the binary from the crate root with only the variables given.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Output> {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_arguments_exit_2_with_usage() -> std::io::Result<()> {
    let db = [("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")];
    for args in [
        vec!["failures", "list", "--limit", "0"],
        vec!["failures", "list", "--since", "yesterday-ish"],
        vec!["failures", "show", "abc"],
        vec!["failures", "resolve", "3"],
        vec!["failures", "resolve", "3", "--note", "   "],
        vec!["failures", "frobnicate"],
        vec!["order"],
        vec!["status", "--colour"],
        vec!["health", "--url", "not a url"],
    ] {
        let output = run_binary(&args, &db)?;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("Usage") || stderr(&output).contains("--help"));
    }
    Ok(())
}

#[test]
fn an_unreachable_database_is_a_message_not_a_panic() -> std::io::Result<()> {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("postgres://nobody@127.0.0.1:{port}/orders");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("ORDER_ACCEPTANCE__DATABASE__CONNECT_TIMEOUT", "1s"),
    ];
    for args in [
        vec!["failures", "list"],
        vec!["status", "--json"],
        vec!["order", "X"],
    ] {
        let output = run_binary(&args, &env)?;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains("cannot connect to PostgreSQL"),
            "{message}"
        );
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(!message.contains("panicked"), "{message}");
        assert!(output.stdout.is_empty());
    }
    Ok(())
}

#[test]
fn health_fails_when_nothing_answers() -> std::io::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    // No configuration at all: the probe must not need any.
    let output = run_binary(&["health", "--url", &url, "--timeout", "2s"], &[])?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(&url));
    Ok(())
}

/// The URL of the test's own database, for the binary.
fn database_url_of(pool: &PgPool) -> anyhow::Result<String> {
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL")?)?;
    let options = pool.connect_options();
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("the test pool names no database"))?;
    url.set_path(name);
    Ok(url.to_string())
}

#[sqlx::test]
async fn the_binary_prints_json_and_exits_1_on_refusals(pool: PgPool) -> anyhow::Result<()> {
    seed_queue(&pool).await?;
    let failure: i64 =
        sqlx::query_scalar("SELECT failure_id FROM open_failures WHERE related_id = 'DEAD-1'")
            .fetch_one(&pool)
            .await?;
    let url = database_url_of(&pool)?;
    let env = [("DATABASE_URL", url.as_str())];

    let status = run_binary(&["status", "--json"], &env)?;
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let parsed: Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(parsed["open_failures"], json!(1));

    let id = failure.to_string();
    let resolve = run_binary(&["failures", "resolve", &id, "--note", "handled"], &env)?;
    assert_eq!(resolve.status.code(), Some(0), "{}", stderr(&resolve));
    assert!(String::from_utf8_lossy(&resolve.stdout).contains("by tester"));

    let twice = run_binary(&["failures", "resolve", &id, "--note", "again"], &env)?;
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        stderr(&twice).contains("already resolved"),
        "{}",
        stderr(&twice)
    );

    let unknown = run_binary(&["failures", "show", "999999"], &env)?;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("#999999 does not exist"));

    let listed = run_binary(&["failures", "list", "--all", "--json"], &env)?;
    let parsed: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(parsed["failures"].as_array().map(Vec::len), Some(2));
    Ok(())
}
