//! The acceptance rules in the run (issue 9): stock, reservations, per-line decisions, review
//! decisions carried out, refused and in-review outcomes. Real PostgreSQL and the simulator.

mod common;

use common::{API_KEY, TestApp, spawn_app, test_env};
use marketplace_sim::{
    ACCEPTANCE_DEADLINE_REASON, Behaviour, LineSpec, OrderSpec, Scripted, SimConfig,
};
use order_acceptance::acceptance::{self, RunSummary};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rules on, import off (orders are handed over in the database), plus `overrides`.
async fn rules_app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    rules_app_with(pool, |_| {}, overrides).await
}

/// Rules on, import off, with the simulator configured by `configure`.
async fn rules_app_with(
    pool: PgPool,
    configure: impl FnOnce(&mut SimConfig),
    overrides: &[(&str, &str)],
) -> TestApp {
    let mut env = vec![
        ("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false"),
        ("ORDER_ACCEPTANCE__RULES__ENABLED", "true"),
    ];
    env.extend_from_slice(overrides);
    spawn_app(pool, configure, &env).await
}

fn item(sku: &str, quantity: u32, unit_price: f64) -> LineSpec {
    LineSpec {
        sku: sku.into(),
        quantity,
        unit_price: Some(unit_price),
        product_sku: None,
    }
}

/// An order with exactly these lines (`ID-1`, `ID-2`...), handed to the worker.
async fn order_of(app: &TestApp, id: &str, items: Vec<LineSpec>, tax_mode: Option<&str>) {
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some(id.into()),
        items: Some(items),
        tax_mode: tax_mode.map(Into::into),
        ..OrderSpec::default()
    }]);
    app.insert_pending(id, json!({"order_id": id})).await;
}

async fn priced_stock(
    app: &TestApp,
    sku: &str,
    available: i32,
    min_price: Option<f64>,
    backorder: bool,
) {
    sqlx::query(
        "INSERT INTO acceptance_stock (sku, available, min_price, backorder) VALUES ($1, $2, $3::float8::numeric, $4)",
    )
    .bind(sku)
    .bind(available)
    .bind(min_price)
    .bind(backorder)
    .execute(&app.pool)
    .await
    .expect("stock row");
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

#[sqlx::test]
async fn a_line_in_stock_is_accepted_and_reserves_its_units(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "IN-1", Behaviour::default()).await;
    let (sku, quantity) = lines_of(&app, "IN-1").await.remove(0);
    stock(&app, Some(&sku), 5).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.in_review), (1, 0));
    let (status, note) = app.current_status("IN-1").await;
    assert_eq!(status, "accepted");
    let note = note.unwrap_or_default();
    assert!(
        note.contains(&format!(
            "Decided: Line IN-1-1: {quantity} of SKU {sku} in stock (5 available, 0 reserved)."
        )),
        "the history note says why: {note}"
    );
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
    let sent = app.or21_bodies("IN-1").await;
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
    let sent = app.or21_bodies("OUT-1").await;
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
    let sent = app.or21_bodies("REV-R").await;
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

#[sqlx::test]
async fn backorder_accepts_a_line_short_of_stock_and_still_reserves_it(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    priced_stock(&app, "BACK", 1, None, true).await;
    order_of(&app, "BO-1", vec![item("BACK", 3, 20.0)], None).await;

    assert_eq!(run_once(&app).await.accepted, 1);
    assert_eq!(decisions(&app, "BO-1").await[0].2, "backorder");
    assert_eq!(reservations(&app, "BO-1").await[0].1, 3);
}

