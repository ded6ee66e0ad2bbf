//! The review queue against a real PostgreSQL: `review list`, `review accept|refuse` (each
//! error changing nothing, two decisions at once), `--now` through a run over one order, the
//! deadline policy, and the review information in `status` and `order`. Orders are put in
//! review with history rows, as the rules stage writes them.

mod common;

use std::process::Output;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use common::{TestApp, spawn_app, test_env};
use marketplace_sim::{LineSpec, OrderSpec};
use order_acceptance::acceptance::{self, RunResult, deadline};
use order_acceptance::inbox::{self, render};
use order_acceptance::review::{
    self, DEADLINE_POLICY, Decision, ReviewAction, ReviewError, queue_decision,
};
use order_acceptance::terminal::Width;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The acceptance window of the tests: Best Buy's 24 hours.
const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const BIN: &str = env!("CARGO_BIN_EXE_order-acceptance");

/// Now, to the second: the database keeps microseconds, so a finer `now` would read 1 s short.
fn whole_second_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

fn hours_before(now: DateTime<Utc>, hours: i64) -> DateTime<Utc> {
    now - TimeDelta::hours(hours)
}

// Seeding -----------------------------------------------------------------------------------

/// An order placed at `placed_at` with lines `{id}-1`.. `{id}-n`, claimed once and put in
/// review by the rule `insufficient_stock` on its first line.
async fn seed_in_review(pool: &PgPool, order_id: &str, placed_at: DateTime<Utc>, lines: usize) {
    let order_lines: Vec<Value> = (1..=lines)
        .map(|n| json!({"order_line_id": format!("{order_id}-{n}"), "offer_sku": format!("SKU-{n}"), "quantity": 1}))
        .collect();
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data, placed_at, created_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(order_id)
    .bind(json!({"order_id": order_id, "order_lines": order_lines}))
    .bind(placed_at)
    .execute(pool)
    .await
    .expect("insert order");
    let claimed_at = placed_at + TimeDelta::minutes(5);
    for (status, at, attempt, note) in [
        ("pending_acceptance", placed_at, 0, "imported"),
        ("accepting", claimed_at, 1, "Claimed by test (attempt 1)."),
        (
            "in_review",
            claimed_at + TimeDelta::seconds(1),
            1,
            "In review: line 1 short of stock.",
        ),
    ] {
        sqlx::query(
            r#"INSERT INTO order_status_history (order_id, status, notes, "timestamp", attempt)
               VALUES ($1, $2, $3, $4, $5)"#,
        )
        .bind(order_id)
        .bind(status)
        .bind(note)
        .bind(at)
        .bind(attempt)
        .execute(pool)
        .await
        .expect("insert history");
    }
    // A decision of an earlier claim, which the list must not show.
    add_line_decision(pool, order_id, 1, "accept", "in_stock", placed_at).await;
    for n in 1..=lines {
        let (action, rule) = if n == 1 {
            ("review", "insufficient_stock")
        } else {
            ("accept", "in_stock")
        };
        add_line_decision(pool, order_id, n, action, rule, claimed_at).await;
    }
}

async fn add_line_decision(
    pool: &PgPool,
    order_id: &str,
    line: usize,
    action: &str,
    rule: &str,
    at: DateTime<Utc>,
) {
    sqlx::query(
        "INSERT INTO acceptance_decisions
             (order_id, order_line_id, attempt, action, rule, sku, quantity, available, reserved,
              unit_price, floor_price, reason, decided_at)
         VALUES ($1, $2, 1, $3, $4, $5, 1, 0, 2, 19.99, 15.00, $4 || ' for ' || $5, $6)",
    )
    .bind(order_id)
    .bind(format!("{order_id}-{line}"))
    .bind(action)
    .bind(rule)
    .bind(format!("SKU-{line}"))
    .bind(at)
    .execute(pool)
    .await
    .expect("insert decision");
}

async fn seed_pending(pool: &PgPool, order_id: &str, placed_at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data, placed_at, created_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(order_id)
    .bind(json!({"order_id": order_id}))
    .bind(placed_at)
    .execute(pool)
    .await
    .expect("insert order");
    sqlx::query(
        r#"INSERT INTO order_status_history (order_id, status, notes, "timestamp")
           VALUES ($1, 'pending_acceptance', 'imported', $2)"#,
    )
    .bind(order_id)
    .bind(placed_at)
    .execute(pool)
    .await
    .expect("insert history");
}

/// Every row the review commands could write, as text: a refused decision must leave it equal.
async fn written_rows(pool: &PgPool) -> String {
    let mut dump = String::new();
    for table in [
        "review_decisions",
        "order_status_history",
        "order_current_status",
        "process_failures",
    ] {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM {table} t" // names from this list only
        )))
        .fetch_one(pool)
        .await
        .expect("dump table");
        dump.push_str(&rows.unwrap_or_default());
        dump.push('\n');
    }
    dump
}

/// The review queue of the one default shop, with a 24-hour window, as `review list` shows it.
async fn list_in_review(pool: &PgPool, now: chrono::DateTime<Utc>) -> review::ReviewList {
    review::list_in_review(
        pool,
        None,
        &[("default", DAY)],
        order_acceptance::inbox::deadline_note(DAY),
        now,
    )
    .await
    .expect("list")
}

fn decision(order_id: &str, action: ReviewAction, lines: Option<&[&str]>) -> Decision {
    Decision {
        shop: "default".to_string(),
        order_id: order_id.to_string(),
        action,
        lines: lines.map(|lines| lines.iter().map(ToString::to_string).collect()),
        note: Some("checked with the warehouse".to_string()),
        decided_by: "alice".to_string(),
    }
}

