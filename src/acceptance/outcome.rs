//! What an order's marketplace state means for us, and what became of each claimed order.
//! Preflight, accept and validate all decide from the same reading of a state.

use crate::db::queue::Claim;
use crate::marketplace::{Order, OrderState};

/// What a state read from OR11 tells about the acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// WAITING_ACCEPTANCE: not decided yet (or, right after a 204, lag).
    Waiting,
    /// WAITING_DEBIT or any later state of an accepted order.
    Accepted,
    /// REFUSED or CANCELED; the note says which, with the reason code.
    Cancelled { note: String },
    /// A state in which an order can be neither accepted nor counted as accepted (STAGING, or a
    /// state Mirakl added after this code was written).
    Undecidable,
}

pub fn read(order: &Order) -> Reading {
    match &order.order_state {
        OrderState::WaitingAcceptance => Reading::Waiting,
        state if state.proves_acceptance() => Reading::Accepted,
        state @ (OrderState::Refused | OrderState::Canceled) => Reading::Cancelled {
            note: match &order.order_state_reason_code {
                Some(reason) => format!("Order is {state} at the marketplace (reason: {reason})."),
                None => format!("Order is {state} at the marketplace."),
            },
        },
        _ => Reading::Undecidable,
    }
}

/// The line ids OR21 must decide on, all of them.
pub fn line_ids(order: &Order) -> Vec<String> {
    order
        .order_lines
        .iter()
        .map(|line| line.order_line_id.clone())
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
    Accepted { note: String },
    Cancelled { note: String },
    Failed(Failure),
}

#[derive(Debug)]
pub struct Failure {
    /// For a person: what failed and what to do.
    pub details: String,
    /// The evidence: the order as last seen, the error, the response.
    pub payload: serde_json::Value,
    pub retry: Retry,
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
            verdict: Verdict::Accepted { note },
        }
    }

    pub fn cancelled(claim: Claim, note: String) -> Self {
        Self {
            claim,
            verdict: Verdict::Cancelled { note },
        }
    }

    pub fn failed(claim: Claim, retry: Retry, details: String, payload: serde_json::Value) -> Self {
        Self {
            claim,
            verdict: Verdict::Failed(Failure {
                details,
                payload,
                retry,
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
