//! Validate: one OR11 read per 100 orders due, every `validation.interval`, until the
//! marketplace shows each one accepted or cancelled.
//!
//! The clock starts when there is an order to watch: its first tick, one interval after that
//! order's 204, reads every order accepted by then, and each read order is read again at the next
//! tick. Right after a 204 an order can still read WAITING_ACCEPTANCE: that is lag, so it is
//! read again, up to `validation.max_attempts` times. A read that fails does not count as an
//! attempt, but cannot stretch validation past `Settings::validation_deadline`.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::accept::Awaiting;
use super::outcome::{
    Contradiction, Ending, Failure, Outcome, OutcomeSender, Reading, Retry, Verdict, read, report,
};
use super::{Context, RunError};
use crate::db::queue::Claim;
use crate::marketplace::{MarketplaceError, Order};

/// OR11 takes at most 100 order ids.
const READ_CHUNK: usize = 100;

/// An accepted order being watched.
struct Watch {
    claim: Claim,
    accepted_at: Instant,
    accepted_lines: bool,
    next_read: Instant,
    reads: u32,
    last_seen: Option<Order>,
    last_error: Option<String>,
}

pub async fn validate_all(
    ctx: &Context,
    mut incoming: mpsc::UnboundedReceiver<Awaiting>,
    outcomes: OutcomeSender,
) -> Result<(), RunError> {
    let interval = ctx.settings.validation.interval;
    let mut watching: HashMap<String, Watch> = HashMap::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut more_coming = true;
    while more_coming || !watching.is_empty() {
        tokio::select! {
            order = incoming.recv(), if more_coming => match order {
                Some(order) => {
                    if watching.is_empty() {
                        ticks.reset();
                    }
                    // Due at the next tick, whenever in the interval its 204 came.
                    let watch = Watch {
                        next_read: order.accepted_at,
                        accepted_at: order.accepted_at,
                        accepted_lines: order.accepted_lines,
                        claim: order.claim,
                        reads: 0,
                        last_seen: None,
                        last_error: None,
                    };
                    watching.insert(watch.claim.order_id.clone(), watch);
                }
                None => more_coming = false,
            },
            tick = ticks.tick(), if !watching.is_empty() => {
                read_due(ctx, &mut watching, tick.into_std(), &outcomes).await?;
            }
        }
    }
    Ok(())
}

/// Reads every order due at `tick`, in chunks of 100, and settles those with a verdict.
async fn read_due(
    ctx: &Context,
    watching: &mut HashMap<String, Watch>,
    tick: Instant,
    outcomes: &OutcomeSender,
) -> Result<(), RunError> {
    let due: Vec<String> = watching
        .values()
        .filter(|w| w.next_read <= tick)
        .map(|w| w.claim.order_id.clone())
        .collect();
    for chunk in due.chunks(READ_CHUNK) {
        match ctx.client.orders_by_ids(chunk).await {
            Ok(orders) => {
                let mut by_id: HashMap<String, Order> = orders
                    .into_iter()
                    .map(|o| (o.order_id.clone(), o))
                    .collect();
                for id in chunk {
                    if let Some(mut watch) = watching.remove(id) {
                        watch.reads += 1;
                        watch.last_seen = by_id.remove(id);
                        match verdict(ctx, &watch) {
                            Some(verdict) => report(
                                outcomes,
                                Outcome {
                                    claim: watch.claim,
                                    verdict,
                                },
                            ),
                            None => {
                                watch.next_read = tick + ctx.settings.validation.interval;
                                watching.insert(id.clone(), watch);
                            }
                        }
                    }
                }
            }
            Err(err @ MarketplaceError::Unauthorized { .. }) => {
                return Err(RunError::Unauthorized(err));
            }
            Err(err) => {
                tracing::warn!(orders = chunk.len(), error = %err, "validation read failed; trying again next interval");
                let deadline = ctx.settings.validation_deadline();
                for id in chunk {
                    if let Some(mut watch) = watching.remove(id) {
                        watch.last_error = Some(err.to_string());
                        if watch.accepted_at.elapsed() >= deadline {
                            report(outcomes, unconfirmed(watch));
                        } else {
                            watch.next_read = tick + ctx.settings.validation.interval;
                            watching.insert(id.clone(), watch);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// What the latest read says, or `None` to read again.
fn verdict(ctx: &Context, watch: &Watch) -> Option<Verdict> {
    let max_reads = ctx.settings.validation.max_attempts;
    let state = match &watch.last_seen {
        Some(order) => match read(order) {
            Reading::Accepted => {
                let note = format!("Validated as '{}'.", order.order_state);
                return Some(Verdict::accepted_as_read(order, note));
            }
            // Refused after a 204 that refused every line: as decided.
            Reading::Refused(ending) if !watch.accepted_lines => {
                return Some(Verdict::Refused(ending));
            }
            // Refused although OR21 accepted lines: it contradicts what we sent.
            Reading::Refused(ending) => {
                return Some(refused_after_acceptance(watch, order, ending));
            }
            Reading::Cancelled(mut ending) => {
                ending.note = format!("Cancelled after acceptance: {}", ending.note);
                return Some(Verdict::Cancelled(ending));
            }
            Reading::Waiting | Reading::Undecidable => order.order_state.to_string(),
        },
        None => "not returned by OR11".to_string(),
    };
    if watch.reads < max_reads {
        return None;
    }
    let details = format!(
        "Order {} was accepted (OR21 answered 204) but still reads {state} after {} reads over {}. Check it in the seller portal: accept or refuse it there, then resolve this failure.",
        watch.claim.order_id,
        watch.reads,
        humantime::format_duration(round_to_millis(watch.accepted_at.elapsed())),
    );
    let payload = json!({
        "stage": "validate",
        "last_state": state,
        "reads": watch.reads,
        "order": watch.last_seen.as_ref().map(|o| &o.raw),
    });
    Some(Verdict::Failed(Failure {
        details,
        payload,
        retry: Retry::Never,
        releases_reservations: false,
    }))
}

/// The marketplace reads REFUSED an order whose OR21 accepted lines and was answered 204: it is
/// recorded `refused`, as the marketplace has it, with a failure for a person, since nothing we
/// sent explains it (a marketplace-side refusal, a seller-portal action, a fault).
fn refused_after_acceptance(watch: &Watch, order: &Order, ending: Ending) -> Verdict {
    let details = format!(
        "Order {} reads REFUSED at the marketplace although our OR21 accepted its lines and was answered 204 ({}). It is recorded refused; check in the seller portal who refused it and why, then resolve this failure.",
        watch.claim.order_id, ending.note
    );
    let payload =
        json!({"stage": "validate", "last_state": order.order_state.as_str(), "order": order.raw});
    Verdict::RefusedAfterAcceptance(Box::new(Contradiction {
        ending,
        details,
        payload,
    }))
}

/// Reads kept failing until the deadline: a later run's preflight reads the real state, so the
/// failure is retryable and nothing is sent again blindly.
fn unconfirmed(watch: Watch) -> Outcome {
    let details = format!(
        "Order {} was accepted (OR21 answered 204) but could not be confirmed: the marketplace could not be read ({}). A later run reads its real state before anything else.",
        watch.claim.order_id,
        watch.last_error.as_deref().unwrap_or("no answer"),
    );
    let payload = json!({
        "stage": "validate",
        "error": watch.last_error,
        "reads": watch.reads,
        "order": watch.last_seen.as_ref().map(|o| &o.raw),
    });
    Outcome::failed(watch.claim, Retry::WhenDue, details, payload)
}

fn round_to_millis(duration: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(duration.as_millis() as u64)
}