async fn status_of(pool: &PgPool, order_id: &str) -> (String, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT status, claimable_at FROM order_current_status WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .expect("current status")
}

/// (action, lines, note, decided_by) of the order's review decisions, oldest first.
type DecisionRow = (String, Option<Vec<String>>, Option<String>, String);

async fn review_rows(pool: &PgPool, order_id: &str) -> Vec<DecisionRow> {
    sqlx::query_as(
        "SELECT action, lines, note, decided_by FROM review_decisions WHERE order_id = $1 ORDER BY review_id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .expect("review decisions")
}

async fn open_failures(pool: &PgPool, order_id: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT details, payload FROM process_failures WHERE related_id = $1 AND resolved_at IS NULL",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .expect("failures")
}

// `review list` -----------------------------------------------------------------------------

#[sqlx::test]
async fn list_shows_orders_oldest_first_with_time_left_rules_and_queued_decisions(pool: PgPool) {
    let now = whole_second_now();
    seed_in_review(&pool, "NEWER", hours_before(now, 3), 2).await;
    seed_in_review(&pool, "OLDER", hours_before(now, 23), 1).await;
    seed_pending(&pool, "PENDING", hours_before(now, 30)).await;
    queue_decision(&pool, &decision("NEWER", ReviewAction::Accept, None))
        .await
        .expect("decide");

    // NEWER left review with its decision (pending_acceptance now); PENDING never was in it.
    let list = list_in_review(&pool, now).await;
    let ids: Vec<&str> = list
        .orders
        .iter()
        .map(|o| o.order.order_id.as_str())
        .collect();
    assert_eq!(ids, ["OLDER"]);

    seed_in_review(&pool, "NEWEST", hours_before(now, 1), 2).await;
    let list = list_in_review(&pool, now).await;
    let ids: Vec<&str> = list
        .orders
        .iter()
        .map(|o| o.order.order_id.as_str())
        .collect();
    assert_eq!(ids, ["OLDER", "NEWEST"], "oldest first");

    let older = &list.orders[0];
    assert_eq!(
        older.time_left_seconds, 3600,
        "24 h after creation, 23 h ago"
    );
    assert_eq!(
        older.order.deadline,
        hours_before(now, 23) + TimeDelta::hours(24)
    );
    let rules: Vec<(&str, &str, &str)> = older
        .lines
        .iter()
        .map(|d| (d.order_line_id.as_str(), d.action.as_str(), d.rule.as_str()))
        .collect();
    assert_eq!(
        rules,
        [("OLDER-1", "review", "insufficient_stock")],
        "only the latest claim's decisions"
    );
    let newest = &list.orders[1];
    assert_eq!(newest.lines.len(), 2);
    assert!(older.queued.is_none() && newest.queued.is_none());

    let text = render::review_list(&list, Width::Wide);
    assert!(text.contains("Order OLDER: deadline"), "{text}");
    assert!(text.contains("1h left"), "{text}");
    assert!(text.contains("insufficient_stock"), "{text}");
    assert!(text.contains("review accept ID"), "{text}");
    let parsed: Value = serde_json::from_str(&render::json(&list).expect("json")).expect("parse");
    assert_eq!(parsed["orders"][0]["order_id"], "OLDER");
    assert_eq!(parsed["orders"][0]["time_left_seconds"], 3600);
    assert_eq!(
        parsed["orders"][0]["lines"][0]["rule"],
        "insufficient_stock"
    );
    assert_eq!(parsed["orders"][0]["lines"][0]["unit_price"], "19.99");
    assert_eq!(parsed["orders"][0]["queued"], Value::Null);
}

#[sqlx::test]
async fn list_shows_a_decision_queued_for_an_order_still_in_review(pool: PgPool) {
    // A decision whose run is still to come while the order is (again) in review: e.g. a
    // run that sent it to review again before carrying the decision out.
    let now = whole_second_now();
    seed_in_review(&pool, "Q-1", hours_before(now, 2), 1).await;
    sqlx::query(
        "INSERT INTO review_decisions (order_id, action, note, decided_by) VALUES ('Q-1', 'refuse', 'no', 'bob')",
    )
    .execute(&pool)
    .await
    .expect("decision");
    let list = list_in_review(&pool, now).await;
    let queued = list.orders[0].queued.as_ref().expect("queued");
    assert_eq!(
        (queued.action.as_str(), queued.decided_by.as_str()),
        ("refuse", "bob")
    );
    assert!(render::review_list(&list, Width::Wide).contains("Decided: refuse all by bob"));
}

#[sqlx::test]
async fn list_of_an_empty_queue_says_so(pool: PgPool) {
    let list = list_in_review(&pool, Utc::now()).await;
    assert!(list.orders.is_empty());
    assert_eq!(
        render::review_list(&list, Width::Wide),
        "No orders in review."
    );
}

// `review accept|refuse` --------------------------------------------------------------------

#[sqlx::test]
async fn accept_queues_the_decision_and_makes_the_order_claimable(pool: PgPool) {
    seed_in_review(&pool, "A-1", hours_before(Utc::now(), 4), 2).await;
    let history_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_status_history WHERE order_id = 'A-1'")
            .fetch_one(&pool)
            .await
            .expect("count");

    let queued = queue_decision(&pool, &decision("A-1", ReviewAction::Accept, None))
        .await
        .expect("decide");

    assert_eq!(
        review_rows(&pool, "A-1").await,
        [(
            "accept".to_string(),
            None,
            Some("checked with the warehouse".to_string()),
            "alice".to_string()
        )]
    );
    assert!(queued.decision.carried_out_at.is_none());
    let (status, claimable_at) = status_of(&pool, "A-1").await;
    assert_eq!(status, "pending_acceptance");
    assert!(claimable_at.is_some_and(|at| at <= Utc::now() + TimeDelta::seconds(1)));
    let history: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT history_id, status, notes FROM order_status_history WHERE order_id = 'A-1' ORDER BY history_id",
    )
    .fetch_all(&pool)
    .await
    .expect("history");
    assert_eq!(history.len() as i64, history_before + 1, "one row added");
    let (history_id, status, note) = history.last().expect("a row").clone();
    assert_eq!(
        (history_id, status.as_str()),
        (queued.history_id, "pending_acceptance")
    );
    assert_eq!(
        note,
        format!(
            "Review decision #{} by alice: accept every line: checked with the warehouse. The next run carries it out.",
            queued.decision.review_id
        )
    );
    assert!(
        render::queued(&queued).contains("queued for order A-1: accept all by alice"),
        "{}",
        render::queued(&queued)
    );
}

