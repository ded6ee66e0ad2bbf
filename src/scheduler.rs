//! The cron schedule: each shop's run starts on `schedule.cron`, never two of one shop at once in
//! one process (a shop still running skips the tick; the other shops start theirs), and a
//! shutdown signal lets the current runs finish within `shutdown.grace`.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::acceptance::{self, Context};
use crate::config;

/// Starts a run of every shop not still running on every tick until `shutdown` fires, then waits
/// for the current runs, which stop claiming at once and get `shutdown.grace` to record what they
/// hold. `shops` holds one context per shop; the first one's settings are the schedule's.
pub async fn run_on_schedule(
    shops: Vec<Context>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(first) = shops.first() else {
        anyhow::bail!("no shop to run: the configuration names none");
    };
    let settings = first.settings.clone();
    let cron = config::parse_cron(&settings.schedule.cron).map_err(anyhow::Error::msg)?;
    // One per shop, held for the length of its run: a tick that finds it taken skips that shop
    // (it is not queued), so a slow marketplace holds up no other shop.
    let shops: Arc<Vec<(Context, Arc<Mutex<()>>)>> = Arc::new(
        shops
            .into_iter()
            .map(|ctx| (ctx, Arc::new(Mutex::new(()))))
            .collect(),
    );

    let mut scheduler = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    let job = {
        let (shops, shutdown) = (shops.clone(), shutdown.clone());
        Job::new_async_tz(cron.as_str(), settings.schedule.timezone, move |_, _| {
            let (shops, shutdown) = (shops.clone(), shutdown.clone());
            Box::pin(async move {
                if shutdown.is_cancelled() {
                    return;
                }
                for (ctx, busy) in shops.iter() {
                    let Ok(running) = busy.clone().try_lock_owned() else {
                        tracing::warn!(
                            shop = ctx.shop(),
                            "the shop's previous run is still going; skipping this tick for it"
                        );
                        continue;
                    };
                    let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
                    // Each shop's failure is logged (and put in the inbox) where it happens.
                    tokio::spawn(async move {
                        acceptance::run_shop(&ctx, &shutdown).await;
                        drop(running);
                    });
                }
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
    for (_, busy) in shops.iter() {
        let _idle = busy.lock().await;
    }
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
