//! `acceptance_runs`: one row per acceptance run, written by the run itself.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// One run and what it did.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunSummary {
    pub run_id: i64,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running, completed, failed or interrupted.
    pub result: String,
    pub imported: i32,
    pub claimed: i32,
    pub accepted: i32,
    pub cancelled: i32,
    pub failed: i32,
    pub retry_scheduled: i32,
    pub api_calls: i32,
    pub error: Option<String>,
}

/// The run that started last, whatever its result.
pub async fn last_run(pool: &PgPool) -> Result<Option<RunSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, worker_id, started_at, finished_at, result, imported, claimed, accepted,
                cancelled, failed, retry_scheduled, api_calls, error
         FROM acceptance_runs
         ORDER BY started_at DESC, run_id DESC
         LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}
