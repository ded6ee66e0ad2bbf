//! The review queue (migration 3): orders in review, the line decisions that sent them there,
//! and the decisions people queue for the next run in `review_decisions`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::{OrderKey, key_columns};

/// One row of the `orders_in_review` view.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InReviewOrder {
    pub shop: String,
    pub order_id: String,
    pub order_created_at: DateTime<Utc>,
    pub in_review_since: DateTime<Utc>,
    /// `marketplace.acceptance_window` after the marketplace created the order: it refuses the
    /// order after that.
    pub deadline: DateTime<Utc>,
    /// The note of the history row that put the order in review.
    pub notes: Option<String>,
}

impl InReviewOrder {
    pub fn key(&self) -> OrderKey {
        OrderKey {
            shop: self.shop.clone(),
            order_id: self.order_id.clone(),
        }
    }
}

/// One row of `acceptance_decisions`: why a line was accepted, refused or sent to review.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LineDecision {
    pub decision_id: i64,
    pub shop: String,
    pub order_id: String,
    pub order_line_id: String,
    pub attempt: Option<i32>,
    pub action: String,
    pub rule: String,
    pub sku: Option<String>,
    pub quantity: Option<i32>,
    pub available: Option<i32>,
    pub reserved: Option<i32>,
    /// `numeric` as text, so money keeps its exact digits.
    pub unit_price: Option<String>,
    pub floor_price: Option<String>,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
}

/// One row of `review_decisions`: what a person (or the deadline policy) decided.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReviewDecision {
    pub review_id: i64,
    pub shop: String,
    pub order_id: String,
    pub action: String,
    /// The lines the action names; `None`: all of them.
    pub lines: Option<Vec<String>>,
    pub note: Option<String>,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub carried_out_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// A decision to store.
#[derive(Debug, Clone)]
pub struct NewReviewDecision<'a> {
    pub shop: &'a str,
    pub order_id: &'a str,
    /// `accept` or `refuse`.
    pub action: &'a str,
    pub lines: Option<&'a [String]>,
    pub note: Option<&'a str>,
    pub decided_by: &'a str,
}

/// A line as the outcome saw it (`order_status_history.lines`). Every field is optional: the
/// column is JSON, and a display must not fail on a row another version wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LineState {
    pub order_line_id: Option<String>,
    pub offer_sku: Option<String>,
    pub quantity: Option<i64>,
    pub state: Option<String>,
    pub accepted: Option<bool>,
}

