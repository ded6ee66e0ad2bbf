//! `acceptance_runs`: one row per run, written by the run itself and read by `status` and the
//! metrics.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Opens the run's row; returns its id.
pub async fn start_run(pool: &PgPool, worker_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO acceptance_runs (worker_id) VALUES ($1) RETURNING run_id")
        .bind(worker_id)
        .fetch_one(pool)
        .await
}

/// What a run did, as the run counted it: written to its row when it ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    pub imported: u64,
    pub claimed: u64,
    pub accepted: u64,
    pub refused: u64,
    pub cancelled: u64,
    pub in_review: u64,
    pub failed: u64,
    pub retry_scheduled: u64,
    pub api_calls: u64,
}

/// Closes the run's row with its counts and how it ended (`result`: completed, failed,
/// interrupted or degraded).
pub async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    summary: &RunCounts,
    result: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE acceptance_runs
        SET finished_at = now(), result = $2, imported = $3, claimed = $4, accepted = $5,
            cancelled = $6, failed = $7, retry_scheduled = $8, api_calls = $9, error = $10,
            refused = $11, in_review = $12
        WHERE run_id = $1
        "#,
    )
    .bind(run_id)
    .bind(result)
    .bind(count(summary.imported))
    .bind(count(summary.claimed))
    .bind(count(summary.accepted))
    .bind(count(summary.cancelled))
    .bind(count(summary.failed))
    .bind(count(summary.retry_scheduled))
    .bind(count(summary.api_calls))
    .bind(error)
    .bind(count(summary.refused))
    .bind(count(summary.in_review))
    .execute(pool)
    .await?;
    Ok(())
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One run and what it did.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub run_id: i64,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running, completed, failed, interrupted or degraded.
    pub result: String,
    pub imported: i32,
    pub claimed: i32,
    pub accepted: i32,
    pub refused: i32,
    pub cancelled: i32,
    pub in_review: i32,
    pub failed: i32,
    pub retry_scheduled: i32,
    pub api_calls: i32,
    pub error: Option<String>,
}

/// The run that started last, whatever its result.
pub async fn last_run(pool: &PgPool) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, worker_id, started_at, finished_at, result, imported, claimed, accepted,
                refused, cancelled, in_review, failed, retry_scheduled, api_calls, error
         FROM acceptance_runs
         ORDER BY started_at DESC, run_id DESC
         LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}
