//! The acceptance rules in the run (issue 9): stock, reservations, per-line decisions, review
//! decisions carried out, refused and in-review outcomes. Real PostgreSQL and the simulator.

mod common;

use common::{TestApp, spawn_app};
use order_acceptance::acceptance::{self, RunSummary};
use order_acceptance::sim::{Behaviour, OrderSpec};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rules on, import off (orders are handed over in the database), plus `overrides`.
async fn rules_app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false"),
        ("ORDER_ACCEPTANCE__RULES__ENABLED", "true"),
    ];
    env.extend_from_slice(overrides);
    spawn_app(pool, |_| {}, &env).await
}

/// An order of one line in the simulator, handed to the worker as an upstream system would.
async fn one_line_order(app: &TestApp, id: &str, behaviour: Behaviour) {
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some(id.into()),
        lines: Some(1),
        behaviour,
        ..OrderSpec::default()
    }]);
    app.insert_pending(id, json!({"order_id": id})).await;
}

/// The (offer SKU, quantity) of each line of a simulated order, as OR11 shows them.
async fn lines_of(app: &TestApp, id: &str) -> Vec<(String, u32)> {
    let orders = app
        .worker()
        .client
        .orders_by_ids(&[id.to_string()])
        .await
        .expect("OR11");
    orders[0]
        .order_lines
        .iter()
        .map(|line| {
            let sku = line
                .offer_sku
                .clone()
                .expect("the simulator sets offer_sku");
            (sku, line.quantity.expect("the simulator sets quantity"))
        })
        .collect()
}

async fn stock(app: &TestApp, sku: Option<&str>, available: i32) {
    sqlx::query("INSERT INTO acceptance_stock (sku, available) VALUES ($1, $2)")
        .bind(sku)
        .bind(available)
        .execute(&app.pool)
        .await
        .expect("stock row");
}

async fn run_once(app: &TestApp) -> RunSummary {
    acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run completes")
}

/// (line, action, rule, decided_by) of an order's decisions, oldest first.
async fn decisions(app: &TestApp, id: &str) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT order_line_id, action, rule, decided_by FROM acceptance_decisions WHERE order_id = $1 ORDER BY decision_id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("decisions")
}

/// (sku, quantity, released?, release_reason) of an order's reservations.
async fn reservations(app: &TestApp, id: &str) -> Vec<(String, i32, bool, Option<String>)> {
    sqlx::query_as(
        "SELECT sku, quantity, released_at IS NOT NULL, release_reason FROM stock_reservations WHERE order_id = $1 ORDER BY reservation_id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("reservations")
}

/// The OR21 bodies the worker sent for an order, from its api_calls rows.
async fn or21_bodies(app: &TestApp, id: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT request_payload FROM api_calls WHERE endpoint = 'OR21' AND related_id = $1 ORDER BY call_id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("OR21 calls")
}

#[sqlx::test]
async fn a_line_in_stock_is_accepted_and_reserves_its_units(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "IN-1", Behaviour::default()).await;
    let (sku, quantity) = lines_of(&app, "IN-1").await.remove(0);
    stock(&app, Some(&sku), 5).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.in_review), (1, 0));
    assert_eq!(app.current_status("IN-1").await.0, "accepted");
    let decided = decisions(&app, "IN-1").await;
    assert_eq!(decided.len(), 1);
    assert_eq!(
        (
            decided[0].1.as_str(),
            decided[0].2.as_str(),
            decided[0].3.as_str()
        ),
        ("accept", "in_stock", "rules")
    );
    let (reserved_sku, reserved, released, _) = reservations(&app, "IN-1").await.remove(0);
    assert_eq!(
        (reserved_sku, reserved, released),
        (sku, quantity as i32, false)
    );
    let sent = or21_bodies(&app, "IN-1").await;
    assert_eq!(sent[0]["order_lines"][0]["accepted"], json!(true));
}

