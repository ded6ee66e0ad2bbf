//! Accept: OR21 for each order still waiting, each line accepted or refused as decided, at most
//! `acceptance.concurrency` calls in flight.
//!
//! OR21 is not idempotent. When its answer is lost (a timeout or a 5xx after the request was
//! sent) the order is re-read first, and sent again only while it still reads
//! WAITING_ACCEPTANCE — once at most in a run.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, future, stream};
use serde_json::json;
use tokio::sync::mpsc;

use super::decide::Decided;
use super::outcome::{Outcome, OutcomeSender, Reading, Retry, read, report};
use super::{Context, RunError};
use crate::db::queue::Claim;
use crate::marketplace::MarketplaceError;

/// An order whose OR21 answered 204, waiting for OR11 to confirm it.
#[derive(Debug)]
pub struct Awaiting {
    pub claim: Claim,
    pub accepted_at: Instant,
}

/// Where one order stands after the accept stage.
enum Step {
    Confirm(Awaiting),
    Decided(Outcome),
}

pub async fn accept_all(
    ctx: &Context,
    batches: mpsc::Receiver<Vec<Decided>>,
    awaiting: mpsc::UnboundedSender<Awaiting>,
    outcomes: OutcomeSender,
) -> Result<(), RunError> {
    let orders = stream::unfold(batches, |mut batches| async move {
        batches
            .recv()
            .await
            .map(|batch| (stream::iter(batch), batches))
    })
    .flatten();
    orders
        .map(|order| accept_one(ctx, order))
        .buffer_unordered(ctx.settings.acceptance.concurrency as usize)
        .try_for_each(|step| {
            match step {
                // The validator only stops early on an error the run reports.
                Step::Confirm(order) => drop(awaiting.send(order)),
                Step::Decided(outcome) => report(&outcomes, outcome),
            }
            future::ready(Ok(()))
        })
        .await
}

async fn accept_one(ctx: &Context, order: Decided) -> Result<Step, RunError> {
    let id = &order.claim.order_id;
    if order.accepted_before {
        tracing::info!(order_id = %id, attempt = order.claim.attempt, "an earlier attempt's OR21 was answered 204; confirming instead of sending again");
        return Ok(confirm(order.claim));
    }
    match ctx.client.accept_order(id, &order.lines).await {
        Ok(()) => Ok(confirm(order.claim)),
        Err(err @ MarketplaceError::Unauthorized { .. }) => Err(RunError::Unauthorized(err)),
        Err(err @ MarketplaceError::InvalidState { .. }) => {
            settle_from_state(ctx, order, err, Resend::Never).await
        }
        Err(err)
            if err.may_have_taken_effect() || matches!(err, MarketplaceError::Malformed { .. }) =>
        {
            settle_from_state(ctx, order, err, Resend::Once).await
        }
        Err(err) => Ok(Step::Decided(refused_or_failed(order, err))),
    }
}

fn confirm(claim: Claim) -> Step {
    Step::Confirm(Awaiting {
        claim,
        accepted_at: Instant::now(),
    })
}

/// An OR21 error that certainly did not accept the order.
fn refused_or_failed(order: Decided, err: MarketplaceError) -> Outcome {
    let id = order.claim.order_id.clone();
    let payload = json!({"stage": "accept", "error": err.to_string(), "lines": order.lines});
    if err.is_transient() {
        let details = format!(
            "OR21 for order {id} failed: {err}. Nothing was accepted; a later run tries again."
        );
        return Outcome::failed(order.claim, Retry::WhenDue, details, payload);
    }
    let details = format!(
        "The marketplace refused to accept order {id}: {err}. Check the order in the seller portal; accept or refuse it there, or fix the cause and use `failures retry`."
    );
    Outcome::refused_by_or21(order.claim, details, payload)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    Once,
    Never,
}

