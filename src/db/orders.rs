//! Orders as operators see them: one order's history and API calls, the current-status
//! counts, and the pending queue (the `pending_orders` view of migration 2).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// The order row without its raw JSON.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrderHeader {
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
    pub order_id: String,
    pub status: String,
    pub order_created_at: DateTime<Utc>,
}

/// The order's row; `None` when the database has never seen it.
pub async fn find_order(pool: &PgPool, order_id: &str) -> Result<Option<OrderHeader>, sqlx::Error> {
    sqlx::query_as("SELECT order_id, created_at, placed_at, created_date_problem FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
}

/// The order's status in the projection; `None` when it has no history.
pub async fn current_status(pool: &PgPool, order_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM order_current_status WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
}

/// Every status row of the order, oldest first, in the projection's order.
pub async fn order_history(
    pool: &PgPool,
    order_id: &str,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT history_id, "timestamp", status, attempt, notes, worker_id, next_attempt_at
           FROM order_status_history
           WHERE order_id = $1
           ORDER BY "timestamp", history_id"#,
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// Every API call recorded for the order, oldest first.
pub async fn order_api_calls(
    pool: &PgPool,
    order_id: &str,
) -> Result<Vec<ApiCallEntry>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT call_id, "timestamp", endpoint, method, path, status_code, is_success,
                  duration_ms, attempt, error
           FROM api_calls
           WHERE related_id = $1
           ORDER BY "timestamp", call_id"#,
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// The order's current status, locked until the transaction ends: claims take orders with
/// `FOR UPDATE SKIP LOCKED` on this row, so none can claim it while a retry is being decided.
/// `None` when the order has no status at all.
pub async fn lock_current_status(
    conn: &mut PgConnection,
    order_id: &str,
) -> Result<Option<CurrentStatus>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT status, "timestamp"
           FROM order_current_status
           WHERE order_id = $1
           FOR UPDATE"#,
    )
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
    order_id: &str,
    current: &CurrentStatus,
    note: &str,
) -> Result<i64, sqlx::Error> {
    // No attempt number: a person's retry starts a fresh set of `acceptance.max_attempts`.
    sqlx::query_scalar(
        r#"INSERT INTO order_status_history
               (order_id, status, notes, "timestamp", next_attempt_at)
           VALUES ($1, 'pending_acceptance', $2, greatest(now(), $3), now())
           RETURNING history_id"#,
    )
    .bind(order_id)
    .bind(note)
    .bind(current.at)
    .fetch_one(conn)
    .await
}

/// Orders per current status, by status name.
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<StatusCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, count(*) AS orders FROM order_current_status GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await
}

/// The pending order whose acceptance window started first.
pub async fn oldest_pending_order(pool: &PgPool) -> Result<Option<PendingOrder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, status, order_created_at
         FROM pending_orders
         ORDER BY order_created_at, order_id
         LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// How many orders the worker still has to decide.
pub async fn count_pending_orders(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM pending_orders")
        .fetch_one(pool)
        .await
}

/// How many pending orders were created before `cutoff`.
pub async fn count_pending_created_before(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM pending_orders WHERE order_created_at < $1")
        .bind(cutoff)
        .fetch_one(pool)
        .await
}

/// The first `limit` pending orders created before `cutoff`, oldest first.
pub async fn pending_created_before(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PendingOrder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, status, order_created_at
         FROM pending_orders
         WHERE order_created_at < $1
         ORDER BY order_created_at, order_id
         LIMIT $2",
    )
    .bind(cutoff)
    .bind(limit)
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
    order_id: &str,
) -> Result<Option<StatusWithNote>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.status, h.notes
         FROM order_current_status c
         JOIN order_status_history h ON h.history_id = c.history_id
         WHERE c.order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await
}