#[sqlx::test]
async fn an_unknown_sku_sends_the_order_to_review_without_or21(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "UNK-1", Behaviour::default()).await;
    let (sku, _) = lines_of(&app, "UNK-1").await.remove(0);

    let summary = run_once(&app).await;
    assert_eq!((summary.claimed, summary.in_review), (1, 1));
    assert_eq!(app.or21_calls("UNK-1"), 0, "no OR21 for an order in review");
    let (status, note) = app.current_status("UNK-1").await;
    assert_eq!(status, "in_review");
    let note = note.unwrap_or_default();
    assert!(
        note.contains("UNK-1-1") && note.contains(&sku) && note.contains("acceptance_stock"),
        "{note}"
    );
    let lines: Value = sqlx::query_scalar(
        "SELECT lines FROM order_status_history WHERE order_id = 'UNK-1' AND status = 'in_review'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("lines");
    assert_eq!(lines[0]["rule"], "unknown_sku");
    assert_eq!(
        decisions(&app, "UNK-1").await[0].2,
        "unknown_sku",
        "the decision row says why"
    );
    assert!(reservations(&app, "UNK-1").await.is_empty());
    assert_eq!(
        run_once(&app).await.claimed,
        0,
        "an order in review is not claimed"
    );
}

#[sqlx::test]
async fn insufficient_stock_set_to_refuse_refuses_the_order_at_the_marketplace(pool: PgPool) {
    let app = rules_app(
        pool,
        &[("ORDER_ACCEPTANCE__RULES__INSUFFICIENT_STOCK", "refuse")],
    )
    .await;
    one_line_order(&app, "OUT-1", Behaviour::default()).await;
    let (sku, _) = lines_of(&app, "OUT-1").await.remove(0);
    stock(&app, Some(&sku), 0).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.refused, summary.accepted), (1, 0));
    let sent = or21_bodies(&app, "OUT-1").await;
    assert_eq!(sent[0]["order_lines"][0]["accepted"], json!(false));
    assert_eq!(app.sim.order_state("OUT-1").as_deref(), Some("REFUSED"));
    assert_eq!(app.current_status("OUT-1").await.0, "refused");
    assert_eq!(decisions(&app, "OUT-1").await[0].2, "insufficient_stock");
    assert!(reservations(&app, "OUT-1").await.is_empty());
}

#[sqlx::test]
async fn an_order_cancelled_after_acceptance_gives_its_stock_back(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    let behaviour = Behaviour {
        cancel_after_accept: true,
        ..Behaviour::default()
    };
    one_line_order(&app, "CAN-1", behaviour).await;
    let (sku, _) = lines_of(&app, "CAN-1").await.remove(0);
    stock(&app, Some(&sku), 5).await;

    let summary = run_once(&app).await;
    assert_eq!(summary.cancelled, 1);
    let (_, _, released, reason) = reservations(&app, "CAN-1").await.remove(0);
    assert!(released);
    assert_eq!(reason.as_deref(), Some("cancelled"));
}

/// A replica reserved the line, then died before its OR21: the next claim reuses that
/// reservation. With one unit in stock and that unit held by the order itself, counting the
/// order's own reservation against it would send it to review.
#[sqlx::test]
async fn a_claim_after_a_crash_reuses_the_reservation_it_finds(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "CRASH-1", Behaviour::default()).await;
    let (sku, quantity) = lines_of(&app, "CRASH-1").await.remove(0);
    stock(&app, Some(&sku), quantity as i32).await;
    let left_behind: i64 = sqlx::query_scalar(
        "INSERT INTO stock_reservations (order_id, order_line_id, sku, quantity) VALUES ('CRASH-1', 'CRASH-1-1', $1, $2) RETURNING reservation_id",
    )
    .bind(&sku)
    .bind(quantity as i32)
    .fetch_one(&app.pool)
    .await
    .expect("reservation of the dead replica");

    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    let open: Vec<i64> = sqlx::query_scalar(
        "SELECT reservation_id FROM stock_reservations WHERE order_id = 'CRASH-1' AND released_at IS NULL",
    )
    .fetch_all(&app.pool)
    .await
    .expect("open reservations");
    assert_eq!(
        open,
        [left_behind],
        "the same reservation, not a second one"
    );
}