#[sqlx::test]
async fn the_price_floor_counts_taxes_on_tax_excluded_orders(pool: PgPool) {
    let app = rules_app(pool, &[("ORDER_ACCEPTANCE__RULES__MAX_PRICE_DROP", "0.05")]).await;
    // The floor: 100 × (1 − 0.05) = 95, tax included.
    priced_stock(&app, "TV", 10, Some(100.0), false).await;
    // 90 before 13 % HST is 101.70 with it: above the floor.
    order_of(
        &app,
        "TAX-EX",
        vec![item("TV", 1, 90.0)],
        Some("TAX_EXCLUDED"),
    )
    .await;
    // 90 tax included is below it.
    order_of(
        &app,
        "TAX-IN",
        vec![item("TV", 1, 90.0)],
        Some("TAX_INCLUDED"),
    )
    .await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.in_review), (1, 1));
    assert_eq!(app.current_status("TAX-EX").await.0, "accepted");
    let (status, note) = app.current_status("TAX-IN").await;
    assert_eq!(status, "in_review");
    assert!(note.unwrap_or_default().contains("below the floor 95.00"));
    let (price, floor): (f64, f64) = sqlx::query_as(
        "SELECT unit_price::float8, floor_price::float8 FROM acceptance_decisions WHERE order_id = 'TAX-EX'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("decision");
    assert!((price - 101.7).abs() < 0.001, "{price}");
    assert!((floor - 95.0).abs() < 0.001, "{floor}");
}

/// Money is exact from the OR11 JSON to the NUMERIC columns: three units at 0.10 paid 0.30,
/// which a float divides back to 0.09999… and holds below a floor of 0.10.
#[sqlx::test]
async fn a_price_equal_to_its_floor_is_not_below_it_and_is_stored_exactly(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    priced_stock(&app, "CABLE", 10, Some(0.10), false).await;
    order_of(
        &app,
        "EXACT",
        vec![item("CABLE", 3, 0.10)],
        Some("TAX_INCLUDED"),
    )
    .await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.in_review), (1, 0));
    assert_eq!(app.current_status("EXACT").await.0, "accepted");
    let (price, floor): (String, String) = sqlx::query_as(
        "SELECT unit_price::text, floor_price::text FROM acceptance_decisions WHERE order_id = 'EXACT'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("decision");
    assert_eq!((price.as_str(), floor.as_str()), ("0.1000", "0.1000"));
}

/// Floors a decimal cannot hold do not stop the run: a negative one is no floor, a NaN or an
/// infinite one holds every price below it.
#[sqlx::test]
async fn floors_no_decimal_holds_are_judged_not_fatal(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sqlx::query(
        "INSERT INTO acceptance_stock (sku, available, min_price, backorder)
         VALUES ('NEG', 5, '-Infinity', false), ('NAN', 5, 'NaN', false), ('BIG', 5, 1e40, false)",
    )
    .execute(&app.pool)
    .await
    .expect("stock");
    order_of(&app, "F-NEG", vec![item("NEG", 1, 10.0)], None).await;
    order_of(&app, "F-NAN", vec![item("NAN", 1, 10.0)], None).await;
    order_of(&app, "F-BIG", vec![item("BIG", 1, 10.0)], None).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.in_review), (1, 2));
    assert_eq!(app.current_status("F-NEG").await.0, "accepted");
    assert_eq!(app.current_status("F-NAN").await.0, "in_review");
    assert_eq!(app.current_status("F-BIG").await.0, "in_review");
}

#[sqlx::test]
async fn an_order_above_the_total_limit_goes_to_review(pool: PgPool) {
    let app = rules_app(pool, &[("ORDER_ACCEPTANCE__RULES__MAX_ORDER_TOTAL", "100")]).await;
    priced_stock(&app, "A", 10, None, false).await;
    order_of(
        &app,
        "BIG-1",
        vec![item("A", 1, 60.0), item("A", 1, 60.0)],
        None,
    )
    .await;
    order_of(&app, "SMALL-1", vec![item("A", 1, 60.0)], None).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.in_review), (1, 1));
    assert_eq!(app.current_status("BIG-1").await.0, "in_review");
    assert_eq!(
        decisions(&app, "BIG-1").await[0].2,
        "order_total_above_limit"
    );
    assert!(
        reservations(&app, "BIG-1").await.is_empty(),
        "no stock for an order in review"
    );
}

