//! The acceptance queue: orders enter it as `pending_acceptance` history rows and leave it when a
//! run claims them with an `accepting` row, which is both the claim and the audit trail. The run
//! named on the row holds the order while its heartbeat is fresh (`db::runs`); the claim itself
//! releases the orders of runs whose heartbeat is not.
//!
//! `orders.placed_at` is not written here: a trigger derives it from the JSON's `created_date`.

use sqlx::PgPool;

/// An order read from the marketplace, as it is stored.
pub struct StoredOrder<'a> {
    pub order_id: &'a str,
    pub raw: &'a serde_json::Value,
}

/// An order this run now holds: nobody else takes it while the run's heartbeat is fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub order_id: String,
    /// 1 for the first claim of the order, counting up with each retry.
    pub attempt: i32,
}

/// Stores orders of `shop` not seen before, each with a `pending_acceptance` row, in one
/// transaction; returns the ids that were new. Known orders are left as they are, so importing
/// the same page twice (Mirakl's date filters overlap on purpose) changes nothing.
pub async fn insert_new_orders(
    pool: &PgPool,
    shop: &str,
    orders: &[StoredOrder<'_>],
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<&str> = orders.iter().map(|o| o.order_id).collect();
    let raws: Vec<&serde_json::Value> = orders.iter().map(|o| o.raw).collect();
    let mut tx = pool.begin().await?;
    let inserted: Vec<String> = sqlx::query_scalar(
        r#"
        INSERT INTO orders (shop, order_id, raw_order_data)
        SELECT $3, * FROM unnest($1::text[], $2::jsonb[])
        ON CONFLICT (shop, order_id) DO NOTHING
        RETURNING order_id
        "#,
    )
    .bind(&ids)
    .bind(&raws)
    .bind(shop)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        r#"
        INSERT INTO order_status_history (shop, order_id, status, notes)
        SELECT o.shop, o.order_id, 'pending_acceptance',
               'imported' || coalesce(format('. %s: the deadline counts from when the order was stored.', o.created_date_problem), '')
        FROM orders o
        WHERE o.shop = $2 AND o.order_id = ANY($1::text[])
        "#,
    )
    .bind(&inserted)
    .bind(shop)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Claims up to `limit` due orders of `shop` for run `run_id`, oldest marketplace creation first: pending
/// ones, those of runs whose heartbeat went stale (their worker died or froze), and retryable
/// failures whose retry time has come.
///
/// One short transaction. First the stale runs other than this one are released: each one's row
/// is marked under its row lock (so a heartbeat racing it either lands first and keeps the run
/// alive, or sees the release and stops), and its `accepting` orders get `claimable_at = now()`.
/// Then the claim proper, on the `claimable_at` partial index as before: `SKIP LOCKED` lets
/// concurrent runs take disjoint sets, and the `accepting` rows it inserts take each order out of
/// that index (the projection trigger). Both steps cost what is due or held, not what the
/// history holds.
///
/// Last, before it commits, the claim proves that this run still holds: its row, share-locked,
/// must be unreleased and inside its `held_until` now (not at the transaction's start). Else
/// nothing is claimed, the run is released with its orders ([`ClaimError::RunNotHeld`]), and no
/// late heartbeat can bring its hold back. A run paused past its lease before a claim cannot take
/// its orders back under a run no heartbeat keeps, and a run releasing this one concurrently
/// either commits first (this check sees it) or waits on the lock and then sees what this claim
/// took. The lock is taken last, with only the commit after it, so no claim waits on it long.
/// `only` limits the claim to those order ids.
pub async fn claim_due_orders(
    pool: &PgPool,
    shop: &str,
    worker_id: &str,
    run_id: i64,
    limit: u32,
    only: Option<&[String]>,
) -> Result<Vec<Claim>, ClaimError> {
    let mut tx = pool.begin().await?;
    release_stale_runs(&mut tx, run_id).await?;
    let claims = sqlx::query_as::<_, (String, i32)>(
        r#"
        WITH due AS (
            SELECT order_id, attempt + 1 AS attempt
            FROM order_current_status
            WHERE shop = $5 AND claimable_at IS NOT NULL AND claimable_at <= now()
              AND ($4::text[] IS NULL OR order_id = ANY($4))
            ORDER BY order_created_at, order_id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        INSERT INTO order_status_history (shop, order_id, status, notes, attempt, worker_id, run_id)
        SELECT $5, d.order_id, 'accepting',
               format('Claimed by %s, run %s (attempt %s).', $2::text, $3::bigint, d.attempt)
                 || CASE WHEN d.attempt = 1 AND o.created_date_problem IS NOT NULL
                         THEN format(' %s: the deadline counts from when the order was stored (%s).',
                                     o.created_date_problem, o.created_at)
                         ELSE '' END,
               d.attempt, $2, $3
        FROM due d
        JOIN orders o ON o.shop = $5 AND o.order_id = d.order_id
        RETURNING order_id, attempt
        "#,
    )
    .bind(i64::from(limit))
    .bind(worker_id)
    .bind(run_id)
    .bind(only)
    .bind(shop)
    .fetch_all(&mut *tx)
    .await?;
    if !still_held(&mut tx, run_id).await? {
        tx.rollback().await?;
        release_own_run(pool, run_id).await?;
        return Err(ClaimError::RunNotHeld { run_id });
    }
    tx.commit().await?;
    Ok(claims
        .into_iter()
        .map(|(order_id, attempt)| Claim { order_id, attempt })
        .collect())
}

/// Why a claim took nothing it was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "run {run_id} no longer holds its orders (its hold ran out, or another run released them): it claims nothing more; a fresh run takes over"
    )]
    RunNotHeld { run_id: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether `run_id` is unreleased and inside its `held_until` at this statement's time, its row
/// share-locked until the transaction ends.
async fn still_held(tx: &mut sqlx::PgConnection, run_id: i64) -> Result<bool, sqlx::Error> {
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT run_id FROM acceptance_runs
         WHERE run_id = $1 AND released_at IS NULL AND held_until > statement_timestamp()
         FOR SHARE",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(held.is_some())
}

/// Releases the runs other than `claiming` past their `held_until`; returns how many orders came
/// back. The claiming run is left to its own check (`still_held`).
async fn release_stale_runs(
    tx: &mut sqlx::PgConnection,
    claiming: i64,
) -> Result<u64, sqlx::Error> {
    let released: Vec<i64> = sqlx::query_scalar(
        "UPDATE acceptance_runs SET released_at = now()
         WHERE released_at IS NULL AND held_until < now() AND run_id <> $1
         RETURNING run_id",
    )
    .bind(claiming)
    .fetch_all(&mut *tx)
    .await?;
    requeue_orders_of(tx, &released).await
}

/// Releases `run_id`, whose own claim found its hold ran out, and makes its orders due now.
async fn release_own_run(pool: &PgPool, run_id: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let released: Vec<i64> = sqlx::query_scalar(
        "UPDATE acceptance_runs SET released_at = now()
         WHERE run_id = $1 AND released_at IS NULL
         RETURNING run_id",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    requeue_orders_of(&mut tx, &released).await?;
    tx.commit().await
}

/// Makes the `accepting` orders of the `released` runs due now; returns how many. The orders are
/// locked in id order, as the record transaction locks them, so the two never deadlock.
async fn requeue_orders_of(
    tx: &mut sqlx::PgConnection,
    released: &[i64],
) -> Result<u64, sqlx::Error> {
    if released.is_empty() {
        return Ok(0);
    }
    let orders = sqlx::query(
        r#"
        WITH held AS (
            SELECT shop, order_id FROM order_current_status
            WHERE run_id = ANY($1) AND status = 'accepting'
            ORDER BY shop, order_id
            FOR UPDATE
        )
        UPDATE order_current_status cs SET claimable_at = now()
        FROM held WHERE cs.shop = held.shop AND cs.order_id = held.order_id
        "#,
    )
    .bind(released)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if orders > 0 {
        tracing::warn!(
            runs = ?released,
            orders,
            "released the orders of runs whose heartbeat went stale (crashed, frozen or cut off from the database); they are claimed again now"
        );
    }
    Ok(orders)
}

/// Replaces the stored JSON of orders of `shop` with what the marketplace just returned.
pub async fn refresh_orders(
    pool: &PgPool,
    shop: &str,
    orders: &[StoredOrder<'_>],
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = orders.iter().map(|o| o.order_id).collect();
    let raws: Vec<&serde_json::Value> = orders.iter().map(|o| o.raw).collect();
    sqlx::query(
        r#"
        UPDATE orders o
        SET raw_order_data = fresh.raw, updated_at = now()
        FROM unnest($1::text[], $2::jsonb[]) AS fresh(order_id, raw)
        WHERE o.shop = $3 AND o.order_id = fresh.order_id
        "#,
    )
    .bind(&ids)
    .bind(&raws)
    .bind(shop)
    .execute(pool)
    .await?;
    Ok(())
}
