//! One acceptance run: import, then claim → preflight → decide → accept → validate → record, as
//! a pipeline so the next batch is claimed, checked and decided while the current one is being
//! accepted, and accepted orders are confirmed while later ones are still being accepted.
//!
//! ```text
//!  claim (+ preflight, decide) ──batches──▶ accept ──204s──▶ validate
//!          │                                │    ▲              │
//!          │                   unclear answers   re-read states │
//!          │                                ▼    │              │
//!          │                                re-read             │
//!          └──────────── outcomes ───────────┴──────────────────┴──▶ record
//! ```
//!
//! The accept stage waits for an order's re-read before it decides or sends again, so every
//! channel runs one way and the run ends when the claim stops and each stage has drained.
//! No stage holds a database transaction across an HTTP call. A run ends when every claimed
//! order has an outcome. A stop signal ends claiming; the orders already claimed get
//! `shutdown.grace` to finish, and any left after that come back to the queue one fence margin
//! after the run ends (the time an OR21 cut short may take to land).
//!
//! Beside the stages, [`heartbeat`] keeps the run's hold on its orders fresh; every OR21 and
//! every outcome is fenced by it (see that module and `db::outcomes::record_outcomes`).

mod accept;
mod claim;
pub mod deadline;
mod decide;
mod heartbeat;
mod import;
pub mod outcome;
mod preflight;
mod record;
mod reread;
pub mod retention;
mod review_now;
pub mod shops;
mod validate;

pub use review_now::{DecideNowError, DecidedNow, decide_now};
pub use shops::{ShopRun, run_every_shop, run_shop};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db;
use crate::marketplace::{MarketplaceClient, MarketplaceError};
use crate::terminal::{self, Width};

/// What a run needs: the database, the marketplace, the settings, and who it is.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    pub client: MarketplaceClient,
    pub settings: Arc<Settings>,
    /// Host, process id and a random suffix: written on every claim, so the history shows which
    /// process held an order.
    pub worker_id: String,
}

impl Context {
    /// The context of one shop's runs: `client` holds that shop's key, and `settings` are the
    /// ones seen by that shop (its marketplace and rules).
    pub fn new(pool: PgPool, client: MarketplaceClient, settings: Arc<Settings>) -> Self {
        Self::with_worker_id(pool, client, settings, worker_id())
    }

    /// A context naming the process `worker_id`: the shops of one process share one name.
    pub fn with_worker_id(
        pool: PgPool,
        client: MarketplaceClient,
        settings: Arc<Settings>,
        worker_id: String,
    ) -> Self {
        Self {
            pool,
            client,
            settings,
            worker_id,
        }
    }

    /// The shop this context works for: every order it reads, claims or records is this shop's.
    pub fn shop(&self) -> &str {
        self.client.shop()
    }
}