/// Each configured shop's acceptance window: deadlines are counted with the configured window,
/// not the one a run last wrote for the views (`shops`), which counts for a shop not listed.
pub type ShopWindows<'a> = &'a [(&'a str, Duration)];

/// Orders in review (of `shop`, or of every shop), oldest marketplace creation first.
pub async fn orders_in_review(
    pool: &PgPool,
    shop: Option<&str>,
    windows: ShopWindows<'_>,
) -> Result<Vec<InReviewOrder>, sqlx::Error> {
    let (shops, secs): (Vec<&str>, Vec<f64>) = windows
        .iter()
        .map(|(shop, window)| (*shop, window.as_secs_f64()))
        .unzip();
    sqlx::query_as(
        "SELECT r.shop, r.order_id, r.order_created_at, r.in_review_since,
                coalesce(r.order_created_at + make_interval(secs => w.secs), r.deadline) AS deadline,
                r.notes
         FROM orders_in_review r
         LEFT JOIN unnest($1::text[], $2::float8[]) AS w(shop, secs) ON w.shop = r.shop
         WHERE $3::text IS NULL OR r.shop = $3
         ORDER BY r.order_created_at, r.shop, r.order_id",
    )
    .bind(&shops)
    .bind(&secs)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Orders of `shop` in review whose deadline (`window` after creation) is at most `margin`
/// after `now`, oldest first.
pub async fn orders_in_review_near_deadline(
    pool: &PgPool,
    shop: &str,
    now: DateTime<Utc>,
    margin: Duration,
    window: Duration,
) -> Result<Vec<InReviewOrder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT shop, order_id, order_created_at, in_review_since,
                order_created_at + make_interval(secs => $3) AS deadline, notes
         FROM orders_in_review
         WHERE shop = $4
           AND order_created_at + make_interval(secs => $3) <= $1 + make_interval(secs => $2)
         ORDER BY order_created_at, order_id",
    )
    .bind(now)
    .bind(margin.as_secs_f64())
    .bind(window.as_secs_f64())
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Gives orders still `in_review` a `pending_acceptance` row, so the next claim reads their state
/// at the marketplace; returns how many. Their status rows are locked first, as a person's
/// decision locks them, so an order decided meanwhile is left alone.
pub async fn requeue_in_review(
    pool: &PgPool,
    shop: &str,
    order_ids: &[String],
    note: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        r#"
        WITH still_in_review AS (
            SELECT order_id FROM order_current_status
            WHERE shop = $3 AND order_id = ANY($1) AND status = 'in_review'
            ORDER BY order_id
            FOR UPDATE
        )
        INSERT INTO order_status_history (shop, order_id, status, notes)
        SELECT $3, order_id, 'pending_acceptance', $2 FROM still_in_review
        "#,
    )
    .bind(order_ids)
    .bind(note)
    .bind(shop)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// How many orders are in review.
pub async fn count_in_review(pool: &PgPool, shop: Option<&str>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM order_current_status
         WHERE status = 'in_review' AND ($1::text IS NULL OR shop = $1)",
    )
    .bind(shop)
    .fetch_one(pool)
    .await
}

/// The line decisions of each order's latest claim: those made since its last `accepting` row,
/// which is what put an order in review.
pub async fn latest_line_decisions(
    pool: &PgPool,
    orders: &[OrderKey],
) -> Result<Vec<LineDecision>, sqlx::Error> {
    let (shops, ids) = key_columns(orders);
    sqlx::query_as(
        r#"SELECT d.decision_id, d.shop, d.order_id, d.order_line_id, d.attempt, d.action, d.rule,
                  d.sku, d.quantity, d.available, d.reserved, d.unit_price::text AS unit_price,
                  d.floor_price::text AS floor_price, d.reason, d.decided_by, d.decided_at
           FROM acceptance_decisions d
           JOIN unnest($1::text[], $2::text[]) AS k(shop, order_id)
             ON k.shop = d.shop AND k.order_id = d.order_id
           WHERE d.decided_at >= coalesce(
                   (SELECT max(h."timestamp") FROM order_status_history h
                    WHERE h.shop = d.shop AND h.order_id = d.order_id AND h.status = 'accepting'),
                   '-infinity')
           ORDER BY d.shop, d.order_id, d.order_line_id, d.decision_id"#,
    )
    .bind(&shops)
    .bind(&ids)
    .fetch_all(pool)
    .await
}

/// Every line decision of the order, oldest first.
pub async fn order_line_decisions(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Vec<LineDecision>, sqlx::Error> {
    sqlx::query_as(
        "SELECT decision_id, shop, order_id, order_line_id, attempt, action, rule, sku, quantity,
                available, reserved, unit_price::text AS unit_price, floor_price::text AS floor_price,
                reason, decided_by, decided_at
         FROM acceptance_decisions
         WHERE shop = $2 AND order_id = $1
         ORDER BY decided_at, decision_id",
    )
    .bind(order_id)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Every review decision of the order, oldest first.
pub async fn order_review_decisions(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Vec<ReviewDecision>, sqlx::Error> {
    sqlx::query_as(
        "SELECT review_id, shop, order_id, action, lines, note, decided_by, decided_at,
                carried_out_at, outcome
         FROM review_decisions
         WHERE shop = $2 AND order_id = $1
         ORDER BY decided_at, review_id",
    )
    .bind(order_id)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// The decisions not yet carried out, for the given orders.
pub async fn open_decisions(
    pool: &PgPool,
    orders: &[OrderKey],
) -> Result<Vec<ReviewDecision>, sqlx::Error> {
    let (shops, ids) = key_columns(orders);
    sqlx::query_as(
        "SELECT r.review_id, r.shop, r.order_id, r.action, r.lines, r.note, r.decided_by,
                r.decided_at, r.carried_out_at, r.outcome
         FROM review_decisions r
         JOIN unnest($1::text[], $2::text[]) AS k(shop, order_id)
           ON k.shop = r.shop AND k.order_id = r.order_id
         WHERE r.carried_out_at IS NULL",
    )
    .bind(&shops)
    .bind(&ids)
    .fetch_all(pool)
    .await
}

/// The order's decision not yet carried out, if any. Callers lock the order's current status
/// first, so no decision can be added between this read and their insert.
pub async fn open_decision(
    conn: &mut PgConnection,
    shop: &str,
    order_id: &str,
) -> Result<Option<ReviewDecision>, sqlx::Error> {
    sqlx::query_as(
        "SELECT review_id, shop, order_id, action, lines, note, decided_by, decided_at,
                carried_out_at, outcome
         FROM review_decisions
         WHERE shop = $2 AND order_id = $1 AND carried_out_at IS NULL",
    )
    .bind(order_id)
    .bind(shop)
    .fetch_optional(conn)
    .await
}

/// The line ids of the order as stored from OR11; `None` when the order is not stored.
pub async fn stored_line_ids(
    conn: &mut PgConnection,
    shop: &str,
    order_id: &str,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(array_agg(line ->> 'order_line_id') FILTER (WHERE line ? 'order_line_id'),
                         '{}')
         FROM orders o
         LEFT JOIN LATERAL jsonb_array_elements(
             CASE jsonb_typeof(o.raw_order_data -> 'order_lines')
                 WHEN 'array' THEN o.raw_order_data -> 'order_lines'
                 ELSE '[]'::jsonb
             END) AS line ON true
         WHERE o.shop = $2 AND o.order_id = $1
         GROUP BY o.order_id",
    )
    .bind(order_id)
    .bind(shop)
    .fetch_optional(conn)
    .await
}

/// Stores a decision; fails on the unique index `review_decisions_one_open_per_shop` when the order
/// already has one waiting.
pub async fn insert_decision(
    conn: &mut PgConnection,
    decision: &NewReviewDecision<'_>,
) -> Result<ReviewDecision, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO review_decisions (order_id, action, lines, note, decided_by, shop)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING review_id, shop, order_id, action, lines, note, decided_by, decided_at,
                   carried_out_at, outcome",
    )
    .bind(decision.order_id)
    .bind(decision.action)
    .bind(decision.lines)
    .bind(decision.note)
    .bind(decision.decided_by)
    .bind(decision.shop)
    .fetch_one(conn)
    .await
}

/// The line states of the order's latest final row (accepted, refused or cancelled) that has
/// them; `None` when there is none.
pub async fn latest_line_states(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Option<Vec<LineState>>, sqlx::Error> {
    let lines: Option<sqlx::types::Json<Vec<LineState>>> = sqlx::query_scalar(
        r#"SELECT lines
           FROM order_status_history
           WHERE shop = $2 AND order_id = $1 AND status IN ('accepted', 'refused', 'cancelled')
             AND jsonb_typeof(lines) = 'array'
           ORDER BY "timestamp" DESC, history_id DESC
           LIMIT 1"#,
    )
    .bind(order_id)
    .bind(shop)
    .fetch_optional(pool)
    .await?;
    Ok(lines.map(|json| json.0))
}
