//! `review accept|refuse --now`: a person's decision queued and carried out at once, by a run
//! over that order alone — the same claim, OR21 and validation a scheduled run would do.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Context, RunError, RunSummary, run_orders};
use crate::db::orders::{self, StatusWithNote};
use crate::review::{Decision, Queued, ReviewError, queue_decision};

/// A decision queued and carried out at once by a run over its order alone.
#[derive(Debug, Clone, Serialize)]
pub struct DecidedNow {
    pub queued: Queued,
    pub run: RunSummary,
    /// The order's status after the run.
    pub outcome: Option<StatusWithNote>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideNowError {
    #[error(transparent)]
    Review(#[from] ReviewError),
    #[error(
        "review decision #{review_id} for order {order_id} is queued, but the run carrying it out at once failed: {source} The worker's next run carries the decision out"
    )]
    Run {
        review_id: i64,
        order_id: String,
        source: RunError,
    },
    #[error(
        "review decision #{review_id} for order {order_id} was carried out, but reading the order's status failed: {source}. See `order-acceptance order {order_id}`"
    )]
    ReadOutcome {
        review_id: i64,
        order_id: String,
        source: sqlx::Error,
    },
}

/// Queues `decision`, then carries it out at once with [`run_orders`] over its
/// order: the same claim, OR21 and validation a scheduled run would do.
pub async fn decide_now(
    ctx: &Context,
    stop: &CancellationToken,
    decision: &Decision,
) -> Result<DecidedNow, DecideNowError> {
    let queued = queue_decision(&ctx.pool, decision).await?;
    let review_id = queued.decision.review_id;
    let order_id = &decision.order_id;
    let run = run_orders(ctx, stop, std::slice::from_ref(order_id))
        .await
        .map_err(|source| DecideNowError::Run {
            review_id,
            order_id: order_id.clone(),
            source,
        })?;
    let outcome = orders::current_status_with_note(&ctx.pool, ctx.shop(), order_id)
        .await
        .map_err(|source| DecideNowError::ReadOutcome {
            review_id,
            order_id: order_id.clone(),
            source,
        })?;
    Ok(DecidedNow {
        queued,
        run,
        outcome,
    })
}
