//! `process_failures`: the inbox people work from. Reads go through the `failure_inbox` view
//! (migration 2), which joins each failure to its order's current status.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::outcomes::PROCESS_NAME;

/// Which failures `list_failures` returns.
#[derive(Debug, Clone)]
pub struct FailureFilter {
    /// Resolved failures too, not only open ones.
    pub include_resolved: bool,
    pub process_name: Option<String>,
    /// Only failures of this shop.
    pub shop: Option<String>,
    /// Only failures recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// One line of the inbox: no payload, which may be large.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FailureSummary {
    pub failure_id: i64,
    pub shop: String,
    pub related_id: Option<String>,
    pub process_name: String,
    pub details: Option<String>,
    #[sqlx(rename = "timestamp")]
    pub recorded_at: DateTime<Utc>,
    pub retryable: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub order_status: Option<String>,
}

/// Everything about one failure.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Failure {
    pub failure_id: i64,
    pub shop: String,
    pub related_id: Option<String>,
    pub process_name: String,
    pub details: Option<String>,
    pub payload: Option<serde_json::Value>,
    #[sqlx(rename = "timestamp")]
    pub recorded_at: DateTime<Utc>,
    pub retryable: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_note: Option<String>,
    pub resolved_by: Option<String>,
    pub order_status: Option<String>,
    pub order_status_at: Option<DateTime<Utc>>,
}

/// The resolution fields of a failure, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Resolution {
    pub failure_id: i64,
    pub resolved_at: DateTime<Utc>,
    pub resolution_note: String,
    pub resolved_by: Option<String>,
}

/// Failures matching `filter`, newest first.
pub async fn list_failures(
    pool: &PgPool,
    filter: &FailureFilter,
) -> Result<Vec<FailureSummary>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT failure_id, shop, related_id, process_name, details, "timestamp", retryable,
                  resolved_at, order_status
           FROM failure_inbox
           WHERE ($1 OR open)
             AND ($2::text IS NULL OR process_name = $2)
             AND ($3::timestamptz IS NULL OR "timestamp" >= $3)
             AND ($5::text IS NULL OR shop = $5)
           ORDER BY "timestamp" DESC, failure_id DESC
           LIMIT $4"#,
    )
    .bind(filter.include_resolved)
    .bind(filter.process_name.as_deref())
    .bind(filter.since)
    .bind(filter.limit)
    .bind(filter.shop.as_deref())
    .fetch_all(pool)
    .await
}

/// One failure with its payload and its order's current status; `None` when there is no such id.
pub async fn find_failure(pool: &PgPool, failure_id: i64) -> Result<Option<Failure>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT failure_id, shop, related_id, process_name, details, payload, "timestamp",
                  retryable, resolved_at, resolution_note, resolved_by, order_status,
                  order_status_at
           FROM failure_inbox
           WHERE failure_id = $1"#,
    )
    .bind(failure_id)
    .fetch_optional(pool)
    .await
}

/// Failures recorded for one order, newest first.
pub async fn failures_for_order(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Vec<FailureSummary>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT failure_id, shop, related_id, process_name, details, "timestamp", retryable,
                  resolved_at, order_status
           FROM failure_inbox
           WHERE related_id = $1 AND shop = $2
           ORDER BY "timestamp" DESC, failure_id DESC"#,
    )
    .bind(order_id)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// How many failures are still open.
pub async fn count_open_failures(pool: &PgPool, shop: Option<&str>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM process_failures
         WHERE resolved_at IS NULL AND ($1::text IS NULL OR shop = $1)",
    )
    .bind(shop)
    .fetch_one(pool)
    .await
}

/// The failure's id, order and resolution, locked until the transaction ends so two people
/// cannot resolve or retry it at once; `None` when there is no such id.
pub async fn lock_failure(
    conn: &mut PgConnection,
    failure_id: i64,
) -> Result<Option<LockedFailure>, sqlx::Error> {
    sqlx::query_as(
        "SELECT failure_id, shop, related_id, resolved_at, resolution_note, resolved_by
         FROM process_failures
         WHERE failure_id = $1
         FOR UPDATE",
    )
    .bind(failure_id)
    .fetch_optional(conn)
    .await
}

