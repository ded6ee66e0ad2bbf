//! Orders as operators see them: one order's history and API calls, the current-status
//! counts, and the pending queue (the `pending_orders` view of migration 2).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// The order row without its raw JSON.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrderHeader {
    pub shop: String,
    pub order_id: String,
    pub created_at: DateTime<Utc>,
    pub placed_at: Option<DateTime<Utc>>,
    /// Why `placed_at` is unknown (created_date missing, malformed or in the future).
    pub created_date_problem: Option<String>,
}

/// One row of `order_status_history`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub history_id: i64,
    #[sqlx(rename = "timestamp")]
    pub at: DateTime<Utc>,
    pub status: String,
    pub attempt: Option<i32>,
    pub notes: Option<String>,
    pub worker_id: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One HTTP attempt made about an order.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiCallEntry {
    pub call_id: i64,
    #[sqlx(rename = "timestamp")]
    pub at: DateTime<Utc>,
    pub endpoint: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status_code: Option<i32>,
    pub is_success: bool,
    pub duration_ms: Option<i32>,
    pub attempt: Option<i32>,
    pub error: Option<String>,
}

/// How many orders are in one current status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StatusCount {
    pub status: String,
    pub orders: i64,
}

/// An order the worker still has to decide, with the start of its acceptance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PendingOrder {
    pub shop: String,
    pub order_id: String,
    pub status: String,
    pub order_created_at: DateTime<Utc>,
}

/// The shops that have an order of this id, by name: two marketplaces may use the same id.
pub async fn shops_of_order(pool: &PgPool, order_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT shop FROM orders WHERE order_id = $1 ORDER BY shop")
        .bind(order_id)
        .fetch_all(pool)
        .await
}

/// The order's row; `None` when the database has never seen it.
pub async fn find_order(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Option<OrderHeader>, sqlx::Error> {
    sqlx::query_as(
        "SELECT shop, order_id, created_at, placed_at, created_date_problem
         FROM orders WHERE shop = $1 AND order_id = $2",
    )
    .bind(shop)
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// The order's status in the projection; `None` when it has no history.
pub async fn current_status(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM order_current_status WHERE shop = $1 AND order_id = $2")
        .bind(shop)
        .bind(order_id)
        .fetch_optional(pool)
        .await
}

/// Every status row of the order, oldest first, in the projection's order.
pub async fn order_history(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT history_id, "timestamp", status, attempt, notes, worker_id, next_attempt_at
           FROM order_status_history
           WHERE order_id = $1 AND shop = $2
           ORDER BY "timestamp", history_id"#,
    )
    .bind(order_id)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Every API call recorded for the order, oldest first.
pub async fn order_api_calls(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Vec<ApiCallEntry>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT call_id, "timestamp", endpoint, method, path, status_code, is_success,
                  duration_ms, attempt, error
           FROM api_calls
           WHERE related_id = $1 AND shop = $2
           ORDER BY "timestamp", call_id"#,
    )
    .bind(order_id)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// The order's current status, locked until the transaction ends: claims take orders with
/// `FOR UPDATE SKIP LOCKED` on this row, so none can claim it while a retry is being decided.
/// `None` when the order has no status at all.
pub async fn lock_current_status(
    conn: &mut PgConnection,
    shop: &str,
    order_id: &str,
) -> Result<Option<CurrentStatus>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT status, "timestamp"
           FROM order_current_status
           WHERE shop = $1 AND order_id = $2
           FOR UPDATE"#,
    )
    .bind(shop)
    .bind(order_id)
    .fetch_optional(conn)
    .await
}

/// The projection's view of an order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CurrentStatus {
    pub status: String,
    #[sqlx(rename = "timestamp")]
    pub at: DateTime<Utc>,
}

