//! Heartbeat and fence: while a run works, a task of its own refreshes the run's heartbeat every
//! `acceptance.heartbeat`, extending its hold on its orders by `acceptance.lease`. The run sends
//! OR21 only while its last successful heartbeat is younger than the lease less the fence margin
//! (`Settings::fence_margin`), so an OR21 is over before any other run may take the order. When
//! the database cannot be reached the heartbeats fail and sending stops by itself within the
//! margin; once another run has released this one's orders, its heartbeats are refused and it
//! never sends again.
//!
//! Local time is the monotonic clock, read before each heartbeat is sent: the database stamps the
//! heartbeat later than that, so the run's own view of its hold always ends first.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use super::Context;
use crate::db::runs::{self, Beat};

/// A run's hold on the orders it claimed, as far as this process can prove it.
pub struct Hold {
    pub run_id: i64,
    origin: Instant,
    /// Milliseconds from `origin` to the sending of the last heartbeat that succeeded.
    last_beat: AtomicU64,
    released: AtomicBool,
    /// How long after a heartbeat the run may send: `Settings::fence_window`.
    window: Duration,
}

impl Hold {
    /// `beat_sent`: when the heartbeat `start_run` wrote was sent.
    pub fn new(run_id: i64, beat_sent: Instant, window: Duration) -> Self {
        Self {
            run_id,
            origin: beat_sent,
            last_beat: AtomicU64::new(0),
            released: AtomicBool::new(false),
            window,
        }
    }

    /// `Ok` while the run may act for its orders; otherwise why not, for the logs.
    pub fn may_send(&self) -> Result<(), String> {
        if self.released.load(Ordering::Acquire) {
            return Err(format!(
                "run {} no longer holds its orders: they were released to other runs after its hold ran out",
                self.run_id
            ));
        }
        let age = self.since_last_beat();
        if age >= self.window {
            return Err(format!(
                "run {}'s last heartbeat is {} old, past the {} it may send for (acceptance.lease less the fence margin); the database may be unreachable",
                self.run_id,
                humantime::format_duration(round_ms(age)),
                humantime::format_duration(self.window)
            ));
        }
        Ok(())
    }

    /// How long ago the last successful heartbeat was sent.
    pub fn since_last_beat(&self) -> Duration {
        let last = Duration::from_millis(self.last_beat.load(Ordering::Acquire));
        self.origin.elapsed().saturating_sub(last)
    }

    fn beat_at(&self, sent: Instant) {
        let ms = sent.saturating_duration_since(self.origin).as_millis();
        self.last_beat
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::AcqRel);
    }

    /// From now on the run acts for none of its orders: they were released to other runs.
    pub(super) fn release(&self) {
        self.released.store(true, Ordering::Release);
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Beats until the run's stages end (the caller drops this future). Each beat has one heartbeat
/// interval to finish; a failure is logged and the next beat tries on a fresh connection.
pub async fn keep_alive(ctx: &Context, hold: &Hold) -> Infallible {
    let settings = &ctx.settings.acceptance;
    let mut ticks = tokio::time::interval(settings.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is now: start_run wrote that heartbeat
    let mut conn: Option<PoolConnection<Postgres>> = None;
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        let beat = tokio::time::timeout(
            settings.heartbeat,
            beat(&ctx.pool, &mut conn, hold.run_id, settings.lease),
        )
        .await;
        match beat {
            Ok(Ok(Beat::Held)) => {
                hold.beat_at(sent);
                metrics::gauge!("acceptance_heartbeat_timestamp_seconds", "shop" => ctx.shop().to_string())
                    .set(chrono::Utc::now().timestamp() as f64);
            }
            Ok(Ok(Beat::Released)) => {
                hold.release();
                tracing::error!(
                    run_id = hold.run_id,
                    "this run's orders were released to other runs (its heartbeat went stale: the process was paused or cut off from the database); it sends and records nothing more for them"
                );
                return std::future::pending().await;
            }
            Ok(Err(err)) => {
                conn = None;
                heartbeat_failed(ctx.shop(), hold, &err.to_string());
            }
            Err(_) => {
                conn = None;
                heartbeat_failed(ctx.shop(), hold, "no answer within acceptance.heartbeat");
            }
        }
    }
}

async fn beat(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    run_id: i64,
    lease: Duration,
) -> Result<Beat, sqlx::Error> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(pool.acquire().await?),
    };
    runs::heartbeat(conn, run_id, lease).await
}

fn heartbeat_failed(shop: &str, hold: &Hold, error: &str) {
    metrics::counter!("acceptance_heartbeat_failures_total", "shop" => shop.to_string())
        .increment(1);
    let left = hold.window.saturating_sub(hold.since_last_beat());
    tracing::warn!(
        run_id = hold.run_id,
        shop,
        error,
        sending_stops_in_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        "heartbeat failed; check that PostgreSQL is reachable. Without a heartbeat this run stops sending OR21 when its fence window ends, and another run takes its orders after acceptance.lease"
    );
}