/// What deciding on a failure needs to know about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedFailure {
    pub failure_id: i64,
    pub shop: String,
    pub related_id: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_note: Option<String>,
    pub resolved_by: Option<String>,
}

/// Marks an open failure resolved now. Callers lock it first with [`lock_failure`].
pub async fn mark_resolved(
    conn: &mut PgConnection,
    failure_id: i64,
    note: &str,
    resolved_by: &str,
) -> Result<Resolution, sqlx::Error> {
    sqlx::query_as(
        "UPDATE process_failures
         SET resolved_at = now(), resolution_note = $2, resolved_by = $3
         WHERE failure_id = $1 AND resolved_at IS NULL
         RETURNING failure_id, resolved_at, resolution_note, resolved_by",
    )
    .bind(failure_id)
    .bind(note)
    .bind(resolved_by)
    .fetch_one(conn)
    .await
}

/// Records a failure for a person about `order_id` of `shop` (or about the whole shop, with no
/// order), unless one of the same `stage` (its payload's `stage`) is still open; returns whether
/// it was recorded. One statement, so a run repeating itself every few minutes leaves one row,
/// not one per run.
pub async fn record_once_per_stage(
    pool: &PgPool,
    shop: &str,
    order_id: Option<&str>,
    stage: &str,
    details: &str,
    payload: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO process_failures (related_id, process_name, details, payload, retryable, shop)
         SELECT $1, $2, $3, $4, false, $6
         WHERE NOT EXISTS (
             SELECT 1 FROM process_failures
             WHERE related_id IS NOT DISTINCT FROM $1 AND process_name = $2
               AND resolved_at IS NULL AND payload ->> 'stage' = $5 AND shop = $6)",
    )
    .bind(order_id)
    .bind(PROCESS_NAME)
    .bind(details)
    .bind(payload)
    .bind(stage)
    .bind(shop)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Records an order the import could not read, unless the same one is still open: by its id
/// when it has one, else by its JSON. Returns whether it was recorded.
pub async fn record_unreadable_once(
    pool: &PgPool,
    shop: &str,
    order_id: Option<&str>,
    details: &str,
    payload: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO process_failures (related_id, process_name, details, payload, retryable, shop)
         SELECT $1, $2, $3, $4, false, $5
         WHERE NOT EXISTS (
             SELECT 1 FROM process_failures
             WHERE process_name = $2 AND resolved_at IS NULL AND payload ->> 'stage' = 'import'
               AND shop = $5
               AND CASE WHEN $1::text IS NULL THEN related_id IS NULL AND payload -> 'order' = $4 -> 'order'
                        ELSE related_id = $1 END)",
    )
    .bind(order_id)
    .bind(PROCESS_NAME)
    .bind(details)
    .bind(payload)
    .bind(shop)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Resolves the open failures of `stage` (its payload's `stage`) about the order, or about the
/// whole shop with no order, with a note.
pub async fn resolve_open_of_stage(
    conn: &mut PgConnection,
    shop: &str,
    order_id: Option<&str>,
    stage: &str,
    note: &str,
    resolved_by: &str,
) -> Result<u64, sqlx::Error> {
    let resolved = sqlx::query(
        "UPDATE process_failures
         SET resolved_at = now(), resolution_note = $4, resolved_by = $5
         WHERE related_id IS NOT DISTINCT FROM $1 AND process_name = $2 AND resolved_at IS NULL
           AND payload ->> 'stage' = $3 AND shop = $6",
    )
    .bind(order_id)
    .bind(PROCESS_NAME)
    .bind(stage)
    .bind(note)
    .bind(resolved_by)
    .bind(shop)
    .execute(conn)
    .await?;
    Ok(resolved.rows_affected())
}