#[sqlx::test]
async fn unusable_stock_rows_count_as_unknown(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "NEG-1", Behaviour::default()).await;
    let (sku, _) = lines_of(&app, "NEG-1").await.remove(0);
    stock(&app, Some(&sku), -3).await;
    stock(&app, None, 7).await;

    let summary = run_once(&app).await;
    assert_eq!(summary.in_review, 1);
    assert_eq!(decisions(&app, "NEG-1").await[0].2, "unknown_sku");
}

/// What `review accept|refuse` leaves for the run: the decision and a pending_acceptance row,
/// written together.
async fn decide_in_review(app: &TestApp, id: &str, action: &str, lines: Option<Vec<String>>) {
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO review_decisions (order_id, action, lines, note, decided_by) VALUES ($1, $2, $3, 'checked the shelf', 'alice')",
    )
    .bind(id)
    .bind(action)
    .bind(lines)
    .execute(&mut *tx)
    .await
    .expect("review decision");
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status, notes) VALUES ($1, 'pending_acceptance', 'review decision')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .expect("pending row");
    tx.commit().await.expect("commit");
}

async fn review_outcome(app: &TestApp, id: &str) -> (Option<String>, bool) {
    sqlx::query_as(
        "SELECT outcome, carried_out_at IS NOT NULL FROM review_decisions WHERE order_id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("review decision")
}

#[sqlx::test]
async fn a_person_accepting_an_order_in_review_is_carried_out_by_the_next_run(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "REV-A", Behaviour::default()).await;
    assert_eq!(run_once(&app).await.in_review, 1, "unknown SKU: review");

    decide_in_review(&app, "REV-A", "accept", None).await;
    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    assert_eq!(app.current_status("REV-A").await.0, "accepted");
    assert_eq!(app.or21_calls("REV-A"), 1);
    let last = decisions(&app, "REV-A").await.pop().expect("a decision");
    assert_eq!(
        (last.1.as_str(), last.2.as_str(), last.3.as_str()),
        ("accept", "review_decision", "alice")
    );
    // The person overrides the count: the accepted line reserves stock the relation lacks.
    assert_eq!(reservations(&app, "REV-A").await.len(), 1);
    assert_eq!(
        review_outcome(&app, "REV-A").await,
        (Some("accepted".into()), true)
    );
}

#[sqlx::test]
async fn a_person_refusing_an_order_in_review_refuses_it_at_the_marketplace(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "REV-R", Behaviour::default()).await;
    run_once(&app).await;

    decide_in_review(&app, "REV-R", "refuse", None).await;
    let summary = run_once(&app).await;
    assert_eq!(summary.refused, 1);
    let sent = or21_bodies(&app, "REV-R").await;
    assert_eq!(sent[0]["order_lines"][0]["accepted"], json!(false));
    assert_eq!(app.current_status("REV-R").await.0, "refused");
    assert_eq!(
        review_outcome(&app, "REV-R").await,
        (Some("refused".into()), true)
    );
}

#[sqlx::test]
async fn with_rules_off_a_review_decision_still_replaces_them(pool: PgPool) {
    let app = rules_app(pool, &[("ORDER_ACCEPTANCE__RULES__ENABLED", "false")]).await;
    one_line_order(&app, "OFF-1", Behaviour::default()).await;
    one_line_order(&app, "OFF-2", Behaviour::default()).await;
    // OFF-1 was in review when the rules were on.
    sqlx::query("INSERT INTO order_status_history (order_id, status, notes) VALUES ('OFF-1', 'in_review', 'earlier')")
        .execute(&app.pool)
        .await
        .expect("in review");
    decide_in_review(&app, "OFF-1", "refuse", None).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.refused, summary.accepted), (1, 1));
    assert_eq!(app.current_status("OFF-1").await.0, "refused");
    assert_eq!(app.current_status("OFF-2").await.0, "accepted");
    assert!(
        decisions(&app, "OFF-2").await.is_empty(),
        "rules off: no decision rows, as before"
    );
}