#[sqlx::test]
async fn refused_lines_of_an_accepted_order_are_recorded(pool: PgPool) {
    let app = rules_app(pool, &[("ORDER_ACCEPTANCE__RULES__UNKNOWN_SKU", "refuse")]).await;
    priced_stock(&app, "KNOWN", 5, None, false).await;
    order_of(
        &app,
        "MIX-1",
        vec![item("KNOWN", 1, 10.0), item("GONE", 1, 10.0)],
        None,
    )
    .await;

    let summary = run_once(&app).await;
    assert_eq!(summary.accepted, 1);
    let sent = app.or21_bodies("MIX-1").await;
    assert_eq!(
        sent[0]["order_lines"],
        json!([{"id": "MIX-1-1", "accepted": true}, {"id": "MIX-1-2", "accepted": false}])
    );
    let (status, note) = app.current_status("MIX-1").await;
    assert_eq!(status, "accepted");
    assert!(note.unwrap_or_default().contains("Lines refused: MIX-1-2."));
    let lines: Value = sqlx::query_scalar(
        "SELECT lines FROM order_status_history WHERE order_id = 'MIX-1' AND status = 'accepted'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("lines");
    assert_eq!(lines[0]["accepted"], json!(true));
    assert_eq!(lines[1]["state"], "REFUSED");
    assert_eq!(lines[1]["accepted"], json!(false));
    let kept = reservations(&app, "MIX-1").await;
    assert_eq!(
        kept.len(),
        1,
        "only the accepted line holds stock: {kept:?}"
    );
}

#[sqlx::test]
async fn a_certain_or21_failure_gives_the_stock_back(pool: PgPool) {
    // Partial acceptance switched off at the marketplace: a mixed OR21 is refused outright.
    let app = rules_app_with(
        pool,
        |sim| sim.partial_acceptance = false,
        &[("ORDER_ACCEPTANCE__RULES__UNKNOWN_SKU", "refuse")],
    )
    .await;
    priced_stock(&app, "KNOWN", 5, None, false).await;
    order_of(
        &app,
        "PART-1",
        vec![item("KNOWN", 1, 10.0), item("GONE", 1, 10.0)],
        None,
    )
    .await;

    let summary = run_once(&app).await;
    assert_eq!(summary.failed, 1);
    let (_, _, released, reason) = reservations(&app, "PART-1").await.remove(0);
    assert!(released);
    assert_eq!(reason.as_deref(), Some("or21_failed"));
}

#[sqlx::test]
async fn an_order_the_marketplace_refused_at_its_deadline_is_recorded_refused_and_releases_stock(
    pool: PgPool,
) {
    let app = rules_app_with(
        pool,
        |sim| sim.acceptance_deadline = std::time::Duration::from_secs(3600),
        &[],
    )
    .await;
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some("LATE-1".into()),
        created_at: Some(chrono::Utc::now() - chrono::Duration::hours(2)),
        items: Some(vec![item("A", 1, 10.0)]),
        ..OrderSpec::default()
    }]);
    app.insert_pending("LATE-1", json!({"order_id": "LATE-1"}))
        .await;
    // A replica reserved the line and died before its OR21; the deadline passed meanwhile.
    sqlx::query(
        "INSERT INTO stock_reservations (order_id, order_line_id, sku, quantity) VALUES ('LATE-1', 'LATE-1-1', 'A', 1)",
    )
    .execute(&app.pool)
    .await
    .expect("reservation");

    let summary = run_once(&app).await;
    assert_eq!(summary.refused, 1);
    assert_eq!(app.or21_calls("LATE-1"), 0);
    let (_, _, released, reason) = reservations(&app, "LATE-1").await.remove(0);
    assert!(released, "a refused order gives its stock back");
    assert_eq!(reason.as_deref(), Some("refused"));
    let (status, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT status, reason_code FROM order_status_history WHERE order_id = 'LATE-1' ORDER BY history_id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("outcome");
    assert_eq!(status, "refused");
    assert_eq!(reason.as_deref(), Some(ACCEPTANCE_DEADLINE_REASON));
}

