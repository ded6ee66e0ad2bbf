//! `acceptance_runs`: one row per run, written by the run itself (its start, its heartbeats, its
//! end) and read by `status`, `order` and the metrics. A run holds its `accepting` orders while
//! its `held_until` is in the future; a claim releases them once it is not (`db::queue`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Opens the run's row (one shop's run) with its first heartbeat; returns its id.
pub async fn start_run(
    pool: &PgPool,
    shop: &str,
    worker_id: &str,
    lease: Duration,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO acceptance_runs (worker_id, heartbeat_at, held_until, shop)
         VALUES ($1, now(), now() + make_interval(secs => $2), $3)
         RETURNING run_id",
    )
    .bind(worker_id)
    .bind(lease.as_secs_f64())
    .bind(shop)
    .fetch_one(pool)
    .await
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The run holds its orders for another lease.
    Held,
    /// Another run found this one stale and released its orders (or it has ended): it holds
    /// nothing any more, for good.
    Released,
}

/// Extends the run's hold by `lease` from now, unless its orders were released. The row lock
/// orders this against a claim releasing the run: whichever commits first wins, and the other
/// sees it.
pub async fn heartbeat(
    conn: &mut sqlx::PgConnection,
    run_id: i64,
    lease: Duration,
) -> Result<Beat, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE acceptance_runs
         SET heartbeat_at = now(), held_until = now() + make_interval(secs => $2)
         WHERE run_id = $1 AND released_at IS NULL AND finished_at IS NULL",
    )
    .bind(run_id)
    .bind(lease.as_secs_f64())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(match updated {
        0 => Beat::Released,
        _ => Beat::Held,
    })
}

/// What a run did, as the run counted it: written to its row when it ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    pub imported: u64,
    pub claimed: u64,
    pub accepted: u64,
    pub refused: u64,
    pub cancelled: u64,
    pub in_review: u64,
    pub failed: u64,
    pub retry_scheduled: u64,
    pub api_calls: u64,
    /// Orders given up because the run could no longer prove it held them.
    pub lost: u64,
}

/// Closes the run's row with its counts and how it ended. Orders it still holds (a run cut short
/// by its grace period or a fatal error) stay its own for `hold_for` more, the time an OR21 cut
/// short may take to land, then the next claim takes them.
pub async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    summary: &RunCounts,
    result: &str,
    error: Option<&str>,
    hold_for: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE acceptance_runs
        SET finished_at = now(), result = $2, imported = $3, claimed = $4, accepted = $5,
            cancelled = $6, failed = $7, retry_scheduled = $8, api_calls = $9, error = $10,
            refused = $11, in_review = $12, lost = $13,
            held_until = least(held_until, now() + make_interval(secs => $14))
        WHERE run_id = $1
        "#,
    )
    .bind(run_id)
    .bind(result)
    .bind(count(summary.imported))
    .bind(count(summary.claimed))
    .bind(count(summary.accepted))
    .bind(count(summary.cancelled))
    .bind(count(summary.failed))
    .bind(count(summary.retry_scheduled))
    .bind(count(summary.api_calls))
    .bind(error)
    .bind(count(summary.refused))
    .bind(count(summary.in_review))
    .bind(count(summary.lost))
    .bind(hold_for.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One run and what it did.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub run_id: i64,
    pub shop: String,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running, completed, failed, interrupted or degraded.
    pub result: String,
    pub imported: i32,
    pub claimed: i32,
    pub accepted: i32,
    pub refused: i32,
    pub cancelled: i32,
    pub in_review: i32,
    pub failed: i32,
    pub retry_scheduled: i32,
    pub api_calls: i32,
    pub lost: i32,
    pub error: Option<String>,
}

/// The run that started last, whatever its result: of `shop`, or of any shop.
pub async fn last_run(pool: &PgPool, shop: Option<&str>) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, shop, worker_id, started_at, finished_at, result, imported, claimed,
                accepted, refused, cancelled, in_review, failed, retry_scheduled, api_calls, lost,
                error
         FROM acceptance_runs
         WHERE $1::text IS NULL OR shop = $1
         ORDER BY started_at DESC, run_id DESC
         LIMIT 1",
    )
    .bind(shop)
    .fetch_optional(pool)
    .await
}

