//! Every shop in one run: each shop's run (its own client, rate gate, pace and `acceptance_runs`
//! row) goes at the same time as the others', so a slow or throttled marketplace holds nobody
//! else up, and a shop whose key is refused or whose marketplace is down is reported — in the
//! summary, `status`, the metrics and once in the inbox — while the other shops' orders go on.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Context, RunError, RunResult, RunSummary};
use crate::config::Settings;
use crate::db::{self, failures};
use crate::marketplace::MarketplaceClient;

/// `--shop NAME` named a shop the configuration does not have.
#[derive(Debug, thiserror::Error)]
#[error("--shop {name}: the configuration has no such shop; its shops are {known}")]
pub struct UnknownShop {
    pub name: String,
    pub known: String,
}

/// One context per shop to run: every configured shop, or only `only`. The contexts share the
/// pool and one worker id (one process); each has its shop's client, gate and settings.
pub fn contexts(
    pool: &PgPool,
    settings: &Settings,
    only: Option<&str>,
) -> anyhow::Result<Vec<Context>> {
    let shops = match only {
        None => settings.all_shops(),
        Some(name) => vec![settings.find_shop(name).ok_or_else(|| UnknownShop {
            name: name.to_string(),
            known: names(settings),
        })?],
    };
    let worker_id = super::worker_id();
    shops
        .iter()
        .map(|shop| {
            let settings = settings.for_shop(shop);
            let client = MarketplaceClient::for_shop(
                shop.name.as_str(),
                &settings.marketplace,
                &settings.api_calls,
                pool.clone(),
            )
            .map_err(|err| {
                err.context(format!(
                    "setting up the marketplace client of shop {}",
                    shop.name
                ))
            })?;
            Ok(Context::with_worker_id(
                pool.clone(),
                client,
                Arc::new(settings),
                worker_id.clone(),
            ))
        })
        .collect()
}

fn names(settings: &Settings) -> String {
    settings
        .all_shops()
        .iter()
        .map(|shop| shop.name.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each configured shop's acceptance window, the default shop's first.
pub fn windows(settings: &Settings) -> Vec<(String, Duration)> {
    settings
        .all_shops()
        .into_iter()
        .map(|shop| (shop.name.to_string(), shop.marketplace.acceptance_window))
        .collect()
}

/// Tells the database which shops orders may name (`shops`), before any is imported or handed
/// over, with the windows its views count with.
pub async fn register(pool: &PgPool, settings: &Settings) -> Result<(), sqlx::Error> {
    let windows = windows(settings);
    let rows: Vec<db::runs::ShopRow<'_>> = windows
        .iter()
        .map(|(shop, window)| db::runs::ShopRow {
            shop,
            acceptance_window: *window,
            pending_after: settings.alerts.pending_after,
        })
        .collect();
    db::runs::register_shops(pool, &rows).await
}

/// The `stage` of the inbox row that says a whole shop could not be worked on.
pub const SHOP_STAGE: &str = "shop";

/// How one shop's part of the run ended.
#[derive(Debug)]
pub struct ShopRun {
    pub shop: String,
    pub outcome: Result<RunSummary, RunError>,
}

impl ShopRun {
    /// Did the shop's orders get worked on, and its marketplace read?
    pub fn is_whole(&self) -> bool {
        matches!(&self.outcome, Ok(summary) if summary.result != RunResult::Degraded)
    }
}

/// Runs every shop of `shops` at once, each with its own context, and waits for all of them.
/// `stop` ends claiming in every shop.
pub async fn run_every_shop(shops: &[Context], stop: &CancellationToken) -> Vec<ShopRun> {
    futures::future::join_all(shops.iter().map(|ctx| run_shop(ctx, stop))).await
}

/// One shop's run, its log lines in a `shop` span (two marketplaces may log the same order id).
/// With several shops configured, a shop that failed is also put in the inbox (see
/// [`report_to_the_inbox`]); a one-shop deployment's failed run is in `status` and the logs, as it
/// always was.
pub async fn run_shop(ctx: &Context, stop: &CancellationToken) -> ShopRun {
    let span = tracing::info_span!("shop", shop = %ctx.shop());
    let outcome = super::run(ctx, stop).instrument(span.clone()).await;
    if !ctx.settings.shops.is_empty() {
        report_to_the_inbox(ctx, &outcome).instrument(span).await;
    }
    ShopRun {
        shop: ctx.shop().to_string(),
        outcome,
    }
}

/// A shop that failed or could not read its marketplace gets one open inbox row (not one per
/// run); a shop whose run went through closes it.
async fn report_to_the_inbox(ctx: &Context, outcome: &Result<RunSummary, RunError>) {
    let shop = ctx.shop();
    let trouble = match outcome {
        Err(err) => Some(err.to_string()),
        Ok(summary) => summary.import_failure(),
    };
    let written = match &trouble {
        Some(why) => {
            let details = format!(
                "Shop {shop}: {why}. The other shops' orders were worked on as usual; this shop's are retried by every run until it works. See `order-acceptance status --shop {shop}`"
            );
            let payload = json!({ "stage": SHOP_STAGE, "shop": shop });
            failures::record_once_per_stage(&ctx.pool, shop, None, SHOP_STAGE, &details, &payload)
                .await
                .map(drop)
        }
        None => resolve_shop_failure(ctx).await,
    };
    if let Err(err) = written {
        tracing::warn!(shop, error = %err, "could not update the shop's row in the failure inbox");
    }
    if let Some(why) = trouble {
        tracing::error!(shop, error = %why, "this shop's run failed; the other shops went on");
    }
}

async fn resolve_shop_failure(ctx: &Context) -> Result<(), sqlx::Error> {
    let mut conn = ctx.pool.acquire().await?;
    failures::resolve_open_of_stage(
        &mut conn,
        ctx.shop(),
        None,
        SHOP_STAGE,
        "Resolved automatically: a later run of the shop went through.",
        db::outcomes::RESOLVED_BY_WORKER,
    )
    .await
    .map(drop)
}