/// Four replicas decide 200 orders for one SKU with 50 units at once: exactly 50 lines are
/// accepted, the rest wait in review, and no unit is promised twice. Twenty rounds, fresh
/// orders each time.
#[sqlx::test]
async fn four_runs_at_once_never_over_commit(pool: PgPool) {
    let app = rules_app(
        pool,
        &[
            ("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "25"),
            ("ORDER_ACCEPTANCE__ACCEPTANCE__CONCURRENCY", "16"),
            ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "20ms"),
        ],
    )
    .await;
    for round in 0..20 {
        let sku = format!("HOT-{round}");
        priced_stock(&app, &sku, 50, None, false).await;
        let ids: Vec<String> = (0..200).map(|n| format!("R{round}-{n:03}")).collect();
        app.sim.add_orders(
            ids.iter()
                .map(|id| OrderSpec {
                    order_id: Some(id.clone()),
                    items: Some(vec![item(&sku, 1, 10.0)]),
                    ..OrderSpec::default()
                })
                .collect(),
        );
        insert_pending_many(&app, &ids).await;

        let workers = [app.worker(), app.worker(), app.worker(), app.worker()];
        let stop = CancellationToken::new();
        let (a, b, c, d) = tokio::join!(
            acceptance::run(&workers[0], &stop),
            acceptance::run(&workers[1], &stop),
            acceptance::run(&workers[2], &stop),
            acceptance::run(&workers[3], &stop),
        );
        let runs = [a, b, c, d].map(|run| run.expect("run completes"));
        let accepted: u64 = runs.iter().map(|r| r.accepted).sum();
        let in_review: u64 = runs.iter().map(|r| r.in_review).sum();
        assert_eq!((accepted, in_review), (50, 150), "round {round}");

        let (reserved, lines): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(quantity), 0)::int8, count(*) FROM stock_reservations WHERE sku = $1 AND released_at IS NULL",
        )
        .bind(&sku)
        .fetch_one(&app.pool)
        .await
        .expect("reservations");
        assert_eq!((reserved, lines), (50, 50), "round {round}: over-commit");
        let accepted_at_marketplace = ids
            .iter()
            .filter(|id| app.sim.order_state(id).as_deref() != Some("WAITING_ACCEPTANCE"))
            .count();
        assert_eq!(accepted_at_marketplace, 50, "round {round}");
    }
}

/// Hands orders to the worker in one transaction, as an upstream system would.
async fn insert_pending_many(app: &TestApp, ids: &[String]) {
    let raws: Vec<Value> = ids.iter().map(|id| json!({"order_id": id})).collect();
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO orders (order_id, raw_order_data) SELECT * FROM unnest($1::text[], $2::jsonb[])")
        .bind(ids)
        .bind(&raws)
        .execute(&mut *tx)
        .await
        .expect("orders");
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status, notes) SELECT unnest($1::text[]), 'pending_acceptance', 'from upstream'",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await
    .expect("pending rows");
    tx.commit().await.expect("commit");
}

// The binary: `check` and start-up ----------------------------------------------------------

/// The URL of this test's own database, for the child process.
fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("scripts/test exports DATABASE_URL");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    let database = pool
        .connect_options()
        .get_database()
        .unwrap_or("postgres")
        .to_string();
    url.set_path(&database);
    url.to_string()
}