/// Appends a `pending_acceptance` row that makes the order due now, and returns its id.
///
/// The row is stamped no earlier than the current status, because the projection only moves
/// forward in (timestamp, history_id) and must show this row; `next_attempt_at = now()` keeps
/// it due now even when that stamp lies ahead of the database clock.
pub async fn insert_pending_row(
    conn: &mut PgConnection,
    shop: &str,
    order_id: &str,
    current: &CurrentStatus,
    note: &str,
) -> Result<i64, sqlx::Error> {
    // No attempt number: a person's retry starts a fresh set of `acceptance.max_attempts`.
    sqlx::query_scalar(
        r#"INSERT INTO order_status_history
               (order_id, status, notes, "timestamp", next_attempt_at, shop)
           VALUES ($1, 'pending_acceptance', $2, greatest(now(), $3), now(), $4)
           RETURNING history_id"#,
    )
    .bind(order_id)
    .bind(note)
    .bind(current.at)
    .bind(shop)
    .fetch_one(conn)
    .await
}

// The counts below are of one shop when `shop` is given, of every shop otherwise.

/// Orders per current status, by status name.
pub async fn count_by_status(
    pool: &PgPool,
    shop: Option<&str>,
) -> Result<Vec<StatusCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, count(*) AS orders FROM order_current_status
         WHERE $1::text IS NULL OR shop = $1
         GROUP BY status ORDER BY status",
    )
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// The pending order whose acceptance window started first.
pub async fn oldest_pending_order(
    pool: &PgPool,
    shop: Option<&str>,
) -> Result<Option<PendingOrder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT shop, order_id, status, order_created_at
         FROM pending_orders
         WHERE $1::text IS NULL OR shop = $1
         ORDER BY order_created_at, order_id
         LIMIT 1",
    )
    .bind(shop)
    .fetch_optional(pool)
    .await
}

/// One shop's queue, for the metrics.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShopQueue {
    pub shop: String,
    pub pending: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    pub open_failures: i64,
}

/// Every known shop's pending orders, oldest pending creation and open failures.
pub async fn queue_by_shop(pool: &PgPool) -> Result<Vec<ShopQueue>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.shop,
                (SELECT count(*) FROM pending_orders p WHERE p.shop = s.shop) AS pending,
                (SELECT min(order_created_at) FROM pending_orders p WHERE p.shop = s.shop)
                    AS oldest_pending_at,
                (SELECT count(*) FROM process_failures f
                 WHERE f.shop = s.shop AND f.resolved_at IS NULL) AS open_failures
         FROM shops s ORDER BY s.shop",
    )
    .fetch_all(pool)
    .await
}

/// The shops that have orders still to be decided, by name.
pub async fn shops_with_pending_orders(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT shop FROM pending_orders ORDER BY shop")
        .fetch_all(pool)
        .await
}

/// How many orders the worker still has to decide.
pub async fn count_pending_orders(pool: &PgPool, shop: Option<&str>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM pending_orders WHERE $1::text IS NULL OR shop = $1")
        .bind(shop)
        .fetch_one(pool)
        .await
}

/// How many pending orders were created before `cutoff`.
pub async fn count_pending_created_before(
    pool: &PgPool,
    shop: Option<&str>,
    cutoff: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pending_orders
         WHERE order_created_at < $1 AND ($2::text IS NULL OR shop = $2)",
    )
    .bind(cutoff)
    .bind(shop)
    .fetch_one(pool)
    .await
}

/// The first `limit` pending orders created before `cutoff`, oldest first.
pub async fn pending_created_before(
    pool: &PgPool,
    shop: Option<&str>,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PendingOrder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT shop, order_id, status, order_created_at
         FROM pending_orders
         WHERE order_created_at < $1 AND ($3::text IS NULL OR shop = $3)
         ORDER BY order_created_at, order_id
         LIMIT $2",
    )
    .bind(cutoff)
    .bind(limit)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// The order's current status with the note of the row that set it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StatusWithNote {
    pub status: String,
    pub notes: Option<String>,
}

/// The order's current status and its note; `None` when it has no history.
pub async fn current_status_with_note(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Option<StatusWithNote>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.status, h.notes
         FROM order_current_status c
         JOIN order_status_history h ON h.history_id = c.history_id
         WHERE c.shop = $1 AND c.order_id = $2",
    )
    .bind(shop)
    .bind(order_id)
    .fetch_optional(pool)
    .await
}
