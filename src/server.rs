//! The worker's health and metrics endpoint (`server.listen`):
//!
//! - `GET /healthz`: `200 ok` while the process runs and the database answers, else `503` with
//!   the reason on one line. The container's `HEALTHCHECK` asks it through
//!   `order-acceptance health`.
//! - `GET /metrics`: Prometheus text. Counters and histograms come from the `metrics` calls in
//!   the run and the marketplace client; the queue gauges are read from the database on each
//!   scrape, so they are right even when another replica did the work.
//!
//! The server runs as a task beside the runs and stops gracefully when [`RunningServer::stop`]
//! is called.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::{failures, orders, runs};

/// How long `/healthz` and the gauges of `/metrics` wait for the database. Short, so a probe
/// answers before the container's health-check timeout even when the pool is saturated.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Histogram buckets (seconds) for the `*_duration_seconds` histograms: a claim takes
/// milliseconds, a marketplace call up to `marketplace.timeout` (30 s by default).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes: without it,
/// samples pile up in memory between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr} (server.listen): {cause}. Choose a free address, or leave server.listen (ORDER_ACCEPTANCE__SERVER__LISTEN) empty to run without the health and metrics endpoint"
    )]
    // Not a `source`: the message already carries it, and anyhow would print it twice.
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(
        "cannot set up the Prometheus metrics recorder: {0}. Another metrics recorder was installed in this process"
    )]
    Recorder(String),
}

/// The process-wide Prometheus recorder, installed on first use. `metrics` allows one global
/// recorder per process; tests start many servers in one process, so later calls share it.
pub fn metrics_handle() -> Result<PrometheusHandle, ServerError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .map_err(|err| err.to_string())?
                .install_recorder()
                .map_err(|err| err.to_string())?;
            describe_metrics();
            Ok(handle)
        })
        .clone()
        .map_err(ServerError::Recorder)
}

/// HELP lines for every metric; docs/RUNBOOK.md lists the same.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "acceptance_runs_total",
        "Acceptance runs finished, by result (completed, failed, interrupted)"
    );
    describe_gauge!(
        "acceptance_last_successful_run_timestamp_seconds",
        Unit::Seconds,
        "Unix time at which the last run of this process that was not failed ended"
    );
    describe_counter!(
        "acceptance_orders_total",
        "Order outcomes recorded, by outcome (accepted, refused, cancelled, in_review, acceptance_failed)"
    );
    describe_histogram!(
        "acceptance_claim_duration_seconds",
        Unit::Seconds,
        "Time taken by one claim transaction"
    );
    describe_histogram!(
        "acceptance_decide_duration_seconds",
        Unit::Seconds,
        "Time the decide stage took for one batch (rules on: its transaction and SKU locks)"
    );
    describe_counter!(
        "marketplace_api_calls_total",
        "HTTP attempts to the marketplace, by endpoint (OR11, OR21, A01) and status class (2xx, 4xx, 5xx, other, error = no response)"
    );
    describe_histogram!(
        "marketplace_api_call_duration_seconds",
        Unit::Seconds,
        "Duration of one HTTP attempt to the marketplace, by endpoint"
    );
    describe_gauge!(
        "acceptance_pending_orders",
        "Orders still to decide: pending_acceptance, accepting, or acceptance_failed with an automatic retry scheduled (read at scrape)"
    );
    describe_gauge!(
        "acceptance_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending order, from the marketplace's creation date; 0 when none (read at scrape)"
    );
    describe_gauge!(
        "acceptance_open_failures",
        "Failures in the inbox not yet resolved (read at scrape)"
    );
    describe_gauge!(
        "acceptance_live_runs",
        "Runs (of every replica) whose heartbeat is within their lease (read at scrape)"
    );
    describe_gauge!(
        "acceptance_orders_held",
        "Orders in accepting held by live runs (read at scrape)"
    );
    describe_gauge!(
        "acceptance_stalest_heartbeat_age_seconds",
        Unit::Seconds,
        "Age of the oldest last heartbeat among live runs; 0 when none (read at scrape)"
    );
    describe_counter!(
        "acceptance_heartbeat_failures_total",
        "Heartbeats of this process's runs that failed (database unreachable or slower than acceptance.heartbeat)"
    );
    describe_counter!(
        "acceptance_lost_claims_total",
        "Orders this process gave up because it could no longer prove it held them: OR21 not sent, or an outcome not written over another run's claim"
    );
    describe_gauge!(
        "acceptance_database_up",
        "1 when this scrape read the queue gauges from the database, 0 when it could not (they then keep their last values)"
    );
}

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    metrics: PrometheusHandle,
}

