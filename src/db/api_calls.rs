//! `api_calls`: one row per HTTP attempt to the marketplace, the audit trail of every exchange.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// One attempt as it will be stored. Nothing here may hold the API key: the client builds it
/// from the path, query and body only, never from headers.
#[derive(Debug)]
pub struct NewApiCall<'a> {
    /// The shop whose key made the call: `related_id` is an order of this shop.
    pub shop: &'a str,
    /// `marketplace.name`, e.g. `BestBuy`.
    pub service: &'a str,
    /// `OR11`, `OR21` or `A01`.
    pub endpoint: &'a str,
    /// The order the call is about; `None` for batch reads (their ids are in the payload).
    pub related_id: Option<&'a str>,
    pub method: &'a str,
    /// Path and query as sent.
    pub path: &'a str,
    pub request_payload: Option<&'a Value>,
    /// Already cut to `api_calls.max_body_bytes`.
    pub response_body: Option<&'a str>,
    pub response_truncated: bool,
    /// `None` when no response arrived.
    pub status_code: Option<u16>,
    pub is_success: bool,
    /// `None` while the call has not been answered.
    pub duration_ms: Option<u64>,
    /// 1 for the first attempt of a call.
    pub attempt: u32,
    pub error: Option<&'a str>,
}

/// Inserts one row and returns its `call_id`.
pub async fn insert(pool: &PgPool, call: &NewApiCall<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_calls
            (service, endpoint, related_id, method, path, request_payload, response_body,
             response_truncated, status_code, is_success, duration_ms, attempt, error, shop)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         RETURNING call_id",
    )
    .bind(call.service)
    .bind(call.endpoint)
    .bind(call.related_id)
    .bind(call.method)
    .bind(call.path)
    .bind(call.request_payload)
    .bind(call.response_body)
    .bind(call.response_truncated)
    .bind(call.status_code.map(i32::from))
    .bind(call.is_success)
    .bind(
        call.duration_ms
            .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX)),
    )
    .bind(i32::try_from(call.attempt).unwrap_or(i32::MAX))
    .bind(call.error)
    .bind(call.shop)
    .fetch_one(pool)
    .await
}

/// The `error` of a row written before its call was sent, until the answer completes it: a row
/// that keeps it is a call whose answer was never recorded.
pub const UNANSWERED: &str = "sent, but no answer was recorded: the worker stopped or lost the database while the call was in flight; the order's next run re-reads it before any re-send";

/// Completes a row written before its call was sent with what the call got back.
pub async fn complete(
    pool: &PgPool,
    call_id: i64,
    call: &NewApiCall<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_calls
         SET response_body = $2, response_truncated = $3, status_code = $4, is_success = $5,
             duration_ms = $6, error = $7
         WHERE call_id = $1",
    )
    .bind(call_id)
    .bind(call.response_body)
    .bind(call.response_truncated)
    .bind(call.status_code.map(i32::from))
    .bind(call.is_success)
    .bind(
        call.duration_ms
            .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX)),
    )
    .bind(call.error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Of these orders of `shop`, those an OR21 of ours was answered 204 for: accepted, whatever
/// the order reads now.
pub async fn orders_accepted_before(
    pool: &PgPool,
    shop: &str,
    order_ids: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        r#"SELECT DISTINCT related_id FROM api_calls
           WHERE endpoint = 'OR21' AND status_code = 204 AND related_id = ANY($1) AND shop = $2"#,
    )
    .bind(order_ids)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Deletes at most `limit` rows recorded before `cutoff`, oldest first, and returns how many.
/// One short statement per call, so a large backlog never holds locks for long; rows another
/// replica is deleting at the same moment are skipped rather than waited for.
pub async fn delete_older_than(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        r#"DELETE FROM api_calls
           WHERE call_id IN (
               SELECT call_id FROM api_calls
               WHERE "timestamp" < $1
               ORDER BY "timestamp"
               LIMIT $2
               FOR UPDATE SKIP LOCKED
           )"#,
    )
    .bind(cutoff)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Cuts `body` to at most `max_bytes` on a character boundary; true when something was cut.
pub fn cut_body(body: &str, max_bytes: usize) -> (&str, bool) {
    if body.len() <= max_bytes {
        return (body, false);
    }
    let mut end = max_bytes;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    (&body[..end], true)
}

#[cfg(test)]
mod tests {
    use super::cut_body;

    #[test]
    fn cuts_on_a_char_boundary() {
        assert_eq!(cut_body("abc", 3), ("abc", false));
        assert_eq!(cut_body("abcd", 3), ("abc", true));
        // "é" is two bytes: cutting inside it keeps the character out.
        assert_eq!(cut_body("aé", 2), ("a", true));
    }
}
