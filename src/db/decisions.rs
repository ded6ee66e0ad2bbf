//! Why each line was accepted, refused or sent to review (`acceptance_decisions`), and the
//! people's decisions the run carries out (`review_decisions`).

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

/// One line's decision, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LineDecisionRecord {
    pub order_id: String,
    pub order_line_id: String,
    pub attempt: i32,
    /// accept, refuse or review.
    pub action: &'static str,
    pub rule: &'static str,
    pub sku: Option<String>,
    pub quantity: Option<i32>,
    pub available: Option<i64>,
    pub reserved: Option<i64>,
    pub unit_price: Option<Decimal>,
    pub floor_price: Option<Decimal>,
    pub reason: String,
    /// `rules`, or the person whose review decision this carries out.
    pub decided_by: String,
}

pub async fn insert_line_decisions(
    conn: &mut PgConnection,
    shop: &str,
    decisions: &[LineDecisionRecord],
) -> Result<(), sqlx::Error> {
    if decisions.is_empty() {
        return Ok(());
    }
    let column =
        |f: fn(&LineDecisionRecord) -> &str| -> Vec<&str> { decisions.iter().map(f).collect() };
    let orders = column(|d| &d.order_id);
    let lines = column(|d| &d.order_line_id);
    let actions = column(|d| d.action);
    let rules = column(|d| d.rule);
    let reasons = column(|d| &d.reason);
    let deciders = column(|d| &d.decided_by);
    let attempts: Vec<i32> = decisions.iter().map(|d| d.attempt).collect();
    let skus: Vec<Option<&str>> = decisions.iter().map(|d| d.sku.as_deref()).collect();
    let quantities: Vec<Option<i32>> = decisions.iter().map(|d| d.quantity).collect();
    let available: Vec<Option<i64>> = decisions.iter().map(|d| d.available).collect();
    let reserved: Vec<Option<i64>> = decisions.iter().map(|d| d.reserved).collect();
    let prices: Vec<Option<Decimal>> = decisions.iter().map(|d| d.unit_price).collect();
    let floors: Vec<Option<Decimal>> = decisions.iter().map(|d| d.floor_price).collect();
    sqlx::query(
        r#"
        INSERT INTO acceptance_decisions
            (shop, order_id, order_line_id, attempt, action, rule, sku, quantity, available,
             reserved, unit_price, floor_price, reason, decided_by)
        SELECT $14, order_id, order_line_id, attempt, action, rule, sku, quantity,
               least(available, 2147483647)::int, least(reserved, 2147483647)::int, unit_price, floor_price,
               reason, decided_by
        FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                    $7::int[], $8::int8[], $9::int8[], $10::numeric[], $11::numeric[], $12::text[],
                    $13::text[])
             AS d(order_id, order_line_id, attempt, action, rule, sku, quantity, available,
                  reserved, unit_price, floor_price, reason, decided_by)
        "#,
    )
    .bind(&orders)
    .bind(&lines)
    .bind(&attempts)
    .bind(&actions)
    .bind(&rules)
    .bind(&skus)
    .bind(&quantities)
    .bind(&available)
    .bind(&reserved)
    .bind(&prices)
    .bind(&floors)
    .bind(&reasons)
    .bind(&deciders)
    .bind(shop)
    .execute(conn)
    .await?;
    Ok(())
}

/// The reasons of the line decisions made in these claims (order, attempt), each order's joined
/// in line order; orders decided without rules or a person have none.
pub async fn reasons_of_claims(
    pool: &PgPool,
    shop: &str,
    claims: &[(&str, i32)],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = claims.iter().map(|(order, _)| *order).collect();
    let attempts: Vec<i32> = claims.iter().map(|(_, attempt)| *attempt).collect();
    sqlx::query_as(
        r#"
        SELECT d.order_id, string_agg(d.reason, ' ' ORDER BY d.decision_id)
        FROM acceptance_decisions d
        JOIN unnest($1::text[], $2::int[]) AS c(order_id, attempt)
          ON c.order_id = d.order_id AND c.attempt = d.attempt
        WHERE d.shop = $3
        GROUP BY d.order_id
        "#,
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Marks the pending decisions of these orders (order, outcome status) carried out.
pub async fn mark_reviews_carried_out(
    conn: &mut PgConnection,
    shop: &str,
    outcomes: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = outcomes.iter().map(|(order, _)| *order).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|(_, status)| *status).collect();
    sqlx::query(
        r#"
        UPDATE review_decisions r
        SET carried_out_at = now(), outcome = x.status
        FROM unnest($1::text[], $2::text[]) AS x(order_id, status)
        WHERE r.shop = $3 AND r.order_id = x.order_id AND r.carried_out_at IS NULL
        "#,
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(shop)
    .execute(conn)
    .await?;
    Ok(())
}
