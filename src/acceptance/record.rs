//! Record: writes outcomes in batches, each order's history row and failure row in one
//! transaction, only while the order is still this run's claim, and decides when a failed order
//! is tried again.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::heartbeat::Hold;
use super::outcome::{Contradiction, Failure, Outcome, Retry, Verdict};
use super::{Context, RunError, Tally};
use crate::config::AcceptanceSettings;
use crate::db::decisions;
use crate::db::outcomes::{self, FailureRecord, OutcomeRecord};
use crate::db::queue::Claim;

/// Outcomes written per transaction.
const BATCH: usize = 100;

pub async fn record_all(
    ctx: &Context,
    hold: &Hold,
    mut incoming: mpsc::UnboundedReceiver<Outcome>,
    tally: &Tally,
) -> Result<(), RunError> {
    let mut batch = Vec::with_capacity(BATCH);
    while incoming.recv_many(&mut batch, BATCH).await > 0 {
        let mut records: Vec<OutcomeRecord> = batch
            .drain(..)
            .map(|outcome| to_record(outcome, &ctx.settings.acceptance))
            .collect();
        add_decision_reasons(ctx, &mut records).await?;
        let lost = outcomes::record_outcomes(&ctx.pool, ctx.shop(), hold.run_id, &records)
            .await
            .map_err(RunError::database("recording outcomes"))?;
        for record in &records {
            if lost.contains(&record.order_id) {
                lost_claim(ctx.shop(), record, tally);
            } else {
                count(ctx.shop(), record, tally);
                log(record);
            }
        }
    }
    Ok(())
}

/// Ends the note of an order sent to OR21 with why each line was accepted or refused, so the
/// history says it as `acceptance_decisions` does (an order in review has its reasons already).
async fn add_decision_reasons(
    ctx: &Context,
    records: &mut [OutcomeRecord],
) -> Result<(), RunError> {
    let decided: Vec<(&str, i32)> = records
        .iter()
        .filter(|r| matches!(r.status, "accepted" | "refused"))
        .map(|r| (r.order_id.as_str(), r.attempt))
        .collect();
    if decided.is_empty() {
        return Ok(());
    }
    let reasons: HashMap<String, String> =
        decisions::reasons_of_claims(&ctx.pool, ctx.shop(), &decided)
            .await
            .map_err(RunError::database("reading line decisions"))?
            .into_iter()
            .collect();
    for record in records.iter_mut() {
        if let Some(why) = reasons.get(&record.order_id) {
            record.note = format!("{} Decided: {why}", record.note);
        }
    }
    Ok(())
}

/// Turns a verdict into rows; a transient failure gets a retry time while attempts are left.
fn to_record(outcome: Outcome, settings: &AcceptanceSettings) -> OutcomeRecord {
    let Outcome { claim, verdict } = outcome;
    let record = |status, note, reason_code, lines, release| OutcomeRecord {
        order_id: claim.order_id.clone(),
        attempt: claim.attempt,
        status,
        note,
        reason_code,
        lines,
        release_reservations: release,
        // Only a status no later run changes by itself ends a person's decision.
        carries_out_review: status != "in_review",
        retry_in: None,
        failure: None,
    };
    match verdict {
        Verdict::Accepted { note, lines } => record("accepted", note, None, lines, None),
        Verdict::Refused(ending) => record(
            "refused",
            ending.note,
            ending.reason_code,
            Some(ending.lines),
            Some("refused"),
        ),
        Verdict::RefusedAfterAcceptance(contradiction) => {
            let Contradiction {
                ending,
                details,
                payload,
            } = *contradiction;
            OutcomeRecord {
                failure: Some(FailureRecord {
                    details,
                    payload,
                    retryable: false,
                }),
                ..record(
                    "refused",
                    ending.note,
                    ending.reason_code,
                    Some(ending.lines),
                    Some("refused"),
                )
            }
        }
        Verdict::Cancelled(ending) => record(
            "cancelled",
            ending.note,
            ending.reason_code,
            Some(ending.lines),
            Some("cancelled"),
        ),
        Verdict::InReview { note, lines } => record("in_review", note, None, Some(lines), None),
        Verdict::Failed(failure) => failed(claim, failure, settings),
    }
}

fn failed(claim: Claim, failure: Failure, settings: &AcceptanceSettings) -> OutcomeRecord {
    let retry_in = match failure.retry {
        Retry::WhenDue => retry_delay(settings, claim.attempt),
        Retry::Never => None,
    };
    let details = match (failure.retry, retry_in) {
        (Retry::WhenDue, Some(delay)) => format!(
            "{} Attempt {} of {}; next attempt in {}.",
            failure.details,
            claim.attempt,
            settings.max_attempts,
            humantime::format_duration(delay)
        ),
        (Retry::WhenDue, None) => format!(
            "{} That was the last of {} attempts (acceptance.max_attempts): a person must decide.",
            failure.details, settings.max_attempts
        ),
        (Retry::Never, _) => failure.details,
    };
    OutcomeRecord {
        order_id: claim.order_id,
        attempt: claim.attempt,
        status: "acceptance_failed",
        note: details.clone(),
        reason_code: None,
        lines: None,
        release_reservations: failure.releases_reservations.then_some("or21_failed"),
        // A failure retried later still has the person's decision to carry out.
        carries_out_review: retry_in.is_none(),
        retry_in,
        failure: Some(FailureRecord {
            details,
            payload: failure.payload,
            retryable: retry_in.is_some(),
        }),
    }
}

/// `retry_delay`, doubling with each attempt, while attempts are left.
fn retry_delay(settings: &AcceptanceSettings, attempt: i32) -> Option<Duration> {
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    (attempt < settings.max_attempts).then(|| {
        let doublings = attempt.saturating_sub(1).min(16);
        settings.retry_delay.saturating_mul(1 << doublings)
    })
}

fn count(shop: &str, record: &OutcomeRecord, tally: &Tally) {
    let counter = match record.status {
        "accepted" => &tally.accepted,
        "refused" => &tally.refused,
        "cancelled" => &tally.cancelled,
        "in_review" => &tally.in_review,
        _ => &tally.failed,
    };
    Tally::add(counter, 1);
    if record.retry_in.is_some() {
        Tally::add(&tally.retry_scheduled, 1);
    }
    metrics::counter!("acceptance_orders_total", "outcome" => record.status, "shop" => shop.to_string())
        .increment(1);
}

/// Another run holds the order now (this one froze or lost the database past its lease), or its
/// status moved on: what this run found is not written over it.
fn lost_claim(shop: &str, record: &OutcomeRecord, tally: &Tally) {
    Tally::add(&tally.lost, 1);
    metrics::counter!("acceptance_lost_claims_total", "shop" => shop.to_string()).increment(1);
    tracing::warn!(order_id = %record.order_id, attempt = record.attempt, status = record.status, note = %record.note, "outcome not recorded: the order is no longer this run's claim (another run took it over); its current holder records it");
}

fn log(record: &OutcomeRecord) {
    if record.failure.is_some() {
        tracing::warn!(order_id = %record.order_id, attempt = record.attempt, status = record.status, note = %record.note, "order outcome");
    } else {
        tracing::info!(order_id = %record.order_id, attempt = record.attempt, status = record.status, note = %record.note, "order outcome");
    }
}
