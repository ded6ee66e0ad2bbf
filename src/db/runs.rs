//! One `acceptance_runs` row per run: what `status` and the metrics report as the last run.

use sqlx::PgPool;

use crate::acceptance::{RunResult, RunSummary};

/// Opens the run's row; returns its id.
pub async fn start_run(pool: &PgPool, worker_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO acceptance_runs (worker_id) VALUES ($1) RETURNING run_id")
        .bind(worker_id)
        .fetch_one(pool)
        .await
}

/// Closes the run's row with its counts and how it ended.
pub async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    summary: &RunSummary,
    result: RunResult,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE acceptance_runs
        SET finished_at = now(), result = $2, imported = $3, claimed = $4, accepted = $5,
            cancelled = $6, failed = $7, retry_scheduled = $8, api_calls = $9, error = $10
        WHERE run_id = $1
        "#,
    )
    .bind(run_id)
    .bind(result.as_str())
    .bind(count(summary.imported))
    .bind(count(summary.claimed))
    .bind(count(summary.accepted))
    .bind(count(summary.cancelled))
    .bind(count(summary.failed))
    .bind(count(summary.retry_scheduled))
    .bind(count(summary.api_calls))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
