//! `order-acceptance check`: is this installation ready to run? One line per check, each ✓ or
//! ✗ with what was found, so an operator fixing a deployment sees every problem in one go.
//!
//! The checks: the configuration loads; the database answers; its migrations match this
//! binary's; with rules on, the stock relation is usable; every shop's marketplace answers A01
//! and accepts its key (one line per shop, named when there are several). No key is ever
//! printed.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use chrono::Utc;

use crate::config::{self, ConfigError, Settings, Shop};
use crate::db::{self, MigrationState};
use crate::marketplace::{MarketplaceClient, MarketplaceError};

/// How long the marketplace check waits to write its `api_calls` row when the database check
/// already failed.
const UNREACHABLE_DATABASE_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// True when every check passed.
    pub ok: bool,
    pub checks: Vec<CheckLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// `configuration`, `schedule`, `database`, `migrations`, `stock` (rules on), or
    /// `marketplace`: with named shops, `marketplace (NAME)`, one per shop.
    pub check: String,
    /// The shop a `marketplace` line is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop: Option<String>,
    pub ok: bool,
    /// What was found: on success what was reached, on failure why and what to do.
    pub detail: String,
}

impl CheckReport {
    fn new(checks: Vec<CheckLine>) -> Self {
        CheckReport {
            ok: checks.iter().all(|line| line.ok),
            checks,
        }
    }

    /// The report when the configuration does not load: nothing else can be checked.
    pub fn invalid_configuration(error: &ConfigError) -> Self {
        CheckReport::new(vec![failed("configuration", error.to_string())])
    }

    /// The report for people: one line per check.
    pub fn render(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|line| line.check.len())
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for line in &self.checks {
            let mark = if line.ok { '✓' } else { '✗' };
            // Continuation lines (a configuration error lists its problems) stay under the detail.
            let detail = line
                .detail
                .replace('\n', &format!("\n{:indent$}", "", indent = width + 3));
            text.push_str(&format!("{mark} {:width$} {detail}\n", line.check));
        }
        text
    }
}

fn passed(check: &str, detail: String) -> CheckLine {
    CheckLine {
        check: check.to_owned(),
        shop: None,
        ok: true,
        detail,
    }
}

fn failed(check: &str, detail: String) -> CheckLine {
    CheckLine {
        check: check.to_owned(),
        shop: None,
        ok: false,
        detail,
    }
}

/// Runs every check after the configuration loaded.
pub async fn run_checks(settings: &Settings) -> CheckReport {
    // Warnings do not fail the check, but this is where an operator looks for them.
    let warnings = settings.warnings();
    let configuration = if warnings.is_empty() {
        "valid".to_string()
    } else {
        format!("valid, with warnings:\n- {}", warnings.join("\n- "))
    };
    let mut checks = vec![passed("configuration", configuration), schedule(settings)];
    let pool = match db::connect(&settings.database).await {
        Ok(pool) => {
            checks.push(database_version(&pool, settings).await);
            checks.push(migrations(&pool).await);
            if settings.rules.enabled {
                checks.push(stock_relation(&pool, &settings.rules.stock_relation).await);
            }
            pool
        }
        Err(err) => {
            checks.push(failed("database", err.to_string()));
            checks.push(failed(
                "migrations",
                "not checked: the database is unreachable".to_string(),
            ));
            unconnected_pool(settings)
        }
    };
    let shops = settings.all_shops();
    let named = shops.len() > 1;
    let marketplaces = shops
        .iter()
        .map(|shop| marketplace(settings, shop, named, pool.clone()));
    checks.extend(futures::future::join_all(marketplaces).await);
    CheckReport::new(checks)
}

/// When the next runs start, so a schedule that is valid but not what was meant shows.
fn schedule(settings: &Settings) -> CheckLine {
    let schedule = &settings.schedule;
    match config::next_runs(&schedule.cron, schedule.timezone, Utc::now(), 3) {
        Ok(runs) if !runs.is_empty() => {
            let at: Vec<String> = runs
                .iter()
                .map(|run| run.format("%Y-%m-%d %H:%M:%S").to_string())
                .collect();
            passed(
                "schedule",
                format!(
                    "\"{}\": next runs {} ({})",
                    schedule.cron,
                    at.join(", "),
                    schedule.timezone
                ),
            )
        }
        // Loading refused both already; kept for a report that must never panic.
        Ok(_) => failed(
            "schedule",
            format!("\"{}\" never fires within a year", schedule.cron),
        ),
        Err(err) => failed("schedule", err),
    }
}

async fn database_version(pool: &PgPool, settings: &Settings) -> CheckLine {
    let url = settings.database.redacted_url();
    match sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(pool)
        .await
    {
        Ok(version) => passed("database", format!("{url} answers (PostgreSQL {version})")),
        Err(err) => failed(
            "database",
            format!(
                "{url} accepted a connection but failed a query: {err}. Check that the user may read this database"
            ),
        ),
    }
}

