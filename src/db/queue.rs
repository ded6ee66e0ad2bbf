//! The acceptance queue: orders enter it as `pending_acceptance` history rows and leave it when a
//! run claims them with an `accepting` row, which is both the lease and the audit trail.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// An order read from the marketplace, as it is stored.
pub struct StoredOrder<'a> {
    pub order_id: &'a str,
    pub raw: &'a serde_json::Value,
    pub placed_at: Option<DateTime<Utc>>,
}

/// An order this run now holds: nobody else takes it until `lease` runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub order_id: String,
    /// 1 for the first claim of the order, counting up with each retry.
    pub attempt: i32,
}

/// Stores orders not seen before, each with a `pending_acceptance` row, in one transaction;
/// returns the ids that were new. Known orders are left as they are, so importing the same
/// page twice (Mirakl's date filters overlap on purpose) changes nothing.
pub async fn insert_new_orders(
    pool: &PgPool,
    orders: &[StoredOrder<'_>],
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<&str> = orders.iter().map(|o| o.order_id).collect();
    let raws: Vec<&serde_json::Value> = orders.iter().map(|o| o.raw).collect();
    let placed: Vec<Option<DateTime<Utc>>> = orders.iter().map(|o| o.placed_at).collect();
    let mut tx = pool.begin().await?;
    let inserted: Vec<String> = sqlx::query_scalar(
        r#"
        INSERT INTO orders (order_id, raw_order_data, placed_at)
        SELECT * FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[])
        ON CONFLICT (order_id) DO NOTHING
        RETURNING order_id
        "#,
    )
    .bind(&ids)
    .bind(&raws)
    .bind(&placed)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        r#"
        INSERT INTO order_status_history (order_id, status, notes)
        SELECT unnest($1::text[]), 'pending_acceptance', 'imported'
        "#,
    )
    .bind(&inserted)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Claims up to `limit` due orders, oldest marketplace creation first: pending ones, those whose
/// lease expired (their worker died), and retryable failures whose retry time has come.
///
/// One short transaction: `SKIP LOCKED` lets concurrent runs take disjoint sets, and the
/// `accepting` rows it inserts move each order's `claimable_at` to the end of the lease (the
/// projection trigger), so a run that starts after this commit does not see them as due.
/// `only` limits the claim to those order ids.
pub async fn claim_due_orders(
    pool: &PgPool,
    worker_id: &str,
    limit: u32,
    lease: Duration,
    only: Option<&[String]>,
) -> Result<Vec<Claim>, sqlx::Error> {
    sqlx::query_as::<_, (String, i32)>(
        r#"
        WITH due AS (
            SELECT order_id, attempt + 1 AS attempt
            FROM order_current_status
            WHERE claimable_at IS NOT NULL AND claimable_at <= now()
              AND ($4::text[] IS NULL OR order_id = ANY($4))
            ORDER BY order_created_at, order_id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        INSERT INTO order_status_history (order_id, status, notes, attempt, next_attempt_at, worker_id)
        SELECT order_id, 'accepting',
               format('Claimed by %s (attempt %s).', $2::text, attempt),
               attempt, now() + make_interval(secs => $3), $2
        FROM due
        RETURNING order_id, attempt
        "#,
    )
    .bind(i64::from(limit))
    .bind(worker_id)
    .bind(lease.as_secs_f64())
    .bind(only)
    .fetch_all(pool)
    .await
    .map(|rows| {
        rows.into_iter()
            .map(|(order_id, attempt)| Claim { order_id, attempt })
            .collect()
    })
}

/// Replaces the stored JSON of orders with what the marketplace just returned.
pub async fn refresh_orders(pool: &PgPool, orders: &[StoredOrder<'_>]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = orders.iter().map(|o| o.order_id).collect();
    let raws: Vec<&serde_json::Value> = orders.iter().map(|o| o.raw).collect();
    let placed: Vec<Option<DateTime<Utc>>> = orders.iter().map(|o| o.placed_at).collect();
    sqlx::query(
        r#"
        UPDATE orders o
        SET raw_order_data = fresh.raw, placed_at = coalesce(fresh.placed_at, o.placed_at), updated_at = now()
        FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[]) AS fresh(order_id, raw, placed_at)
        WHERE o.order_id = fresh.order_id
        "#,
    )
    .bind(&ids)
    .bind(&raws)
    .bind(&placed)
    .execute(pool)
    .await?;
    Ok(())
}