/// The last run of each shop that has run (of `shop` only, when given), by shop name.
pub async fn last_run_per_shop(
    pool: &PgPool,
    shop: Option<&str>,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (shop) run_id, shop, worker_id, started_at, finished_at, result,
                imported, claimed, accepted, refused, cancelled, in_review, failed,
                retry_scheduled, api_calls, lost, error
         FROM acceptance_runs
         WHERE $1::text IS NULL OR shop = $1
         ORDER BY shop, started_at DESC, run_id DESC",
    )
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// A run that may hold orders now: not ended, not released, heartbeat within its lease.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LiveRun {
    pub run_id: i64,
    pub shop: String,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub held_until: Option<DateTime<Utc>>,
    pub orders_held: i64,
}

/// The live runs (of `shop`, when given), oldest first (the `live_runs` view).
pub async fn live_runs(pool: &PgPool, shop: Option<&str>) -> Result<Vec<LiveRun>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, shop, worker_id, started_at, heartbeat_at, held_until, orders_held
         FROM live_runs WHERE $1::text IS NULL OR shop = $1 ORDER BY started_at, run_id",
    )
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Who held an order's claim, and whether that run still holds it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Holder {
    pub run_id: i64,
    pub worker_id: String,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub held_until: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub released_at: Option<DateTime<Utc>>,
    /// Not ended, not released, heartbeat within its lease.
    pub alive: bool,
}

/// The run of the order's latest claim, if a run of this release made it.
pub async fn holder_of(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
) -> Result<Option<Holder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.run_id, r.worker_id, r.heartbeat_at, r.held_until, r.finished_at, r.released_at,
                (r.finished_at IS NULL AND r.released_at IS NULL AND r.held_until > now()) AS alive
         FROM acceptance_runs r
         WHERE r.run_id = (SELECT h.run_id FROM order_status_history h
                           WHERE h.shop = $2 AND h.order_id = $1 AND h.status = 'accepting'
                             AND h.run_id IS NOT NULL
                           ORDER BY h.\"timestamp\" DESC, h.history_id DESC LIMIT 1)",
    )
    .bind(order_id)
    .bind(shop)
    .fetch_optional(pool)
    .await
}

/// Every shop the database knows (`shops`), by name.
pub async fn known_shops(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT shop FROM shops ORDER BY shop")
        .fetch_all(pool)
        .await
}

/// A shop as the database knows it: its name (orders may carry it from now on) and the window
/// and alert threshold the views count its orders with.
#[derive(Debug, Clone)]
pub struct ShopRow<'a> {
    pub shop: &'a str,
    pub acceptance_window: Duration,
    pub pending_after: Duration,
}

/// Registers the configured shops in `shops`, so their orders may be stored and handed over,
/// and the views count with their windows. A shop dropped from the configuration keeps its row:
/// its orders still name it.
pub async fn register_shops(pool: &PgPool, shops: &[ShopRow<'_>]) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = shops.iter().map(|s| s.shop).collect();
    let windows: Vec<f64> = shops
        .iter()
        .map(|s| s.acceptance_window.as_secs_f64())
        .collect();
    let alerts: Vec<f64> = shops
        .iter()
        .map(|s| s.pending_after.as_secs_f64())
        .collect();
    sqlx::query(
        "INSERT INTO shops (shop, acceptance_window, pending_after, updated_at)
         SELECT shop, make_interval(secs => window_secs), make_interval(secs => alert_secs), now()
         FROM unnest($1::text[], $2::float8[], $3::float8[]) AS s(shop, window_secs, alert_secs)
         ON CONFLICT (shop) DO UPDATE
         SET acceptance_window = EXCLUDED.acceptance_window, pending_after = EXCLUDED.pending_after,
             updated_at = now()
         WHERE (shops.acceptance_window, shops.pending_after)
               IS DISTINCT FROM (EXCLUDED.acceptance_window, EXCLUDED.pending_after)",
    )
    .bind(&names)
    .bind(&windows)
    .bind(&alerts)
    .execute(pool)
    .await?;
    Ok(())
}
