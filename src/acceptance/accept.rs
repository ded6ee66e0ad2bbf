//! Accept: OR21 for each order still waiting, each line accepted or refused as decided, with at
//! most as many orders under way as the adaptive limit allows: `acceptance.concurrency` at first,
//! halved each time the marketplace throttles OR21, grown back by one per window of calls.
//!
//! OR21 is not idempotent. When its answer leaves the order's state unclear (a timeout, a
//! 500/502/504, a 2xx that is not a 204, a 400) the order joins the re-read stage's next batched
//! read before anything else, and is sent again only while it still reads WAITING_ACCEPTANCE:
//! with the back-off of one call's retries, within `marketplace.retry_attempts` sends and
//! `marketplace.retry_budget` (time at closed rate gates not counted).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, future, stream};
use serde_json::json;
use tokio::sync::mpsc;

use super::decide::Decided;
use super::heartbeat::Hold;
use super::outcome::{Outcome, OutcomeSender, Reading, Retry, read, report};
use super::reread::{Reread, Rereads};
use super::{Context, RunError, Tally};
use crate::db::queue::Claim;
use crate::marketplace::{AdaptiveLimit, Endpoint, MarketplaceError, Order, RetryPolicy};

/// An order whose OR21 answered 204, waiting for OR11 to confirm it.
#[derive(Debug)]
pub struct Awaiting {
    pub claim: Claim,
    pub accepted_at: Instant,
    /// OR21 accepted at least one line: the order must not end REFUSED.
    pub accepted_lines: bool,
}

/// Where one order stands after the accept stage.
enum Step {
    Confirm(Awaiting),
    Decided(Outcome),
    /// The run's fence closed before OR21 could go: nothing is recorded, the order's next
    /// holder reads its state again.
    Lost(Claim, String),
}

pub async fn accept_all(
    ctx: &Context,
    hold: &Hold,
    batches: mpsc::Receiver<Vec<Decided>>,
    rereads: Rereads,
    awaiting: mpsc::UnboundedSender<Awaiting>,
    outcomes: OutcomeSender,
    tally: &Tally,
) -> Result<(), RunError> {
    let rereads = &rereads;
    let orders = stream::unfold(batches, |mut batches| async move {
        batches
            .recv()
            .await
            .map(|batch| (stream::iter(batch), batches))
    })
    .flatten();
    let concurrency = ctx.settings.acceptance.concurrency;
    let limit = AdaptiveLimit::new(
        concurrency,
        ctx.client.throttlings(Endpoint::OR21),
        ctx.shop(),
    );
    let limit = &limit;
    // The stream holds `concurrency` orders at most; the limit decides how many of them work.
    orders
        .map(|order| async move {
            let slot = limit.acquire().await;
            let step = accept_one(ctx, hold, rereads, order).await;
            limit.finish(slot, ctx.client.throttlings(Endpoint::OR21));
            step
        })
        .buffer_unordered(concurrency as usize)
        .try_for_each(|step| {
            match step {
                // The validator only stops early on an error the run reports.
                Step::Confirm(order) => drop(awaiting.send(order)),
                Step::Decided(outcome) => report(&outcomes, outcome),
                Step::Lost(claim, reason) => {
                    tracing::warn!(order_id = %claim.order_id, attempt = claim.attempt, %reason, "OR21 not sent: this run can no longer prove it holds the order; its next holder decides it");
                    metrics::counter!("acceptance_lost_claims_total", "shop" => ctx.shop().to_string())
                        .increment(1);
                    Tally::add(&tally.lost, 1);
                }
            }
            future::ready(Ok(()))
        })
        .await
}

/// What an OR21 error tells about the order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Certainly not accepted: a 4xx about the request, or a temporary error before the request
    /// reached the marketplace.
    NotAccepted,
    /// ORDER_INVALID_STATE: the order is no longer waiting for acceptance.
    NoLongerWaiting,
    /// Another 400: it may mean "already accepted".
    MaybeAccepted,
    /// A timeout, a 500/502/504 or a 2xx that is not a 204: it may or may not have taken effect.
    Unknown,
}

fn answer(err: &MarketplaceError) -> Answer {
    match err {
        MarketplaceError::InvalidState { .. } => Answer::NoLongerWaiting,
        MarketplaceError::Rejected { status: 400, .. } => Answer::MaybeAccepted,
        err if err.may_have_taken_effect() => Answer::Unknown,
        _ => Answer::NotAccepted,
    }
}

