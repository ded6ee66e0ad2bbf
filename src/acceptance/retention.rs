//! `api_calls.retention`: at the end of each run, `api_calls` rows older than the retention are
//! deleted in bounded batches. A large backlog (a first run after adopting an old database, or
//! a retention just shortened) is worked off over several runs instead of in one long delete.
//! Only `api_calls` is pruned: status history and failures are the audit trail and are kept.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::db::api_calls;

/// Rows per DELETE: small enough that each statement is short.
const BATCH_SIZE: i64 = 10_000;
/// Batches per run: bounds the time a run spends pruning.
const MAX_BATCHES: u32 = 10;

/// What one pruning pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub deleted: u64,
    /// True when the pass stopped at its batch limit (or a stop signal) with old rows possibly
    /// left for the next run.
    pub more_left: bool,
}

/// Deletes rows older than `retention` before `now`, `batch_size` at a time, at most
/// `max_batches` statements. Stops early when a batch comes back short (nothing older is left)
/// or `stop` fires.
pub async fn prune_api_calls(
    pool: &PgPool,
    retention: Duration,
    now: DateTime<Utc>,
    batch_size: i64,
    max_batches: u32,
    stop: &CancellationToken,
) -> Result<Pruned, sqlx::Error> {
    let Some(cutoff) = TimeDelta::from_std(retention)
        .ok()
        .and_then(|delta| now.checked_sub_signed(delta))
    else {
        // A retention longer than the calendar reaches: nothing is old enough.
        return Ok(Pruned {
            deleted: 0,
            more_left: false,
        });
    };
    let mut deleted = 0;
    for _ in 0..max_batches {
        if stop.is_cancelled() {
            return Ok(Pruned {
                deleted,
                more_left: true,
            });
        }
        let batch = api_calls::delete_older_than(pool, cutoff, batch_size).await?;
        deleted += batch;
        if batch < batch_size.unsigned_abs() {
            return Ok(Pruned {
                deleted,
                more_left: false,
            });
        }
    }
    Ok(Pruned {
        deleted,
        more_left: true,
    })
}

/// The end-of-run pruning: logs what it did; a failure is logged and the run carries on, since
/// old audit rows are no reason to fail a run.
pub(super) async fn prune_after_run(ctx: &Context, stop: &CancellationToken) {
    let retention = ctx.settings.api_calls.retention;
    let pruned = prune_api_calls(
        &ctx.pool,
        retention,
        Utc::now(),
        BATCH_SIZE,
        MAX_BATCHES,
        stop,
    )
    .await;
    let retention = humantime::format_duration(retention).to_string();
    match pruned {
        Ok(Pruned { deleted: 0, .. }) => {
            tracing::debug!(%retention, "api_calls: nothing older than the retention");
        }
        Ok(Pruned {
            deleted,
            more_left: false,
        }) => {
            tracing::info!(deleted, %retention, "api_calls: deleted rows older than the retention");
        }
        Ok(Pruned {
            deleted,
            more_left: true,
        }) => {
            tracing::info!(
                deleted,
                %retention,
                "api_calls: deleted rows older than the retention; more are left for the next runs"
            );
        }
        Err(err) => {
            tracing::error!(
                error = %err,
                %retention,
                "api_calls: could not delete rows older than api_calls.retention; the next run tries again"
            );
        }
    }
}