/// Runs `order-acceptance ARGS` with the test settings, rules on, and `overrides`; returns the
/// exit code and everything it printed.
async fn binary(app: &TestApp, args: &[&str], overrides: &[(&str, &str)]) -> (i32, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-acceptance"))
        .args(args)
        .env_clear()
        .envs(test_env(&app.sim.url(), API_KEY))
        .env("DATABASE_URL", database_url(&app.pool))
        .env("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false")
        .env("ORDER_ACCEPTANCE__RULES__ENABLED", "true")
        .env("ORDER_ACCEPTANCE__LOG__FORMAT", "json")
        .envs(overrides.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[sqlx::test]
async fn a_missing_stock_relation_is_refused_by_check_and_at_start_up(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    one_line_order(&app, "WAIT-1", Behaviour::default()).await;
    let missing = [("ORDER_ACCEPTANCE__RULES__STOCK_RELATION", "no_such_stock")];

    let (code, text) = binary(&app, &["check"], &missing).await;
    assert_eq!(code, 1, "{text}");
    let stock_line = text
        .lines()
        .find(|line| line.starts_with("✗ stock"))
        .unwrap_or_else(|| panic!("no failed stock line in {text}"));
    assert!(stock_line.contains("no_such_stock") && stock_line.contains("does not exist"));

    let (code, text) = binary(&app, &["--once"], &missing).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the stock relation no_such_stock"), "{text}");
    assert_eq!(app.current_status("WAIT-1").await.0, "pending_acceptance");
    assert_eq!(app.sim.stats().requests.get("OR21"), None);
}

#[sqlx::test]
async fn a_stock_relation_without_available_is_refused_by_check(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    sqlx::query("CREATE VIEW thin_stock AS SELECT sku FROM acceptance_stock")
        .execute(&app.pool)
        .await
        .expect("view");
    let (code, text) = binary(
        &app,
        &["check"],
        &[("ORDER_ACCEPTANCE__RULES__STOCK_RELATION", "thin_stock")],
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("thin_stock") && text.contains("has no column available"),
        "{text}"
    );

    sqlx::query(
        "CREATE VIEW text_stock AS SELECT sku, available::text AS available FROM acceptance_stock",
    )
    .execute(&app.pool)
    .await
    .expect("view");
    let (code, text) = binary(
        &app,
        &["check"],
        &[("ORDER_ACCEPTANCE__RULES__STOCK_RELATION", "text_stock")],
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("text_stock") && text.contains("wrong type: available"),
        "{text}"
    );

    let (code, text) = binary(&app, &["check"], &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("✓ stock         acceptance_stock has sku, available, min_price, backorder"),
        "{text}"
    );
}

#[sqlx::test]
async fn unusable_stock_rows_are_warned_about_once_per_run(pool: PgPool) {
    let app = rules_app(pool, &[("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "1")]).await;
    order_of(&app, "W-1", vec![item("NEG", 1, 10.0)], None).await;
    order_of(&app, "W-2", vec![item("NEG", 1, 10.0)], None).await;
    stock(&app, Some("NEG"), -1).await;
    stock(&app, None, 4).await;

    let (code, text) = binary(&app, &["--once"], &[]).await;
    assert_eq!(code, 0, "{text}");
    let warnings: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("are ignored"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("\"rows\":2"), "{}", warnings[0]);
    assert_eq!(app.current_status("W-1").await.0, "in_review");
    assert_eq!(app.current_status("W-2").await.0, "in_review");
}

#[sqlx::test]
async fn a_transient_or21_failure_keeps_the_reservation_for_the_retry(pool: PgPool) {
    let app = rules_app(pool, &[]).await;
    priced_stock(&app, "A", 1, None, false).await;
    app.sim.add_orders(vec![OrderSpec {
        order_id: Some("BUSY-1".into()),
        items: Some(vec![item("A", 1, 10.0)]),
        // Both attempts of the first run's OR21 (the test settings' retry_attempts = 2).
        behaviour: Behaviour {
            or21: vec![Scripted::Status503; 2],
            ..Behaviour::default()
        },
        ..OrderSpec::default()
    }]);
    app.insert_pending("BUSY-1", json!({"order_id": "BUSY-1"}))
        .await;

    let first = run_once(&app).await;
    assert_eq!((first.failed, first.retry_scheduled), (1, 1));
    let kept = reservations(&app, "BUSY-1").await;
    assert_eq!(kept.len(), 1);
    assert!(
        !kept[0].2,
        "a transient failure keeps the stock for the retry"
    );

    app.let_time_pass().await;
    let second = run_once(&app).await;
    assert_eq!(second.accepted, 1);
    let after = reservations(&app, "BUSY-1").await;
    assert_eq!(
        after.len(),
        1,
        "the retry reuses the reservation: {after:?}"
    );
    assert_eq!(
        decisions(&app, "BUSY-1").await.len(),
        2,
        "one decision per claim"
    );
}

/// The view docs/CONFIGURATION.md shows, over a shop SKU → variant → components inventory.
#[sqlx::test]
async fn a_view_over_an_inventory_schema_serves_as_the_stock(pool: PgPool) {
    let app = rules_app(
        pool,
        &[
            ("ORDER_ACCEPTANCE__RULES__STOCK_RELATION", "inventory_stock"),
            ("ORDER_ACCEPTANCE__RULES__INSUFFICIENT_STOCK", "refuse"),
        ],
    )
    .await;
    sqlx::raw_sql(
        r#"
        CREATE TABLE shop_sku_map (shop_sku text, variant_id int);
        CREATE TABLE variant_components (variant_id int, component_id int, qty_per_variant int);
        CREATE TABLE components (component_id int, stock int);
        CREATE TABLE variants (variant_id int, min_price numeric, backorder boolean);
        INSERT INTO variants VALUES (1, 5.00, false);
        INSERT INTO shop_sku_map VALUES ('BUNDLE', 1);
        -- Two of component 10 and one of component 11 per bundle: 7 / 2 and 3 / 1 make 3.
        INSERT INTO variant_components VALUES (1, 10, 2), (1, 11, 1);
        INSERT INTO components VALUES (10, 7), (11, 3);
        CREATE VIEW inventory_stock AS
        SELECT m.shop_sku                                       AS sku,
               min(floor(c.stock::numeric / vc.qty_per_variant))::integer AS available,
               v.min_price,
               v.backorder
        FROM shop_sku_map m
        JOIN variants v             ON v.variant_id = m.variant_id
        JOIN variant_components vc  ON vc.variant_id = m.variant_id
        JOIN components c           ON c.component_id = vc.component_id
        WHERE vc.qty_per_variant > 0
        GROUP BY m.shop_sku, v.min_price, v.backorder;
        "#,
    )
    .execute(&app.pool)
    .await
    .expect("inventory schema and view");
    order_of(&app, "V-1", vec![item("BUNDLE", 3, 10.0)], None).await;
    order_of(&app, "V-2", vec![item("BUNDLE", 1, 10.0)], None).await;

    let summary = run_once(&app).await;
    assert_eq!((summary.accepted, summary.refused), (1, 1));
    assert_eq!(app.current_status("V-1").await.0, "accepted");
    assert_eq!(decisions(&app, "V-2").await[0].2, "insufficient_stock");
    let (available, reserved): (i32, i32) = sqlx::query_as(
        "SELECT available, reserved FROM acceptance_decisions WHERE order_id = 'V-2'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("decision");
    assert_eq!((available, reserved), (3, 3));
}

#[sqlx::test]
async fn a_reused_reservation_is_renewed_so_its_ttl_counts_from_the_latest_claim(pool: PgPool) {
    use order_acceptance::db::stock::{Reservation, reserve};
    let app = rules_app(pool, &[]).await;
    app.insert_pending("TTL-1", json!({"order_id": "TTL-1"}))
        .await;
    sqlx::query(
        "INSERT INTO stock_reservations (order_id, order_line_id, sku, quantity, created_at) VALUES ('TTL-1', 'TTL-1-1', 'A', 1, now() - interval '3 days')",
    )
    .execute(&app.pool)
    .await
    .expect("old reservation");

    let mut conn = app.pool.acquire().await.expect("connection");
    let again = Reservation {
        order_id: "TTL-1",
        order_line_id: "TTL-1-1",
        sku: "A",
        quantity: 2,
    };
    reserve(&mut conn, "default", &[again])
        .await
        .expect("reserve");

    let (count, quantity, fresh): (i64, i32, bool) = sqlx::query_as(
        "SELECT count(*), max(quantity), bool_and(created_at > now() - interval '1 minute') FROM stock_reservations WHERE order_id = 'TTL-1' AND released_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("reservations");
    assert_eq!((count, quantity, fresh), (1, 2, true));
}