async fn accept_one(
    ctx: &Context,
    hold: &Hold,
    rereads: &Rereads,
    mut order: Decided,
) -> Result<Step, RunError> {
    let id = order.claim.order_id.clone();
    if order.accepted_before {
        tracing::info!(order_id = %id, attempt = order.claim.attempt, "an earlier attempt's OR21 was answered 204; confirming instead of sending again");
        return Ok(confirm(order));
    }
    // The order's sends share one retry schedule, as the attempts of one call do; time the
    // process's rate gates were closed is the marketplace's wait and does not count against it.
    let mut schedule = RetryPolicy::new(&ctx.settings.marketplace.retry).start();
    let mut closed_seen = ctx.client.time_at_closed_gates();
    let mut unclear: Vec<MarketplaceError> = Vec::new();
    loop {
        let fence = || hold.may_send();
        let err = match ctx.client.accept_order(&id, &order.lines, &fence).await {
            Ok(()) => return Ok(confirm(order)),
            Err(err @ MarketplaceError::Unauthorized { .. }) => {
                return Err(RunError::Unauthorized(err));
            }
            Err(MarketplaceError::Fenced { reason, .. }) => {
                return Ok(Step::Lost(order.claim, reason));
            }
            Err(err) => err,
        };
        let answer = answer(&err);
        let closed_now = ctx.client.time_at_closed_gates();
        schedule.waited_at_gate(closed_now.saturating_sub(closed_seen));
        closed_seen = closed_now;
        let delay = match next_move(answer, !unclear.is_empty(), schedule.next_delay(None)) {
            Move::Confirm => return Ok(confirm(order)),
            Move::Fail => return Ok(Step::Decided(refused_or_failed(order, err))),
            Move::GiveUp => return Ok(Step::Decided(gave_up(order, &unclear, err))),
            Move::Reread(delay) => delay,
        };
        tracing::warn!(order_id = %id, error = %err, delay_ms = delay.as_millis() as u64, "OR21 answer unclear; re-reading the order before anything else");
        let current = match rereads.read(&id, delay).await {
            Reread::Found(current) => current,
            Reread::Missing => return Ok(Step::Decided(disappeared(order, &err))),
            Reread::Failed(read_err) => {
                return Ok(Step::Decided(not_reread(order, &err, &read_err)));
            }
        };
        match settle(order, err, answer, &current) {
            Settled::Done(step) => return Ok(step),
            // Provably still waiting after a lost answer: sending again cannot accept it twice.
            Settled::StillWaiting(waiting, err) => {
                tracing::info!(order_id = %id, "order still WAITING_ACCEPTANCE after an unclear OR21 answer; sending OR21 again");
                order = waiting;
                unclear.push(err);
            }
        }
    }
}

/// What to do after an OR21 error, before reading anything.
enum Move {
    Confirm,
    /// Certainly not accepted by this first send.
    Fail,
    /// The sends allowed are used up.
    GiveUp,
    /// Re-read after this delay.
    Reread(Duration),
}

fn next_move(answer: Answer, sent_again: bool, retry_in: Option<Duration>) -> Move {
    match (answer, retry_in) {
        // The first OR21 did take effect after all.
        (Answer::NoLongerWaiting, _) if sent_again => Move::Confirm,
        (Answer::NotAccepted, _) if sent_again => Move::GiveUp,
        (Answer::NotAccepted, _) => Move::Fail,
        (Answer::Unknown, None) => Move::GiveUp,
        // Re-read once even with the retries used up: it costs no send.
        (_, delay) => Move::Reread(delay.unwrap_or(Duration::ZERO)),
    }
}

/// Where an order stands after its re-read.
enum Settled {
    Done(Step),
    /// Still WAITING_ACCEPTANCE after an answer that may or may not have taken effect.
    StillWaiting(Decided, MarketplaceError),
}