/// Host, process id and a random suffix.
pub fn worker_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The figures of one run, for people (the `--once` summary), logs and `acceptance_runs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub imported: u64,
    pub claimed: u64,
    pub accepted: u64,
    pub refused: u64,
    pub cancelled: u64,
    /// Sent to the review queue: a person decides.
    pub in_review: u64,
    pub failed: u64,
    /// Of the failed: those a later run retries by itself.
    pub retry_scheduled: u64,
    /// Orders this run stopped working on because it could no longer prove it held them (its
    /// heartbeat went stale, or another run took them over): nothing sent or written for them;
    /// their holder decides them.
    pub lost: u64,
    pub api_calls: u64,
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    pub result: RunResult,
    /// Why the import read no page, when it failed: the run went on with the orders already
    /// stored and is `degraded`.
    pub import_failed: Option<String>,
    /// Why the import stopped before the pages the marketplace announced, when it did.
    pub import_ended_early: Option<String>,
    /// Orders the import found listed but could not read: each is in the inbox.
    pub unreadable: u64,
}

impl RunSummary {
    /// The figures the run's `acceptance_runs` row keeps.
    fn counts(&self) -> db::runs::RunCounts {
        db::runs::RunCounts {
            imported: self.imported,
            claimed: self.claimed,
            accepted: self.accepted,
            refused: self.refused,
            cancelled: self.cancelled,
            in_review: self.in_review,
            failed: self.failed,
            retry_scheduled: self.retry_scheduled,
            api_calls: self.api_calls,
            lost: self.lost,
        }
    }

    /// The line people and `acceptance_runs.error` get for a failed import.
    fn import_failure(&self) -> Option<String> {
        self.import_failed.as_ref().map(|reason| {
            format!(
                "the import failed, no order waiting at the marketplace was read: {reason}. Orders already stored were still worked on; the next run imports again"
            )
        })
    }
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Every claimed order has an outcome (some may be failures, in the inbox).
    #[default]
    Completed,
    /// A fatal error stopped the run.
    Failed,
    /// A stop signal came and the grace period ran out before every order had an outcome.
    Interrupted,
    /// Every claimed order has an outcome, but the import failed: orders waiting at the
    /// marketplace were not looked at (`--once` exits 3).
    Degraded,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Completed => "completed",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
            RunResult::Degraded => "degraded",
        }
    }
}

/// Errors that stop a run. Everything else is an order's outcome, recorded and carried on from.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "the marketplace refused the API key: {0}. Orders claimed by this run return to the queue when their lease ({lease}) ends",
        lease = "acceptance.lease"
    )]
    Unauthorized(MarketplaceError),
    #[error(
        "database error while {doing}: {source}. Check that PostgreSQL is reachable; orders claimed by this run return to the queue when their lease ends"
    )]
    Database {
        doing: &'static str,
        source: sqlx::Error,
    },
    #[error("{0}; no order was claimed by this run")]
    StockRelation(crate::db::stock::StockRelationError),
}

impl RunError {
    fn database(doing: &'static str) -> impl FnOnce(sqlx::Error) -> RunError {
        move |source| RunError::Database { doing, source }
    }
}

/// Counts kept while the stages work, so a run that stops early still reports what it did.
#[derive(Default)]
struct Tally {
    imported: AtomicU64,
    claimed: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    cancelled: AtomicU64,
    in_review: AtomicU64,
    failed: AtomicU64,
    retry_scheduled: AtomicU64,
    lost: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn summary(
        &self,
        duration: Duration,
        api_calls: u64,
        result: RunResult,
        import: ImportNotes,
    ) -> RunSummary {
        RunSummary {
            imported: self.imported.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            in_review: self.in_review.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retry_scheduled: self.retry_scheduled.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            api_calls,
            duration,
            result,
            import_failed: import.failed,
            import_ended_early: import.ended_early,
            unreadable: import.unreadable,
        }
    }
}

/// What the import stage tells the summary; set as soon as it is known, so an interrupted run
/// still reports it.
#[derive(Debug, Clone, Default)]
struct ImportNotes {
    failed: Option<String>,
    ended_early: Option<String>,
    unreadable: u64,
}

/// Which orders a run works on.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// The deadline policy, the import, and every due order.
    Everything,
    /// Only these orders, when due; no deadline policy and no import.
    Orders(&'a [String]),
}

impl<'a> Scope<'a> {
    fn order_ids(self) -> Option<&'a [String]> {
        match self {
            Scope::Everything => None,
            Scope::Orders(ids) => Some(ids),
        }
    }
}

/// One full run. `stop` ends claiming; after it fires, the run gets `shutdown.grace` to record
/// the orders it holds. Returns the summary, also written to `acceptance_runs`; a fatal error is
/// returned after the run's row has been closed with it.
pub async fn run(ctx: &Context, stop: &CancellationToken) -> Result<RunSummary, RunError> {
    run_scoped(ctx, stop, Scope::Everything).await
}

/// A run over `order_ids` only (`review ... --now`): the same claim, preflight, OR21,
/// validation and record as [`run`], without the import, claiming only those orders when due.
pub async fn run_orders(
    ctx: &Context,
    stop: &CancellationToken,
    order_ids: &[String],
) -> Result<RunSummary, RunError> {
    run_scoped(ctx, stop, Scope::Orders(order_ids)).await
}

async fn run_scoped(
    ctx: &Context,
    stop: &CancellationToken,
    scope: Scope<'_>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let calls_before = ctx.client.calls_made();
    ctx.client.start_run().await;
    let settings = &ctx.settings;
    let shop = ctx.shop();
    db::runs::register_shops(
        &ctx.pool,
        &[db::runs::ShopRow {
            shop,
            acceptance_window: settings.marketplace.acceptance_window,
            pending_after: settings.alerts.pending_after,
        }],
    )
    .await
    .map_err(RunError::database("registering the shop in shops"))?;
    let beat_sent = Instant::now();
    let run_id = db::runs::start_run(&ctx.pool, shop, &ctx.worker_id, settings.acceptance.lease)
        .await
        .map_err(RunError::database("starting the run"))?;
    let hold = heartbeat::Hold::new(run_id, beat_sent, settings.fence_window());
    tracing::info!(run_id, shop, worker_id = %ctx.worker_id, "run started");

    let tally = Tally::default();
    let grace_over = async {
        stop.cancelled().await;
        tokio::time::sleep(ctx.settings.shutdown.grace).await;
    };
    let import_notes = OnceLock::new();
    // The heartbeat runs for as long as the stages do, the import included: a run held up
    // there must not look dead to the others.
    let work = async {
        tokio::select! {
            done = stages(ctx, stop, &hold, &tally, scope, &import_notes) => done,
            never = heartbeat::keep_alive(ctx, &hold) => match never {},
        }
    };
    let (result, error) = tokio::select! {
        finished = work => match finished {
            Ok(()) => (RunResult::Completed, None),
            Err(err) => (RunResult::Failed, Some(err)),
        },
        () = grace_over => (RunResult::Interrupted, None),
    };
    let import_notes: ImportNotes = import_notes.into_inner().unwrap_or_default();
    let result = match (result, &import_notes.failed) {
        (RunResult::Completed, Some(_)) => RunResult::Degraded,
        (result, _) => result,
    };

    let summary = tally.summary(
        started.elapsed(),
        ctx.client.calls_made() - calls_before,
        result,
        import_notes,
    );
    let message = error
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| summary.import_failure());
    // A run cut short may have had OR21s in flight: its orders wait one fence margin more.
    let hold_for = match result {
        RunResult::Completed | RunResult::Degraded => Duration::ZERO,
        RunResult::Failed | RunResult::Interrupted => settings.fence_margin(),
    };
    db::runs::finish_run(
        &ctx.pool,
        run_id,
        &summary.counts(),
        result.as_str(),
        message.as_deref(),
        hold_for,
    )
    .await
    .map_err(RunError::database("closing the run"))?;
    let shop_label = shop.to_string();
    metrics::counter!("acceptance_runs_total", "result" => result.as_str(), "shop" => shop_label.clone())
        .increment(1);
    if matches!(result, RunResult::Completed | RunResult::Interrupted) {
        metrics::gauge!("acceptance_last_successful_run_timestamp_seconds", "shop" => shop_label)
            .set(chrono::Utc::now().timestamp() as f64);
    }
    tracing::info!(
        run_id,
        shop,
        result = result.as_str(),
        imported = summary.imported,
        claimed = summary.claimed,
        accepted = summary.accepted,
        refused = summary.refused,
        cancelled = summary.cancelled,
        in_review = summary.in_review,
        failed = summary.failed,
        retry_scheduled = summary.retry_scheduled,
        lost = summary.lost,
        api_calls = summary.api_calls,
        duration_ms = summary.duration.as_millis() as u64,
        import_failed = summary.import_failed.as_deref(),
        import_ended_early = summary.import_ended_early.as_deref(),
        unreadable = summary.unreadable,
        "run finished"
    );
    retention::prune_after_run(ctx, stop).await;
    match error {
        Some(err) => Err(err),
        None => Ok(summary),
    }
}

/// The stages of a run; a failed import is noted in `import_failed` as soon as it is known, so
/// an interrupted run still reports it.
async fn stages(
    ctx: &Context,
    stop: &CancellationToken,
    hold: &heartbeat::Hold,
    tally: &Tally,
    scope: Scope<'_>,
    import_notes: &OnceLock<ImportNotes>,
) -> Result<(), RunError> {
    let only = scope.order_ids();
    if only.is_none() {
        deadline::apply_policy(ctx, chrono::Utc::now()).await?;
    }
    let imported = match (ctx.settings.import.enabled, only) {
        (true, None) => import::import_waiting_orders(ctx, stop, tally).await?,
        _ => import::Imported::default(),
    };
    // Set once, by this stage only.
    let _ = import_notes.set(ImportNotes {
        failed: imported.failed,
        ended_early: imported.ended_early,
        unreadable: imported.unreadable,
    });
    let fresh = imported.fresh;

    // One batch in the channel plus the one being accepted: the claim stays at most one batch
    // ahead, so claimed orders do not wait long for their OR21.
    let (batches, to_accept) = mpsc::channel(1);
    let (awaiting, to_validate) = mpsc::unbounded_channel();
    let (outcomes, to_record) = mpsc::unbounded_channel();
    let (rereads, to_reread) = reread::channel();
    tokio::try_join!(
        claim::claim_until_drained(
            ctx,
            stop,
            hold,
            &fresh,
            only,
            batches,
            outcomes.clone(),
            tally
        ),
        accept::accept_all(
            ctx,
            hold,
            to_accept,
            rereads,
            awaiting,
            outcomes.clone(),
            tally
        ),
        reread::reread_all(ctx, to_reread),
        validate::validate_all(ctx, to_validate, outcomes),
        record::record_all(ctx, hold, to_record, tally),
    )?;
    Ok(())
}

/// Every shop's figures for people: one table per shop, the shop in its header, or one table as
/// before when the deployment has a single shop. A shop that failed shows its error.
pub fn shops_summary(runs: &[ShopRun], width: Width) -> String {
    let single = runs.len() == 1;
    let mut text = Vec::with_capacity(runs.len());
    for run in runs {
        let label = match single {
            true => "run".to_string(),
            false => format!("run of shop {}", run.shop),
        };
        match &run.outcome {
            Ok(summary) => text.push(summary_table(&label, summary, width).to_string()),
            Err(err) => {
                let mut table = terminal::table(width);
                table.set_header([label, RunResult::Failed.as_str().to_string()]);
                let why = terminal::escape(&err.to_string()).into_owned();
                table.add_row(["error".to_string(), why]);
                text.push(table.to_string());
            }
        }
    }
    text.join("\n")
}

/// The run's figures as a small table for people.
pub fn summary_table(label: &str, summary: &RunSummary, width: Width) -> comfy_table::Table {
    let mut table = terminal::table(width);
    table.set_header([label, summary.result.as_str()]);
    let rows: [(&str, String); 11] = [
        ("imported", summary.imported.to_string()),
        ("claimed", summary.claimed.to_string()),
        ("accepted", summary.accepted.to_string()),
        ("refused", summary.refused.to_string()),
        ("cancelled", summary.cancelled.to_string()),
        ("in review", summary.in_review.to_string()),
        ("failed", summary.failed.to_string()),
        (
            "  of which retried later",
            summary.retry_scheduled.to_string(),
        ),
        ("lost claims", summary.lost.to_string()),
        ("API calls", summary.api_calls.to_string()),
        (
            "duration",
            format!("{:.2} s", summary.duration.as_secs_f64()),
        ),
    ];
    for (label, value) in rows {
        table.add_row([label.to_string(), value]);
    }
    // The marketplace's words may be in these: escaped before the table is laid out.
    if let Some(failure) = summary.import_failure() {
        let failure = terminal::escape(&failure).into_owned();
        table.add_row(["import failed".to_string(), failure]);
    }
    if let Some(why) = &summary.import_ended_early {
        table.add_row(["import ended early".to_string(), why.clone()]);
    }
    if summary.unreadable > 0 {
        let text = format!(
            "{} listed but unreadable, not imported: see `order-acceptance failures list`",
            summary.unreadable
        );
        table.add_row(["unreadable orders".to_string(), text]);
    }
    table
}