#[sqlx::test]
async fn refuse_with_lines_records_which_lines(pool: PgPool) {
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 4), 3).await;
    let queued = queue_decision(
        &pool,
        &decision("R-1", ReviewAction::Refuse, Some(&["R-1-1", "R-1-3"])),
    )
    .await
    .expect("decide");
    assert_eq!(
        review_rows(&pool, "R-1").await,
        [(
            "refuse".to_string(),
            Some(vec!["R-1-1".to_string(), "R-1-3".to_string()]),
            Some("checked with the warehouse".to_string()),
            "alice".to_string()
        )]
    );
    let (status, notes): (String, String) = sqlx::query_as(
        "SELECT c.status, h.notes FROM order_current_status c JOIN order_status_history h USING (history_id) WHERE c.order_id = 'R-1'",
    )
    .fetch_one(&pool)
    .await
    .expect("status");
    assert_eq!(status, "pending_acceptance");
    assert!(
        notes.contains("refuse lines R-1-1, R-1-3 (the others accepted)"),
        "{notes}"
    );
    assert_eq!(
        queued.decision.lines.as_deref().map(<[String]>::len),
        Some(2)
    );
}

#[sqlx::test]
async fn each_refused_decision_changes_nothing(pool: PgPool) {
    let now = whole_second_now();
    seed_in_review(&pool, "IN-1", hours_before(now, 4), 2).await;
    seed_in_review(&pool, "DONE-1", hours_before(now, 4), 1).await;
    seed_pending(&pool, "PEND-1", hours_before(now, 1)).await;
    let first = queue_decision(&pool, &decision("DONE-1", ReviewAction::Accept, None))
        .await
        .expect("first decision");
    let before = written_rows(&pool).await;

    let err = queue_decision(&pool, &decision("NOPE-1", ReviewAction::Accept, None))
        .await
        .expect_err("unknown order");
    assert!(
        matches!(&err, ReviewError::OrderNotFound(id) if id == "NOPE-1"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was changed"), "{err}");

    let err = queue_decision(&pool, &decision("PEND-1", ReviewAction::Accept, None))
        .await
        .expect_err("not in review");
    assert!(
        matches!(&err, ReviewError::NotInReview { status, .. } if status == "pending_acceptance"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("order PEND-1 is pending_acceptance, not in review"),
        "{err}"
    );

    let err = queue_decision(&pool, &decision("DONE-1", ReviewAction::Refuse, None))
        .await
        .expect_err("already decided");
    assert!(
        matches!(&err, ReviewError::AlreadyDecided { review_id, decided_by, .. }
            if *review_id == first.decision.review_id && decided_by == "alice"),
        "{err}"
    );
    assert!(err.to_string().contains("accept by alice at"), "{err}");

    let err = queue_decision(
        &pool,
        &decision("IN-1", ReviewAction::Accept, Some(&["IN-1-1", "IN-1-9"])),
    )
    .await
    .expect_err("unknown line");
    assert!(
        matches!(&err, ReviewError::UnknownLines { unknown, .. } if unknown == &["IN-1-9"]),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("has no line IN-1-9; its lines are IN-1-1, IN-1-2"),
        "{err}"
    );

    assert_eq!(written_rows(&pool).await, before, "nothing changed");
}

#[sqlx::test]
async fn two_decisions_at_once_one_wins_the_other_is_told(pool: PgPool) {
    seed_in_review(&pool, "C-1", hours_before(Utc::now(), 4), 2).await;
    let accept = decision("C-1", ReviewAction::Accept, None);
    let refuse = Decision {
        decided_by: "bob".to_string(),
        ..decision("C-1", ReviewAction::Refuse, None)
    };
    let (first, second) = tokio::join!(
        queue_decision(&pool, &accept),
        queue_decision(&pool, &refuse)
    );

    let (won, lost) = match (first, second) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        other => panic!("exactly one decision must win: {other:?}"),
    };
    assert!(
        matches!(&lost, ReviewError::AlreadyDecided { review_id, decided_by, .. }
            if *review_id == won.decision.review_id && *decided_by == won.decision.decided_by),
        "{lost}"
    );
    assert_eq!(review_rows(&pool, "C-1").await.len(), 1);
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_status_history WHERE order_id = 'C-1' AND status = 'pending_acceptance'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(pending, 2, "the import's row and the winner's");
}

/// Waits, bounded, until some session of this test's database waits for a lock.
async fn someone_waits_for_a_lock(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody waited for a lock within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[sqlx::test]
async fn a_decision_written_around_the_lock_is_caught_by_the_unique_index(pool: PgPool) {
    seed_in_review(&pool, "U-1", hours_before(Utc::now(), 4), 1).await;
    // Another tool writes a decision without taking the order's lock, and has not committed.
    let mut other = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO review_decisions (order_id, action, decided_by) VALUES ('U-1', 'refuse', 'other-tool')",
    )
    .execute(&mut *other)
    .await
    .expect("insert");
    let deciding = tokio::spawn({
        let pool = pool.clone();
        async move { queue_decision(&pool, &decision("U-1", ReviewAction::Accept, None)).await }
    });
    someone_waits_for_a_lock(&pool).await;
    other.commit().await.expect("commit");

    let err = deciding
        .await
        .expect("the task ends")
        .expect_err("the other decision won");
    assert!(
        matches!(&err, ReviewError::DecidedMeanwhile { order_id } if order_id == "U-1"),
        "{err}"
    );
    assert_eq!(review_rows(&pool, "U-1").await.len(), 1);
    assert_eq!(
        status_of(&pool, "U-1").await.0,
        "in_review",
        "no pending row added"
    );
}

#[sqlx::test]
async fn list_and_policy_say_when_the_deadline_has_passed(pool: PgPool) {
    let now = whole_second_now();
    seed_in_review(&pool, "LATE-1", hours_before(now, 25), 1).await;
    let list = list_in_review(&pool, now).await;
    assert_eq!(list.orders[0].time_left_seconds, -3600);
    let text = render::review_list(&list, Width::Wide);
    assert!(text.contains("(passed 1h ago)"), "{text}");

    let app = app(pool, &[]).await;
    deadline::apply_policy(&app.worker(), now)
        .await
        .expect("policy");
    let failures = open_failures(&app.pool, "LATE-1").await;
    assert!(
        failures[0].0.contains("its deadline passed at"),
        "{failures:?}"
    );
}

// `--now`: a run over one order ------------------------------------------------------------

/// An order waiting at the simulator and in review here, created `hours` ago.
async fn in_review_at_the_simulator(app: &TestApp, order_id: &str, hours: i64) {
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some(order_id.into()),
        lines: Some(2),
        ..OrderSpec::default()
    }]);
    seed_in_review(&app.pool, order_id, hours_before(Utc::now(), hours), 2).await;
}

