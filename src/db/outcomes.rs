//! Writing what became of each claimed order: its history row, its failure row for a person,
//! and the resolution of the failures its earlier attempts left.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;

use super::{decisions, stock};

/// The process name on every failure this worker writes.
pub const PROCESS_NAME: &str = "OrderAcceptance";

/// Who resolves failures that need no person.
pub const RESOLVED_BY_WORKER: &str = "order-acceptance";

/// One order's outcome, ready to store.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub order_id: String,
    pub attempt: i32,
    /// `accepted`, `refused`, `cancelled`, `in_review` or `acceptance_failed`.
    pub status: &'static str,
    pub note: String,
    /// The marketplace's `order_state_reason_code` of a refused or cancelled order.
    pub reason_code: Option<String>,
    /// The order's lines as the outcome saw them (history `lines`).
    pub lines: Option<serde_json::Value>,
    /// Why the order's open stock reservations go back, when they do.
    pub release_reservations: Option<&'static str>,
    /// The outcome ends the person's pending review decision for the order, if it has one.
    pub carries_out_review: bool,
    /// For a failure a later run retries: how long from now.
    pub retry_in: Option<Duration>,
    pub failure: Option<FailureRecord>,
}

#[derive(Debug, Clone)]
pub struct FailureRecord {
    pub details: String,
    pub payload: serde_json::Value,
    pub retryable: bool,
}

/// Stores a batch of outcomes of run `run_id` (of `shop`) in one transaction, so an order never has its
/// history row without its failure row or the other way round, and reservations and review
/// decisions are closed with the outcome that closes them. Returns the orders whose outcome was
/// not written because the run no longer holds them.
///
/// The fence: each order's projection row is locked (in id order) and must still show this run's
/// claim, `accepting` with the outcome's attempt. An order another run took over (this one froze
/// or lost the database past its lease), or that someone else moved on, keeps what its current
/// holder writes.
///
/// Open retryable failures of the same orders are resolved first: the order has now been
/// decided, or a newer failure row (below) supersedes them, so the inbox shows one line per
/// order.
pub async fn record_outcomes(
    pool: &PgPool,
    shop: &str,
    run_id: i64,
    outcomes: &[OutcomeRecord],
) -> Result<Vec<String>, sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let held = still_held(&mut tx, shop, run_id, outcomes).await?;
    let (outcomes, lost): (Vec<&OutcomeRecord>, Vec<&OutcomeRecord>) =
        outcomes.iter().partition(|o| held.contains(&o.order_id));
    let lost: Vec<String> = lost.into_iter().map(|o| o.order_id.clone()).collect();
    if outcomes.is_empty() {
        return Ok(lost);
    }
    let ids: Vec<&str> = outcomes.iter().map(|o| o.order_id.as_str()).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status).collect();
    let notes: Vec<&str> = outcomes.iter().map(|o| o.note.as_str()).collect();
    let reason_codes: Vec<Option<&str>> =
        outcomes.iter().map(|o| o.reason_code.as_deref()).collect();
    let lines: Vec<Option<&serde_json::Value>> =
        outcomes.iter().map(|o| o.lines.as_ref()).collect();
    let retry_secs: Vec<Option<f64>> = outcomes
        .iter()
        .map(|o| o.retry_in.map(|d| d.as_secs_f64()))
        .collect();
    let resolutions: Vec<String> = outcomes
        .iter()
        .map(|o| resolution_of_earlier_failures(o))
        .collect();

    sqlx::query(
        r#"
        INSERT INTO order_status_history
            (shop, order_id, status, notes, attempt, next_attempt_at, reason_code, lines)
        SELECT $8, order_id, status, note, attempt,
               now() + make_interval(secs => retry_secs), reason_code, lines
        FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::text[],
                    $7::jsonb[])
             AS o(order_id, status, note, attempt, retry_secs, reason_code, lines)
        "#,
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&notes)
    .bind(&attempts)
    .bind(&retry_secs)
    .bind(&reason_codes)
    .bind(&lines)
    .bind(shop)
    .execute(&mut *tx)
    .await?;

    let releases: Vec<(&str, &str)> = outcomes
        .iter()
        .filter_map(|o| o.release_reservations.map(|why| (o.order_id.as_str(), why)))
        .collect();
    stock::release_orders(&mut tx, shop, &releases).await?;
    let reviews_done: Vec<(&str, &str)> = outcomes
        .iter()
        .filter(|o| o.carries_out_review)
        .map(|o| (o.order_id.as_str(), o.status))
        .collect();
    decisions::mark_reviews_carried_out(&mut tx, shop, &reviews_done).await?;

    sqlx::query(
        r#"
        UPDATE process_failures f
        SET resolved_at = now(), resolution_note = r.note, resolved_by = $3
        FROM unnest($1::text[], $2::text[]) AS r(order_id, note)
        WHERE f.shop = $5 AND f.related_id = r.order_id AND f.resolved_at IS NULL AND f.retryable
          AND f.process_name = $4
        "#,
    )
    .bind(&ids)
    .bind(&resolutions)
    .bind(RESOLVED_BY_WORKER)
    .bind(PROCESS_NAME)
    .bind(shop)
    .execute(&mut *tx)
    .await?;

    let failures: Vec<(&str, &FailureRecord)> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|f| (o.order_id.as_str(), f)))
        .collect();
    if !failures.is_empty() {
        let ids: Vec<&str> = failures.iter().map(|(id, _)| *id).collect();
        let details: Vec<&str> = failures.iter().map(|(_, f)| f.details.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = failures.iter().map(|(_, f)| &f.payload).collect();
        let retryable: Vec<bool> = failures.iter().map(|(_, f)| f.retryable).collect();
        sqlx::query(
            r#"
            INSERT INTO process_failures
                (shop, related_id, process_name, details, payload, retryable)
            SELECT $6, order_id, $5, details, payload, retryable
            FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bool[])
                 AS f(order_id, details, payload, retryable)
            "#,
        )
        .bind(&ids)
        .bind(&details)
        .bind(&payloads)
        .bind(&retryable)
        .bind(PROCESS_NAME)
        .bind(shop)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(lost)
}

/// The orders of `outcomes` whose current row is still this run's claim of that attempt, locked
/// until the transaction ends.
async fn still_held(
    tx: &mut sqlx::PgConnection,
    shop: &str,
    run_id: i64,
    outcomes: &[OutcomeRecord],
) -> Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<&str> = outcomes.iter().map(|o| o.order_id.as_str()).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
    let held: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT cs.order_id
        FROM order_current_status cs
        JOIN unnest($1::text[], $2::int[]) AS c(order_id, attempt) ON c.order_id = cs.order_id
        WHERE cs.shop = $4 AND cs.status = 'accepting' AND cs.run_id = $3 AND cs.attempt = c.attempt
        ORDER BY cs.order_id
        FOR UPDATE OF cs
        "#,
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(run_id)
    .bind(shop)
    .fetch_all(tx)
    .await?;
    Ok(held.into_iter().collect())
}

fn resolution_of_earlier_failures(outcome: &OutcomeRecord) -> String {
    match outcome.status {
        "acceptance_failed" => format!(
            "Superseded by the failure of attempt {} of this order.",
            outcome.attempt
        ),
        status => format!(
            "Resolved automatically: attempt {} recorded the order as {status}.",
            outcome.attempt
        ),
    }
}
