//! Claim: takes due orders (all, or only those a scoped run names) in batches until none is left,
//! checks each batch with preflight, decides its lines, and hands the orders to send OR21 for to
//! the accept stage.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::decide::{Decided, Decider};
use super::heartbeat::Hold;
use super::import::FreshLines;
use super::outcome::Outcome;
use super::preflight;
use super::{Context, RunError, Tally};
use crate::db::queue::{self, ClaimError};

// The stage's channels, the run's hold and its tally: each is a separate concern of the run.
#[allow(clippy::too_many_arguments)]
pub async fn claim_until_drained(
    ctx: &Context,
    stop: &CancellationToken,
    hold: &Hold,
    fresh: &FreshLines,
    only: Option<&[String]>,
    batches: mpsc::Sender<Vec<Decided>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    tally: &Tally,
) -> Result<(), RunError> {
    let settings = &ctx.settings.acceptance;
    let decider = Decider::for_run(ctx).await?;
    while !stop.is_cancelled() {
        // Claim only when the accept stage has room, so claimed orders do not wait long
        // for their OR21. A closed channel means the accept stage stopped on an error,
        // which the run reports.
        let Ok(slot) = batches.reserve().await else {
            break;
        };
        // Claiming what it could not send for would only hold orders back.
        if let Err(reason) = hold.may_send() {
            tracing::warn!(%reason, "stopping claims for this run");
            break;
        }
        let started = Instant::now();
        let claims = match queue::claim_due_orders(
            &ctx.pool,
            ctx.shop(),
            &ctx.worker_id,
            hold.run_id,
            settings.batch_size,
            only,
        )
        .await
        {
            Ok(claims) => claims,
            // The database says what the local fence could not see (a pause between the two).
            Err(err @ ClaimError::RunNotHeld { .. }) => {
                hold.release();
                tracing::warn!(reason = %err, "stopping claims for this run");
                break;
            }
            Err(ClaimError::Database(err)) => {
                return Err(RunError::database("claiming due orders")(err));
            }
        };
        metrics::histogram!("acceptance_claim_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if claims.is_empty() {
            break;
        }
        Tally::add(&tally.claimed, claims.len());
        tracing::info!(claimed = claims.len(), "claimed a batch");

        let checked = preflight::check(ctx, claims, fresh, &outcomes).await?;
        let started = Instant::now();
        let waiting = checked.to_accept.len();
        let decided = decider.decide(ctx, checked.to_accept, &outcomes).await?;
        let took = started.elapsed();
        metrics::histogram!("acceptance_decide_duration_seconds").record(took.as_secs_f64());
        tracing::info!(
            waiting,
            to_send = decided.len(),
            duration_ms = took.as_secs_f64() * 1000.0,
            "decided a batch"
        );
        slot.send(decided);
        if checked.marketplace_unreachable {
            tracing::warn!(
                "stopping claims for this run: the marketplace could not be read; the orders of this batch are retried by a later run"
            );
            break;
        }
    }
    Ok(())
}