async fn app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app(pool, |sim| sim.orders = 0, overrides).await
}

#[sqlx::test]
async fn accept_now_carries_the_decision_out_for_that_order_only(pool: PgPool) {
    let app = app(pool, &[]).await;
    in_review_at_the_simulator(&app, "NOW-1", 3).await;
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some("OTHER-1".into()),
        lines: Some(1),
        ..OrderSpec::default()
    }]);
    app.insert_pending("OTHER-1", json!({"order_id": "OTHER-1"}))
        .await;

    let decided = acceptance::decide_now(
        &app.worker(),
        &CancellationToken::new(),
        &decision("NOW-1", ReviewAction::Accept, None),
    )
    .await
    .expect("decided and carried out");

    assert_eq!(decided.run.result, RunResult::Completed);
    assert_eq!((decided.run.claimed, decided.run.accepted), (1, 1));
    assert_eq!(decided.run.imported, 0, "a scoped run imports nothing");
    let outcome = decided.outcome.as_ref().expect("a status");
    assert_eq!(outcome.status, "accepted");
    assert_eq!(app.or21_calls("NOW-1"), 1);
    assert_ne!(
        app.sim.order_state("NOW-1").as_deref(),
        Some("WAITING_ACCEPTANCE"),
        "the simulator shows it accepted"
    );
    assert_eq!(
        app.or21_calls("OTHER-1"),
        0,
        "the other order is left for the worker"
    );
    assert_eq!(app.current_status("OTHER-1").await.0, "pending_acceptance");
    let text = render::decided_now(&decided, Width::Wide);
    assert!(text.contains("Order NOW-1 is now accepted"), "{text}");
}

#[sqlx::test]
async fn a_scoped_run_claims_only_the_orders_it_names(pool: PgPool) {
    let app = app(pool, &[]).await;
    for id in ["S-1", "S-2", "S-3"] {
        app.sim.add_orders(vec![OrderSpec {
            order_id: Some(id.into()),
            lines: Some(1),
            ..OrderSpec::default()
        }]);
        app.insert_pending(id, json!({"order_id": id})).await;
    }
    let summary = acceptance::run_orders(
        &app.worker(),
        &CancellationToken::new(),
        &["S-1".to_string(), "S-3".to_string()],
    )
    .await
    .expect("run");
    assert_eq!((summary.claimed, summary.accepted), (2, 2));
    assert_eq!(app.current_status("S-1").await.0, "accepted");
    assert_eq!(app.current_status("S-2").await.0, "pending_acceptance");
    assert_eq!(app.current_status("S-3").await.0, "accepted");
}

// The deadline policy ----------------------------------------------------------------------

#[sqlx::test]
async fn deadline_accept_decides_orders_near_the_deadline_in_the_same_run(pool: PgPool) {
    let app = app(pool, &[("ORDER_ACCEPTANCE__RULES__ON_DEADLINE", "accept")]).await;
    in_review_at_the_simulator(&app, "NEAR-1", 23).await;
    in_review_at_the_simulator(&app, "FAR-1", 10).await;

    let summary = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run");

    let rows = review_rows(&app.pool, "NEAR-1").await;
    assert_eq!(rows.len(), 1);
    let (action, lines, note, by) = &rows[0];
    assert_eq!(
        (action.as_str(), lines, by.as_str()),
        ("accept", &None, DEADLINE_POLICY)
    );
    assert!(
        note.as_deref()
            .is_some_and(|n| n.contains("rules.on_deadline = accept")),
        "{note:?}"
    );
    assert_eq!(
        (summary.claimed, summary.accepted),
        (1, 1),
        "claimed in this same run"
    );
    assert_eq!(app.current_status("NEAR-1").await.0, "accepted");
    assert_eq!(app.or21_calls("NEAR-1"), 1);
    assert!(review_rows(&app.pool, "FAR-1").await.is_empty());
    assert_eq!(app.current_status("FAR-1").await.0, "in_review");
    assert_eq!(app.or21_calls("FAR-1"), 0);
}

