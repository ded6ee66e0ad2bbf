//! Command line: parses arguments and hands each command to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use order_acceptance::config::{Needs, Settings};
use order_acceptance::{db, telemetry};

/// Accepts new orders on a Mirakl marketplace (Best Buy Canada and others) and records every
/// step in PostgreSQL.
#[derive(Parser)]
#[command(name = "order-acceptance", version, about)]
struct Cli {
    /// Config file (TOML). Default: config/default.toml when it exists.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

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
            db::migrate(&pool, &settings.database)
                .await
                .context("migrate")?;
            tracing::info!(database = %settings.database.redacted_url(), "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("no command given yet; see --help"),
    }
}