/// The endpoint's routes over `pool`.
fn router(pool: PgPool, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { pool, metrics })
}

/// A server started by [`start`]; stop it with [`RunningServer::stop`].
pub struct RunningServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in flight finish, and waits for the task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the health and metrics server task ended abnormally");
        }
    }
}

/// Binds `addr` and serves `/healthz` and `/metrics` until stopped. A bind error is returned at
/// once, so a wrong `server.listen` stops the worker at start-up instead of leaving it unprobed.
pub async fn start(addr: SocketAddr, pool: PgPool) -> Result<RunningServer, ServerError> {
    let metrics = metrics_handle()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| ServerError::Bind { addr, cause })?;
    let local_addr = listener
        .local_addr()
        .map_err(|cause| ServerError::Bind { addr, cause })?;
    let shutdown = CancellationToken::new();
    let app = router(pool, metrics.clone());
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let upkeep = upkeep(metrics, shutdown.clone());
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            let ((), served) = tokio::join!(upkeep, serve);
            if let Err(err) = served {
                tracing::error!(error = %err, %local_addr, "the health and metrics server stopped with an error");
            }
        }
    });
    tracing::info!(%local_addr, "serving /healthz and /metrics");
    Ok(RunningServer {
        local_addr,
        shutdown,
        task,
    })
}

async fn upkeep(metrics: PrometheusHandle, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => metrics.run_upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let ping = sqlx::query("SELECT 1").execute(&state.pool);
    let problem = match tokio::time::timeout(DATABASE_TIMEOUT, ping).await {
        Ok(Ok(_)) => return (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(err)) => format!("database unreachable: {}", one_line(&err.to_string())),
        Err(_) => format!(
            "database unreachable: no answer to SELECT 1 within {}",
            humantime::format_duration(DATABASE_TIMEOUT)
        ),
    };
    tracing::warn!(problem = %problem, "health check failed");
    (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")).into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    let up = match tokio::time::timeout(DATABASE_TIMEOUT, refresh_queue_gauges(&state.pool)).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "metrics: could not read the queue gauges; they keep their last values");
            false
        }
        Err(_) => {
            tracing::warn!(
                "metrics: the queue gauges took longer than {} to read; they keep their last values",
                humantime::format_duration(DATABASE_TIMEOUT)
            );
            false
        }
    };
    metrics::gauge!("acceptance_database_up").set(if up { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Sets the gauges read from the database. The queries run concurrently, so a scrape costs one
/// round trip of latency.
async fn refresh_queue_gauges(pool: &PgPool) -> Result<(), sqlx::Error> {
    let (pending, oldest, open_failures, live, by_shop) = tokio::try_join!(
        orders::count_pending_orders(pool, None),
        orders::oldest_pending_order(pool, None),
        failures::count_open_failures(pool, None),
        runs::live_runs(pool, None),
        orders::queue_by_shop(pool),
    )?;
    // The same figures per shop: one marketplace's backlog is visible beside the others'.
    for shop in by_shop {
        let name = shop.shop;
        metrics::gauge!("acceptance_shop_pending_orders", "shop" => name.clone())
            .set(shop.pending as f64);
        metrics::gauge!("acceptance_shop_open_failures", "shop" => name.clone())
            .set(shop.open_failures as f64);
        let age = shop.oldest_pending_at.map_or(0.0, |at| {
            ((Utc::now() - at).num_milliseconds() as f64 / 1000.0).max(0.0)
        });
        metrics::gauge!("acceptance_shop_oldest_pending_age_seconds", "shop" => name).set(age);
    }
    let now = Utc::now();
    let stalest = live
        .iter()
        .filter_map(|run| run.heartbeat_at)
        .map(|at| ((now - at).num_milliseconds() as f64 / 1000.0).max(0.0))
        .fold(0.0, f64::max);
    metrics::gauge!("acceptance_live_runs").set(live.len() as f64);
    metrics::gauge!("acceptance_orders_held")
        .set(live.iter().map(|run| run.orders_held).sum::<i64>() as f64);
    metrics::gauge!("acceptance_stalest_heartbeat_age_seconds").set(stalest);
    let oldest_age = oldest.map_or(0.0, |order| {
        // A creation date ahead of our clock (clocks apart) reads as age 0, not negative.
        ((Utc::now() - order.order_created_at).num_milliseconds() as f64 / 1000.0).max(0.0)
    });
    metrics::gauge!("acceptance_pending_orders").set(pending as f64);
    metrics::gauge!("acceptance_oldest_pending_age_seconds").set(oldest_age);
    metrics::gauge!("acceptance_open_failures").set(open_failures as f64);
    Ok(())
}

/// Error texts can span lines; a probe's answer is one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