async fn migrations(pool: &PgPool) -> CheckLine {
    let state = match db::migration_state(pool).await {
        Ok(state) => state,
        Err(err) => {
            return failed(
                "migrations",
                format!("cannot read _sqlx_migrations: {err}. Check the database user's rights"),
            );
        }
    };
    if state.is_current() {
        let count = db::MIGRATOR
            .iter()
            .filter(|migration| !migration.migration_type.is_down_migration())
            .count();
        return passed("migrations", format!("all {count} applied"));
    }
    failed("migrations", describe_migrations(&state))
}

async fn stock_relation(pool: &PgPool, relation: &str) -> CheckLine {
    match db::stock::inspect_stock_relation(pool, relation).await {
        Ok(columns) => {
            let optional: Vec<&str> = [
                ("min_price", columns.min_price),
                ("backorder", columns.backorder),
            ]
            .into_iter()
            .filter_map(|(name, present)| present.then_some(name))
            .collect();
            let extra = match optional.is_empty() {
                true => String::new(),
                false => format!(", {}", optional.join(", ")),
            };
            passed("stock", format!("{relation} has sku, available{extra}"))
        }
        Err(err) => failed("stock", err.to_string()),
    }
}

fn describe_migrations(state: &MigrationState) -> String {
    let list = |versions: &[i64]| {
        versions
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    if !state.pending.is_empty() {
        problems.push(format!(
            "{} pending ({}): run `order-acceptance migrate`",
            state.pending.len(),
            list(&state.pending)
        ));
    }
    if !state.failed.is_empty() {
        problems.push(format!(
            "failed partway ({}): fix the cause in the database log and run `order-acceptance migrate` again",
            list(&state.failed)
        ));
    }
    if !state.changed.is_empty() {
        problems.push(format!(
            "applied from a different file than this release's ({}): the migration was edited after it ran; restore it or ask the developers",
            list(&state.changed)
        ));
    }
    if !state.unknown.is_empty() {
        problems.push(format!(
            "the database has migrations this release does not know ({}): a newer release migrated it; run that release",
            list(&state.unknown)
        ));
    }
    problems.join("; ")
}

/// A pool that only connects when used, for the marketplace client's `api_calls` rows when the
/// database is unreachable: the client then logs that it cannot write the row and carries on,
/// which is what a check with the database down needs.
fn unconnected_pool(settings: &Settings) -> PgPool {
    let options = settings
        .database
        .url
        .expose_secret()
        .parse::<PgConnectOptions>()
        // An unusable URL was reported by the database check; a socket path that cannot exist
        // gives the client a pool that fails every write without reaching any server.
        .unwrap_or_else(|_| {
            PgConnectOptions::new_without_pgpass().socket("/nonexistent/order-acceptance-check")
        });
    PgPoolOptions::new()
        .max_connections(1)
        // The database just failed to answer: waiting database.connect_timeout again for the
        // audit row would only double the time the check takes.
        .acquire_timeout(UNREACHABLE_DATABASE_WAIT)
        .connect_lazy_with(options)
}

/// A01 with the shop's key. `named`: the line names the shop (there are several).
async fn marketplace(settings: &Settings, shop: &Shop, named: bool, pool: PgPool) -> CheckLine {
    let check = match named {
        true => format!("marketplace ({})", shop.name),
        false => "marketplace".to_owned(),
    };
    CheckLine {
        shop: Some(shop.name.to_string()),
        ..account(settings, shop, pool, &check).await
    }
}

async fn account(settings: &Settings, shop: &Shop, pool: PgPool, check: &str) -> CheckLine {
    let url = &crate::redact::url(shop.marketplace.url.as_str());
    let section = shop.section();
    // One attempt, no retries: the check reports what it sees now, within marketplace.timeout,
    // instead of waiting through the worker's retry budget.
    let mut marketplace = shop.marketplace.clone();
    marketplace.retry.attempts = 1;
    let client = match MarketplaceClient::for_shop(
        shop.name.as_str(),
        &marketplace,
        &settings.api_calls,
        pool,
    ) {
        Ok(client) => client,
        Err(err) => return failed(check, format!("{err:#}")),
    };
    match client.account().await {
        Ok(account) => {
            let found = match (account.shop_name, account.shop_id) {
                (Some(name), Some(id)) => format!("shop \"{name}\" (id {id})"),
                (Some(name), None) => format!("shop \"{name}\""),
                (None, Some(id)) => format!("shop id {id}"),
                (None, None) => "a shop with no name or id".to_string(),
            };
            passed(check, format!("{url} accepted the key: {found}"))
        }
        Err(MarketplaceError::Unauthorized { status: 401, .. }) => failed(
            check,
            format!(
                "{url}: the key was refused (HTTP 401): check {} and {section}.url",
                shop.api_key_source()
            ),
        ),
        Err(MarketplaceError::Unauthorized { status, .. }) => failed(
            check,
            format!(
                "{url}: the key was refused (HTTP {status}): it lacks a shop role, or {section}.shop_id names a shop it cannot reach; check {section}.api_key and {section}.shop_id"
            ),
        ),
        Err(err) => failed(check, format!("{url}: {err}")),
    }
}