fn settle(order: Decided, err: MarketplaceError, answer: Answer, current: &Order) -> Settled {
    let step = match (read(current), answer) {
        (Reading::Accepted, _) => {
            let note = format!(
                "Confirmed as '{}' after OR21 answered: {err}.",
                current.order_state
            );
            Step::Decided(Outcome::accepted_as_read(order.claim, current, note))
        }
        (Reading::Refused(ending), _) => Step::Decided(Outcome::refused(order.claim, ending)),
        (Reading::Cancelled(ending), _) => Step::Decided(Outcome::cancelled(order.claim, ending)),
        // OR21 said the order is no longer waiting while OR11 still shows it waiting: an
        // acceptance is on its way through; validation confirms it or gives up.
        (Reading::Waiting, Answer::NoLongerWaiting) => confirm(order),
        (Reading::Waiting, Answer::MaybeAccepted) => {
            Step::Decided(rejected_while_waiting(order, &err, current))
        }
        (Reading::Waiting, _) => return Settled::StillWaiting(order, err),
        (Reading::Undecidable, _) => Step::Decided(undecidable(order, &err, current)),
    };
    Settled::Done(step)
}

fn confirm(order: Decided) -> Step {
    Step::Confirm(Awaiting {
        accepted_lines: order.lines.iter().any(|line| line.accepted),
        claim: order.claim,
        accepted_at: Instant::now(),
    })
}

/// An OR21 error that certainly did not accept the order.
fn refused_or_failed(order: Decided, err: MarketplaceError) -> Outcome {
    let id = order.claim.order_id.clone();
    let payload = json!({"stage": "accept", "error": err.to_string(), "lines": order.lines});
    if let MarketplaceError::Unsendable { .. } = err {
        return Outcome::refused_by_or21(order.claim, err.to_string(), payload);
    }
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

/// The sends allowed for an order are used up, every answer unclear or the last a refusal: a
/// later run reads its real state before any re-send.
fn gave_up(order: Decided, unclear: &[MarketplaceError], last: MarketplaceError) -> Outcome {
    let id = order.claim.order_id.clone();
    let earlier: Vec<String> = unclear.iter().map(ToString::to_string).collect();
    let details = match earlier.first() {
        Some(first) => format!(
            "OR21 for order {id} failed {} times (marketplace.retry_attempts, marketplace.retry_budget): first {first}, last {last}. A later run re-reads it before any re-send.",
            earlier.len() + 1
        ),
        None => format!(
            "OR21 for order {id} answered {last} and no retry is left (marketplace.retry_attempts, marketplace.retry_budget). A later run re-reads it before any re-send."
        ),
    };
    let payload = json!({"stage": "accept", "error": last.to_string(), "earlier_errors": earlier});
    Outcome::failed(order.claim, Retry::WhenDue, details, payload)
}

fn disappeared(order: Decided, err: &MarketplaceError) -> Outcome {
    let details = format!(
        "Order {} disappeared from the marketplace after OR21 answered {err}. Check it in the seller portal.",
        order.claim.order_id
    );
    let payload = json!({"stage": "accept", "error": err.to_string()});
    Outcome::failed(order.claim, Retry::Never, details, payload)
}

fn not_reread(order: Decided, err: &MarketplaceError, read_err: &str) -> Outcome {
    let details = format!(
        "OR21 for order {} may or may not have taken effect ({err}) and the order could not be re-read ({read_err}). Nothing more was sent; a later run re-reads it before any re-send.",
        order.claim.order_id
    );
    let payload = json!({"stage": "accept", "error": err.to_string(), "reread_error": read_err});
    Outcome::failed(order.claim, Retry::WhenDue, details, payload)
}

/// A 400 without ORDER_INVALID_STATE, and the re-read shows the order still waiting: the
/// request itself is wrong for this order, and sending it again sends the same.
fn rejected_while_waiting(order: Decided, err: &MarketplaceError, current: &Order) -> Outcome {
    let details = format!(
        "The marketplace refused to accept order {}: {err}. A re-read shows it still {}. Check the order in the seller portal; accept or refuse it there, or fix the cause and use `failures retry`.",
        order.claim.order_id, current.order_state
    );
    let payload = json!({"stage": "accept", "error": err.to_string(), "lines": order.lines, "order": current.raw});
    Outcome::refused_by_or21(order.claim, details, payload)
}

fn undecidable(order: Decided, err: &MarketplaceError, current: &Order) -> Outcome {
    let details = format!(
        "OR21 for order {} answered {err} and the order now reads {}. Nothing more was sent in this run; a later run re-reads it before any re-send.",
        order.claim.order_id, current.order_state
    );
    let payload = json!({"stage": "accept", "error": err.to_string(), "order": current.raw});
    Outcome::failed(order.claim, Retry::WhenDue, details, payload)
}