#[sqlx::test]
async fn deadline_refuse_queues_a_refusal(pool: PgPool) {
    let app = app(pool, &[("ORDER_ACCEPTANCE__RULES__ON_DEADLINE", "refuse")]).await;
    let now = whole_second_now();
    seed_in_review(&app.pool, "NEAR-2", hours_before(now, 23), 2).await;
    seed_in_review(&app.pool, "FAR-2", hours_before(now, 20), 2).await;

    deadline::apply_policy(&app.worker(), now)
        .await
        .expect("policy");

    let rows = review_rows(&app.pool, "NEAR-2").await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].1.clone()), ("refuse", None));
    assert_eq!(rows[0].3, DEADLINE_POLICY);
    assert_eq!(app.current_status("NEAR-2").await.0, "pending_acceptance");
    assert!(
        review_rows(&app.pool, "FAR-2").await.is_empty(),
        "4 h left > 2 h margin"
    );
    assert_eq!(app.current_status("FAR-2").await.0, "in_review");
}

#[sqlx::test]
async fn deadline_review_flags_each_order_once_until_someone_decides(pool: PgPool) {
    let app = app(pool, &[]).await;
    assert_eq!(
        app.settings.rules.on_deadline.as_str(),
        "review",
        "the default"
    );
    let now = whole_second_now();
    seed_in_review(&app.pool, "NEAR-3", hours_before(now, 23), 1).await;
    seed_in_review(&app.pool, "FAR-3", hours_before(now, 12), 1).await;
    let worker = app.worker();

    deadline::apply_policy(&worker, now).await.expect("policy");
    deadline::apply_policy(&worker, now + TimeDelta::minutes(5))
        .await
        .expect("policy again");

    let failures = open_failures(&app.pool, "NEAR-3").await;
    assert_eq!(failures.len(), 1, "one row per order, not one per run");
    let (details, payload) = &failures[0];
    assert!(
        details.contains("order-acceptance review accept NEAR-3"),
        "{details}"
    );
    assert!(details.contains("still in review"), "{details}");
    assert_eq!(payload["stage"], "deadline");
    assert!(
        review_rows(&app.pool, "NEAR-3").await.is_empty(),
        "left to a person"
    );
    assert_eq!(app.current_status("NEAR-3").await.0, "in_review");
    assert!(open_failures(&app.pool, "FAR-3").await.is_empty());

    queue_decision(&app.pool, &decision("NEAR-3", ReviewAction::Accept, None))
        .await
        .expect("decide");
    assert!(
        open_failures(&app.pool, "NEAR-3").await.is_empty(),
        "the decision closes the deadline failure"
    );
}

// `status` and `order` -----------------------------------------------------------------------

#[sqlx::test]
async fn status_shows_orders_in_review_and_the_nearest_deadline(pool: PgPool) {
    let now = whole_second_now();
    seed_in_review(&pool, "REV-1", hours_before(now, 22), 1).await;
    seed_in_review(&pool, "REV-2", hours_before(now, 2), 1).await;
    seed_pending(&pool, "PEND-2", hours_before(now, 5)).await;

    let report = inbox::status_report(
        &pool,
        None,
        &[("default", DAY)],
        std::time::Duration::from_secs(20 * 3600),
        now,
    )
    .await
    .expect("status");
    assert_eq!(
        report.pending.total, 3,
        "orders in review are still to be decided"
    );
    assert_eq!(report.pending.in_review, 2);
    assert_eq!(report.pending.too_long_count, 1);
    let nearest = report
        .pending
        .nearest_deadline
        .as_ref()
        .expect("a deadline");
    assert_eq!(
        (nearest.order_id.as_str(), nearest.status.as_str()),
        ("REV-1", "in_review")
    );
    assert_eq!(nearest.seconds_left, 2 * 3600);

    let text = render::status(&report, Width::Wide);
    assert!(
        text.contains("Pending (still to be decided): 3, of which in review (a person decides): 2"),
        "{text}"
    );
    assert!(text.contains("Nearest deadline:"), "{text}");
    assert!(text.contains("for REV-1 (in_review), 2h left"), "{text}");
    assert!(text.contains("order-acceptance review list"), "{text}");
    let parsed: Value = serde_json::from_str(&render::json(&report).expect("json")).expect("parse");
    assert_eq!(parsed["pending"]["in_review"], 2);
    assert_eq!(parsed["pending"]["nearest_deadline"]["order_id"], "REV-1");
    assert_eq!(parsed["pending"]["nearest_deadline"]["seconds_left"], 7200);
}