/// After an OR21 whose effect is unknown or contradicted, reads the order and decides from its
/// real state; sends OR21 again only when allowed and the order still reads WAITING_ACCEPTANCE.
async fn settle_from_state(
    ctx: &Context,
    order: Decided,
    err: MarketplaceError,
    resend: Resend,
) -> Result<Step, RunError> {
    let id = order.claim.order_id.clone();
    tracing::warn!(order_id = %id, error = %err, "OR21 answer inconclusive; re-reading the order before anything else");
    let current = match ctx.client.orders_by_ids(std::slice::from_ref(&id)).await {
        Ok(orders) => orders.into_iter().next(),
        Err(read_err @ MarketplaceError::Unauthorized { .. }) => {
            return Err(RunError::Unauthorized(read_err));
        }
        Err(read_err) => {
            let details = format!(
                "OR21 for order {id} may or may not have taken effect ({err}) and the order could not be re-read ({read_err}). Nothing more was sent; a later run re-reads it before any re-send."
            );
            let payload = json!({"stage": "accept", "error": err.to_string(), "reread_error": read_err.to_string()});
            return Ok(Step::Decided(Outcome::failed(
                order.claim,
                Retry::WhenDue,
                details,
                payload,
            )));
        }
    };
    let Some(current) = current else {
        let details = format!(
            "Order {id} disappeared from the marketplace after OR21 answered {err}. Check it in the seller portal."
        );
        let payload = json!({"stage": "accept", "error": err.to_string()});
        return Ok(Step::Decided(Outcome::failed(
            order.claim,
            Retry::Never,
            details,
            payload,
        )));
    };
    match read(&current) {
        Reading::Accepted => {
            let note = format!(
                "Confirmed as '{}' after OR21 answered: {err}.",
                current.order_state
            );
            Ok(Step::Decided(Outcome::accepted_as_read(
                order.claim,
                &current,
                note,
            )))
        }
        Reading::Refused(ending) => Ok(Step::Decided(Outcome::refused(order.claim, ending))),
        Reading::Cancelled(ending) => Ok(Step::Decided(Outcome::cancelled(order.claim, ending))),
        // OR21 said the order is no longer waiting while OR11 still shows it waiting: an
        // acceptance is on its way through; validation confirms it or gives up.
        Reading::Waiting if matches!(err, MarketplaceError::InvalidState { .. }) => {
            Ok(confirm(order.claim))
        }
        Reading::Waiting if resend == Resend::Once => resend_once(ctx, order, err).await,
        Reading::Waiting | Reading::Undecidable => {
            let details = format!(
                "OR21 for order {id} answered {err} and the order now reads {}. Nothing more was sent in this run; a later run re-reads it before any re-send.",
                current.order_state
            );
            let payload =
                json!({"stage": "accept", "error": err.to_string(), "order": current.raw});
            Ok(Step::Decided(Outcome::failed(
                order.claim,
                Retry::WhenDue,
                details,
                payload,
            )))
        }
    }
}

/// The order provably still waits after a lost answer: sending again cannot accept it twice.
async fn resend_once(
    ctx: &Context,
    order: Decided,
    first: MarketplaceError,
) -> Result<Step, RunError> {
    let id = order.claim.order_id.clone();
    tracing::info!(order_id = %id, "order still WAITING_ACCEPTANCE after a lost OR21 answer; sending OR21 again");
    match ctx.client.accept_order(&id, &order.lines).await {
        Ok(()) => Ok(confirm(order.claim)),
        Err(err @ MarketplaceError::Unauthorized { .. }) => Err(RunError::Unauthorized(err)),
        // The first OR21 did take effect after all.
        Err(MarketplaceError::InvalidState { .. }) => Ok(confirm(order.claim)),
        Err(err) => {
            let details = format!(
                "OR21 for order {id} failed twice: first {first}, then {err}. A later run re-reads it before any re-send."
            );
            let payload = json!({"stage": "accept", "error": err.to_string(), "first_error": first.to_string()});
            Ok(Step::Decided(Outcome::failed(
                order.claim,
                Retry::WhenDue,
                details,
                payload,
            )))
        }
    }
}
