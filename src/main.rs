//! Command line: parses arguments and hands each command to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use order_acceptance::acceptance::{self, Context};
use order_acceptance::config::{Needs, Settings};
use order_acceptance::marketplace::MarketplaceClient;
use order_acceptance::{db, scheduler, telemetry};

/// Accepts new orders on a Mirakl marketplace (Best Buy Canada and others) and records every
/// step in PostgreSQL. Without a command, runs on `schedule.cron` until SIGTERM or SIGINT.
#[derive(Parser)]
#[command(name = "order-acceptance", version, about)]
struct Cli {
    /// Config file (TOML). Default: config/default.toml when it exists.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Do one full run (import, claim, accept, validate, record), print its summary and exit.
    #[arg(long, conflicts_with = "command")]
    once: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "fatal");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let needs = match cli.command {
        Some(Command::Migrate) => Needs::DatabaseOnly,
        None => Needs::Everything,
    };
    let settings = Settings::load(cli.config.as_deref(), needs)?;
    telemetry::init(settings.log.format);
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    match cli.command {
        Some(Command::Migrate) => {
            let pool = db::connect(&settings.database).await?;
            db::migrate(&pool, &settings.database).await?;
            tracing::info!(database = %settings.database.redacted_url(), "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let ctx = worker_context(settings).await?;
            let shutdown = scheduler::shutdown_signal();
            if cli.once {
                let summary = acceptance::run(&ctx, &shutdown).await?;
                println!("{}", acceptance::summary_table(&summary));
            } else {
                scheduler::run_on_schedule(ctx, shutdown).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Connects to the database (migrating first when configured) and the marketplace.
async fn worker_context(settings: Settings) -> anyhow::Result<Context> {
    let pool = db::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        db::migrate(&pool, &settings.database).await?;
    }
    let client = MarketplaceClient::new(&settings.marketplace, &settings.api_calls, pool.clone())
        .context("setting up the marketplace client")?;
    Ok(Context::new(pool, client, Arc::new(settings)))
}