#[sqlx::test]
async fn order_shows_line_decisions_review_decisions_and_line_states(pool: PgPool) {
    seed_in_review(&pool, "O-1", hours_before(Utc::now(), 3), 2).await;
    queue_decision(
        &pool,
        &decision("O-1", ReviewAction::Accept, Some(&["O-1-2"])),
    )
    .await
    .expect("decide");
    sqlx::query(
        r#"INSERT INTO order_status_history (order_id, status, notes, attempt, lines)
           VALUES ('O-1', 'accepted', 'accepted with line O-1-1 refused', 1, $1)"#,
    )
    .bind(json!([
        {"order_line_id": "O-1-1", "offer_sku": "SKU-1", "quantity": 1, "state": "REFUSED", "accepted": false},
        {"order_line_id": "O-1-2", "offer_sku": "SKU-2", "quantity": 1, "state": "SHIPPING", "accepted": true}
    ]))
    .execute(&pool)
    .await
    .expect("outcome row");

    let report = inbox::order_report(&pool, "O-1", None)
        .await
        .expect("order");
    assert_eq!(report.line_decisions.len(), 3, "every claim's decisions");
    assert_eq!(report.review_decisions.len(), 1);
    let states = report.line_states.as_ref().expect("line states");
    assert_eq!(states[0].state.as_deref(), Some("REFUSED"));
    assert_eq!(states[1].accepted, Some(true));

    let text = render::order(&report, Width::Wide);
    for expected in [
        "Line decisions:",
        "insufficient_stock",
        "19.99",
        "15.00",
        "Review decisions:",
        "alice",
        "O-1-2",
        "checked with the warehouse",
        "waiting for the next run",
        "Line states (latest outcome):",
        "REFUSED",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let parsed: Value = serde_json::from_str(&render::json(&report).expect("json")).expect("parse");
    assert_eq!(parsed["line_decisions"][2]["rule"], "in_stock");
    assert_eq!(parsed["line_decisions"][1]["available"], 0);
    assert_eq!(parsed["review_decisions"][0]["lines"], json!(["O-1-2"]));
    assert_eq!(parsed["line_states"][0]["state"], "REFUSED");
}

#[sqlx::test]
async fn order_without_decisions_says_none(pool: PgPool) {
    seed_pending(&pool, "PLAIN-1", Utc::now()).await;
    let report = inbox::order_report(&pool, "PLAIN-1", None)
        .await
        .expect("order");
    assert!(report.line_decisions.is_empty() && report.review_decisions.is_empty());
    assert!(report.line_states.is_none());
    let text = render::order(&report, Width::Wide);
    assert!(text.contains("Line decisions:\n  (none)"), "{text}");
    assert!(!text.contains("Line states"), "{text}");
}

// The binary ---------------------------------------------------------------------------------

fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("scripts/test exports DATABASE_URL");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(pool.connect_options().get_database().unwrap_or("postgres"));
    url.to_string()
}

