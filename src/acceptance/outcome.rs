//! What an order's marketplace state means for us, and what became of each claimed order.
//! Preflight, accept and validate all decide from the same reading of a state.

use serde_json::{Value, json};

use crate::db::queue::Claim;
use crate::marketplace::{Order, OrderState};

/// What a state read from OR11 tells about the acceptance.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// WAITING_ACCEPTANCE: not decided yet (or, right after a 204, lag).
    Waiting,
    /// WAITING_DEBIT or any later state of an accepted order.
    Accepted,
    /// REFUSED: every line refused, by this worker or by the marketplace (e.g. automatically at
    /// its acceptance deadline).
    Refused(Ending),
    /// CANCELED, by the operator or the customer.
    Cancelled(Ending),
    /// A state in which an order can be neither accepted nor counted as accepted (STAGING, or a
    /// state Mirakl added after this code was written).
    Undecidable,
}

/// How an order ended at the marketplace, as the history records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub note: String,
    /// `order_state_reason_code`, kept in its own history column.
    pub reason_code: Option<String>,
    pub lines: Value,
}

impl Ending {
    fn of(order: &Order) -> Self {
        let state = &order.order_state;
        let note = match &order.order_state_reason_code {
            Some(reason) => format!("Order is {state} at the marketplace (reason: {reason})."),
            None => format!("Order is {state} at the marketplace."),
        };
        Ending {
            note,
            reason_code: order.order_state_reason_code.clone(),
            lines: line_states(order),
        }
    }
}

pub fn read(order: &Order) -> Reading {
    match &order.order_state {
        OrderState::WaitingAcceptance => Reading::Waiting,
        state if state.proves_acceptance() => Reading::Accepted,
        OrderState::Refused => Reading::Refused(Ending::of(order)),
        OrderState::Canceled => Reading::Cancelled(Ending::of(order)),
        _ => Reading::Undecidable,
    }
}

/// The order's lines as the history's `lines` column keeps them; `accepted` is null while a
/// line's state says neither.
pub fn line_states(order: &Order) -> Value {
    order
        .order_lines
        .iter()
        .map(|line| {
            let state = &line.order_line_state;
            let accepted = match state {
                OrderState::Refused => Some(false),
                state if state.proves_acceptance() => Some(true),
                _ => None,
            };
            json!({
                "order_line_id": line.order_line_id,
                "offer_sku": line.offer_sku,
                "quantity": line.quantity,
                "state": state.as_str(),
                "accepted": accepted,
            })
        })
        .collect()
}

/// What became of one claimed order in this run.
#[derive(Debug)]
pub struct Outcome {
    pub claim: Claim,
    pub verdict: Verdict,
}

#[derive(Debug)]
pub enum Verdict {
    /// `lines`: the line states, when the order was read.
    Accepted {
        note: String,
        lines: Option<Value>,
    },
    Refused(Ending),
    /// REFUSED at the marketplace although our OR21 accepted lines: recorded `refused`, with a
    /// failure for a person.
    RefusedAfterAcceptance(Box<Contradiction>),
    Cancelled(Ending),
    /// A rule sent a line to review: a person decides, and no OR21 was sent.
    InReview {
        note: String,
        lines: Value,
    },
    Failed(Failure),
}

impl Verdict {
    /// An order the marketplace shows accepted; the note names the lines it shows refused.
    pub fn accepted_as_read(order: &Order, note: String) -> Self {
        let refused: Vec<&str> = order
            .order_lines
            .iter()
            .filter(|line| line.order_line_state == OrderState::Refused)
            .map(|line| line.order_line_id.as_str())
            .collect();
        let note = match refused.is_empty() {
            true => note,
            false => format!("{note} Lines refused: {}.", refused.join(", ")),
        };
        Verdict::Accepted {
            note,
            lines: Some(line_states(order)),
        }
    }
}

/// What the marketplace shows against what we sent, for a person.
#[derive(Debug)]
pub struct Contradiction {
    pub ending: Ending,
    pub details: String,
    pub payload: Value,
}

#[derive(Debug)]
pub struct Failure {
    /// For a person: what failed and what to do.
    pub details: String,
    /// The evidence: the order as last seen, the error, the response.
    pub payload: serde_json::Value,
    pub retry: Retry,
    /// OR21 certainly accepted nothing and is not retried: the stock reserved for the order goes
    /// back.
    pub releases_reservations: bool,
}

/// Whether a later run may try the order again by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The cause may pass (network, marketplace busy): retried after a growing delay, up to
    /// `acceptance.max_attempts` runs.
    WhenDue,
    /// Retrying cannot help; a person decides.
    Never,
}

impl Outcome {
    pub fn accepted(claim: Claim, note: String) -> Self {
        Self {
            claim,
            verdict: Verdict::Accepted { note, lines: None },
        }
    }

    pub fn accepted_as_read(claim: Claim, order: &Order, note: String) -> Self {
        Self {
            claim,
            verdict: Verdict::accepted_as_read(order, note),
        }
    }

    pub fn refused(claim: Claim, ending: Ending) -> Self {
        Self {
            claim,
            verdict: Verdict::Refused(ending),
        }
    }

    pub fn cancelled(claim: Claim, ending: Ending) -> Self {
        Self {
            claim,
            verdict: Verdict::Cancelled(ending),
        }
    }

    pub fn in_review(claim: Claim, note: String, lines: Value) -> Self {
        Self {
            claim,
            verdict: Verdict::InReview { note, lines },
        }
    }

    pub fn failed(claim: Claim, retry: Retry, details: String, payload: serde_json::Value) -> Self {
        Self {
            claim,
            verdict: Verdict::Failed(Failure {
                details,
                payload,
                retry,
                releases_reservations: false,
            }),
        }
    }

    /// OR21 was answered with an error that certainly accepted nothing and cannot pass.
    pub fn refused_by_or21(claim: Claim, details: String, payload: serde_json::Value) -> Self {
        Self {
            claim,
            verdict: Verdict::Failed(Failure {
                details,
                payload,
                retry: Retry::Never,
                releases_reservations: true,
            }),
        }
    }
}

/// Where the stages send outcomes for the record stage.
pub type OutcomeSender = tokio::sync::mpsc::UnboundedSender<Outcome>;

/// Hands an outcome to the record stage. That stage goes away only when it failed, and the run
/// reports its error; an outcome sent after that is not lost either: its order keeps the lease,
/// and a later run reads its real state again.
pub fn report(outcomes: &OutcomeSender, outcome: Outcome) {
    let _ = outcomes.send(outcome);
}
