//! The cron schedule: runs start on `schedule.cron`, never two at once in one process, and a
//! shutdown signal lets the current run finish within `shutdown.grace`.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::acceptance::{self, Context};
use crate::config;

/// Starts a run of every shop on every tick until `shutdown` fires, then waits for the current
/// run, which stops claiming at once and gets `shutdown.grace` to record what it holds. `shops`
/// holds one context per shop; the first one's settings are the schedule's.
pub async fn run_on_schedule(
    shops: Vec<Context>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(first) = shops.first() else {
        anyhow::bail!("no shop to run: the configuration names none");
    };
    let settings = first.settings.clone();
    let shops = Arc::new(shops);
    let cron = config::parse_cron(&settings.schedule.cron).map_err(anyhow::Error::msg)?;
    // Held for the length of a run: a tick that finds it taken is skipped, not queued.
    let busy = Arc::new(Mutex::new(()));

    let mut scheduler = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    let job = {
        let busy = busy.clone();
        let shutdown = shutdown.clone();
        Job::new_async_tz(cron.as_str(), settings.schedule.timezone, move |_, _| {
            let (shops, busy, shutdown) = (shops.clone(), busy.clone(), shutdown.clone());
            Box::pin(async move {
                if shutdown.is_cancelled() {
                    return;
                }
                let Ok(_running) = busy.try_lock() else {
                    tracing::warn!("the previous run is still going; skipping this tick");
                    return;
                };
                // Each shop's failure is logged and put in the inbox where it happens.
                acceptance::run_every_shop(&shops, &shutdown).await;
            })
        })
        .with_context(|| format!("schedule.cron {cron:?} cannot be scheduled"))?
    };
    scheduler
        .add(job)
        .await
        .context("adding the run to the schedule")?;
    scheduler.start().await.context("starting the scheduler")?;
    tracing::info!(cron = %cron, timezone = %settings.schedule.timezone, "waiting for the schedule");

    shutdown.cancelled().await;
    tracing::info!(grace = ?settings.shutdown.grace, "shutdown requested: no new runs; letting the current one finish");
    scheduler
        .shutdown()
        .await
        .context("stopping the scheduler")?;
    let _idle = busy.lock().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the worker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