/// The binary with only `DATABASE_URL` (the operator commands need nothing else) and `env`.
async fn review_cli(pool: &PgPool, args: &[&str], env: &[(String, String)]) -> Output {
    tokio::process::Command::new(BIN)
        .env_clear()
        .envs(env.iter().cloned())
        .env("DATABASE_URL", database_url(pool))
        .env("USER", "carol")
        .arg("review")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("run the binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[sqlx::test]
async fn the_cli_decides_lists_and_exits_1_on_refusals(pool: PgPool) {
    let now = whole_second_now();
    seed_in_review(&pool, "CLI-1", hours_before(now, 5), 2).await;
    seed_in_review(&pool, "CLI-2", hours_before(now, 4), 2).await;

    let listed = review_cli(&pool, &["list", "--json"], &[]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let list: Value = serde_json::from_slice(&listed.stdout).expect("JSON on stdout");
    assert_eq!(list["orders"][0]["order_id"], "CLI-1");

    let before = written_rows(&pool).await;
    for (args, expected) in [
        (vec!["accept", "NOPE"], "order NOPE is not in the database"),
        (
            vec!["accept", "CLI-1", "--lines", "CLI-1-1,CLI-1-7"],
            "has no line CLI-1-7",
        ),
    ] {
        let output = review_cli(&pool, &args, &[]).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"));
    }
    let no_note = review_cli(&pool, &["refuse", "CLI-1"], &[]).await;
    assert_eq!(
        no_note.status.code(),
        Some(2),
        "--note is required to refuse"
    );
    assert!(stderr(&no_note).contains("--note"), "{}", stderr(&no_note));
    assert_eq!(written_rows(&pool).await, before, "nothing changed");

    let refused = review_cli(
        &pool,
        &[
            "refuse",
            "CLI-1",
            "--lines",
            "CLI-1-2",
            "--note",
            "price typo",
        ],
        &[],
    )
    .await;
    assert!(refused.status.success(), "{}", stderr(&refused));
    let out = String::from_utf8_lossy(&refused.stdout);
    assert!(
        out.contains("queued for order CLI-1: refuse CLI-1-2 by carol"),
        "{out}"
    );
    assert_eq!(
        review_rows(&pool, "CLI-1").await,
        [(
            "refuse".to_string(),
            Some(vec!["CLI-1-2".to_string()]),
            Some("price typo".to_string()),
            "carol".to_string()
        )]
    );

    let again = review_cli(&pool, &["accept", "CLI-1", "--by", "dave"], &[]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already decided: refuse by carol"),
        "{}",
        stderr(&again)
    );
}

#[sqlx::test]
async fn the_cli_accepts_now_through_a_run(pool: PgPool) {
    let app = app(pool, &[]).await;
    in_review_at_the_simulator(&app, "CLI-NOW", 3).await;
    let env = test_env(&app.sim.url(), common::API_KEY);
    let output = review_cli(&app.pool, &["accept", "CLI-NOW", "--now", "--json"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let decided: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(decided["outcome"]["status"], "accepted");
    assert_eq!(decided["run"]["claimed"], 1);
    assert_eq!(decided["queued"]["decision"]["decided_by"], "carol");
    assert_eq!(app.or21_calls("CLI-NOW"), 1);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert!(
        !all.contains(common::API_KEY),
        "the key stays out of the output"
    );
}

#[sqlx::test]
async fn the_cli_needs_the_marketplace_key_only_with_now(pool: PgPool) {
    seed_in_review(&pool, "KEY-1", hours_before(Utc::now(), 3), 1).await;
    let before = written_rows(&pool).await;
    let output = review_cli(&pool, &["accept", "KEY-1", "--now"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("marketplace"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        written_rows(&pool).await,
        before,
        "nothing decided without a run to do it"
    );
}

// End to end with the rules: review → decision → the next run --------------------------------

/// Rules on (import on, so the order's creation date comes from the marketplace), plus
/// `overrides`.
async fn rules_app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("ORDER_ACCEPTANCE__RULES__ENABLED", "true")];
    env.extend_from_slice(overrides);
    app(pool, &env).await
}

/// An order of two lines at the simulator, created `hours` ago: `{id}-1` of a SKU with stock,
/// `{id}-2` of a SKU the stock does not know, so the rules send it to review.
async fn two_line_order(app: &TestApp, id: &str, hours: i64) {
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some(id.into()),
        items: Some(vec![
            LineSpec {
                sku: "IN-STOCK".into(),
                quantity: 1,
                ..LineSpec::default()
            },
            LineSpec {
                sku: "NOT-LISTED".into(),
                quantity: 1,
                ..LineSpec::default()
            },
        ]),
        created_at: Some(Utc::now() - TimeDelta::hours(hours)),
        ..OrderSpec::default()
    }]);
    sqlx::query("INSERT INTO acceptance_stock (sku, available) VALUES ('IN-STOCK', 10) ON CONFLICT DO NOTHING")
        .execute(&app.pool)
        .await
        .expect("stock");
}

async fn run_once(app: &TestApp) -> acceptance::RunSummary {
    acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run completes")
}

/// Puts a fresh two-line order in review through a run, and checks the list shows why.
async fn sent_to_review(app: &TestApp, id: &str, hours: i64) {
    two_line_order(app, id, hours).await;
    let summary = run_once(app).await;
    assert_eq!(summary.in_review, 1, "{summary:?}");
    assert_eq!(app.current_status(id).await.0, "in_review");
    let list = list_in_review(&app.pool, Utc::now()).await;
    let listed = list
        .orders
        .iter()
        .find(|o| o.order.order_id == id)
        .expect("listed");
    let rules: Vec<(String, String)> = listed
        .lines
        .iter()
        .map(|d| (d.order_line_id.clone(), d.rule.clone()))
        .collect();
    assert_eq!(
        rules,
        [
            (format!("{id}-1"), "in_stock".to_string()),
            (format!("{id}-2"), "unknown_sku".to_string())
        ]
    );
}

/// (line id, accepted) of each line in the order's OR21 bodies (Mirakl names the id `id`), one
/// list per call.
async fn or21_lines(app: &TestApp, id: &str) -> Vec<Vec<(String, bool)>> {
    app.or21_bodies(id)
        .await
        .iter()
        .map(|body| {
            body["order_lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|line| {
                    (
                        line["id"].as_str().unwrap_or_default().to_string(),
                        line["accepted"].as_bool().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .collect()
}

/// (outcome, carried out?) of the order's review decisions.
async fn carried_out(app: &TestApp, id: &str) -> Vec<(Option<String>, bool)> {
    sqlx::query_as(
        "SELECT outcome, carried_out_at IS NOT NULL FROM review_decisions WHERE order_id = $1 ORDER BY review_id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("review decisions")
}

fn lines(id: &str, accepted: [bool; 2]) -> Vec<Vec<(String, bool)>> {
    vec![vec![
        (format!("{id}-1"), accepted[0]),
        (format!("{id}-2"), accepted[1]),
    ]]
}

#[sqlx::test]
async fn review_accept_is_carried_out_by_the_next_run(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sent_to_review(&app, "E2E-A", 2).await;
    assert!(
        or21_lines(&app, "E2E-A").await.is_empty(),
        "no OR21 while in review"
    );

    queue_decision(&app.pool, &decision("E2E-A", ReviewAction::Accept, None))
        .await
        .expect("decide");
    let summary = run_once(&app).await;

    assert_eq!((summary.claimed, summary.accepted), (1, 1));
    assert_eq!(app.current_status("E2E-A").await.0, "accepted");
    assert_eq!(
        or21_lines(&app, "E2E-A").await,
        lines("E2E-A", [true, true])
    );
    assert_ne!(
        app.sim.order_state("E2E-A").as_deref(),
        Some("WAITING_ACCEPTANCE")
    );
    assert_eq!(
        carried_out(&app, "E2E-A").await,
        [(Some("accepted".into()), true)]
    );
    let report = inbox::order_report(&app.pool, "E2E-A", None)
        .await
        .expect("order");
    let by: Vec<&str> = report
        .line_decisions
        .iter()
        .rev()
        .take(2)
        .map(|d| d.decided_by.as_str())
        .collect();
    assert_eq!(
        by,
        ["alice", "alice"],
        "the last claim carried out alice's decision"
    );
    assert!(
        render::order(&report, Width::Wide).contains("(accepted)"),
        "carried out, with its outcome"
    );
}

#[sqlx::test]
async fn review_refuse_refuses_the_order_at_the_marketplace(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sent_to_review(&app, "E2E-R", 2).await;

    queue_decision(&app.pool, &decision("E2E-R", ReviewAction::Refuse, None))
        .await
        .expect("decide");
    let summary = run_once(&app).await;

    assert_eq!(summary.refused, 1);
    assert_eq!(app.current_status("E2E-R").await.0, "refused");
    assert_eq!(
        or21_lines(&app, "E2E-R").await,
        lines("E2E-R", [false, false])
    );
    assert_eq!(app.sim.order_state("E2E-R").as_deref(), Some("REFUSED"));
    assert_eq!(
        app.sim.line_states("E2E-R"),
        Some(vec!["REFUSED".to_string(), "REFUSED".to_string()])
    );
    assert_eq!(
        carried_out(&app, "E2E-R").await,
        [(Some("refused".into()), true)]
    );
}

#[sqlx::test]
async fn review_accept_of_some_lines_refuses_the_others(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sent_to_review(&app, "E2E-P", 2).await;

    queue_decision(
        &app.pool,
        &decision("E2E-P", ReviewAction::Accept, Some(&["E2E-P-1"])),
    )
    .await
    .expect("decide");
    run_once(&app).await;

    assert_eq!(app.current_status("E2E-P").await.0, "accepted");
    assert_eq!(
        or21_lines(&app, "E2E-P").await,
        lines("E2E-P", [true, false])
    );
    let at_the_marketplace = app.sim.line_states("E2E-P").unwrap_or_default();
    assert_ne!(at_the_marketplace[0], "WAITING_ACCEPTANCE");
    assert_eq!(
        at_the_marketplace[1], "REFUSED",
        "the simulator refused line 2"
    );
    let report = inbox::order_report(&app.pool, "E2E-P", None)
        .await
        .expect("order");
    let states: Vec<(Option<&str>, Option<bool>)> = report
        .line_states
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|line| (line.order_line_id.as_deref(), line.accepted))
        .collect();
    assert_eq!(
        states,
        [
            (Some("E2E-P-1"), Some(true)),
            (Some("E2E-P-2"), Some(false))
        ],
        "order ID shows which line was refused"
    );
    assert!(
        render::order(&report, Width::Wide).contains("REFUSED"),
        "{}",
        render::order(&report, Width::Wide)
    );
}

#[sqlx::test]
async fn review_refuse_now_refuses_at_once_through_the_same_path(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sent_to_review(&app, "E2E-N", 2).await;

    let decided = acceptance::decide_now(
        &app.worker(),
        &CancellationToken::new(),
        &decision("E2E-N", ReviewAction::Refuse, Some(&["E2E-N-2"])),
    )
    .await
    .expect("decided and carried out");

    assert_eq!((decided.run.claimed, decided.run.accepted), (1, 1));
    let outcome = decided.outcome.as_ref().expect("a status");
    assert_eq!(
        outcome.status, "accepted",
        "line 2 refused, line 1 accepted"
    );
    assert_eq!(
        or21_lines(&app, "E2E-N").await,
        lines("E2E-N", [true, false])
    );
    assert_eq!(
        carried_out(&app, "E2E-N").await,
        [(Some("accepted".into()), true)]
    );
}

#[sqlx::test]
async fn deadline_accept_and_refuse_carry_out_their_decision_in_the_next_run(pool: PgPool) {
    for (policy, status, sent) in [("accept", "accepted", true), ("refuse", "refused", false)] {
        let app = rules_app(
            pool.clone(),
            &[("ORDER_ACCEPTANCE__RULES__ON_DEADLINE", policy)],
        )
        .await;
        let near = format!("DL-{policy}");
        let far = format!("FAR-{policy}");
        sent_to_review(&app, &near, 23).await;
        sent_to_review(&app, &far, 12).await;

        run_once(&app).await;

        assert_eq!(app.current_status(&near).await.0, status, "{policy}");
        assert_eq!(or21_lines(&app, &near).await, lines(&near, [sent, sent]));
        assert_eq!(
            review_rows(&app.pool, &near).await[0].3,
            DEADLINE_POLICY,
            "{policy}"
        );
        assert_eq!(
            carried_out(&app, &near).await,
            [(Some(status.into()), true)]
        );
        assert_eq!(app.current_status(&far).await.0, "in_review", "{policy}");
        assert!(or21_lines(&app, &far).await.is_empty());
    }
}

#[sqlx::test]
async fn deadline_review_leaves_the_order_and_one_failure_across_runs(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sent_to_review(&app, "DL-R", 23).await;

    run_once(&app).await;
    run_once(&app).await;

    assert_eq!(app.current_status("DL-R").await.0, "in_review");
    assert!(or21_lines(&app, "DL-R").await.is_empty());
    let failures = open_failures(&app.pool, "DL-R").await;
    assert_eq!(
        failures.len(),
        1,
        "one failure, not one per run: {failures:?}"
    );
    assert!(failures[0].0.contains("review refuse DL-R --note TEXT"));
}

#[sqlx::test]
async fn an_order_left_in_review_past_its_deadline_is_read_again_and_recorded_refused(
    pool: PgPool,
) {
    use marketplace_sim::ACCEPTANCE_DEADLINE_REASON;
    let app = rules_app(pool, &[]).await;
    // 25 hours old: the simulator refused it at 24 h, while our database still has it in review.
    two_line_order(&app, "DL-PAST", 25).await;
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data, placed_at) VALUES ('DL-PAST', '{\"order_id\": \"DL-PAST\"}', now() - interval '25 hours')",
    )
    .execute(&app.pool)
    .await
    .expect("order");
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status, notes) VALUES ('DL-PAST', 'pending_acceptance', 'from upstream'), ('DL-PAST', 'in_review', 'sent to review by an earlier run')",
    )
    .execute(&app.pool)
    .await
    .expect("history");

    let summary = run_once(&app).await;

    assert_eq!((summary.claimed, summary.refused), (1, 1), "{summary:?}");
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT h.reason_code FROM order_current_status c JOIN order_status_history h USING (history_id) WHERE c.order_id = 'DL-PAST' AND c.status = 'refused'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the order is refused");
    assert_eq!(reason.as_deref(), Some(ACCEPTANCE_DEADLINE_REASON));
    assert!(or21_lines(&app, "DL-PAST").await.is_empty(), "no OR21");
    let failures = open_failures(&app.pool, "DL-PAST").await;
    assert!(
        failures.len() == 1 && failures[0].0.contains("deadline passed"),
        "the missed deadline stays in the inbox: {failures:?}"
    );
}
