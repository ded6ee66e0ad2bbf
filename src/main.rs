//! Command line: parses arguments and hands each command to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use sqlx::PgPool;

use order_acceptance::acceptance;
use order_acceptance::config::{Needs, Settings, ShopName};
use order_acceptance::db::failures::FailureFilter;
use order_acceptance::inbox::{self, render};
use order_acceptance::review::{self, Decision, ReviewAction};
use order_acceptance::terminal::Width;
use order_acceptance::{
    check, console, db, healthcheck, redact, scheduler, server, telemetry, terminal,
};

/// Accepts new orders on a Mirakl marketplace (Best Buy Canada and others) and records every
/// step in PostgreSQL. Without a command, runs on `schedule.cron` until SIGTERM or SIGINT.
#[derive(Parser)]
#[command(
    name = "order-acceptance",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Config file (TOML). Default: config/default.toml when it exists.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Do one full run (import, claim, accept, validate, record) of every shop, print its
    /// summary and exit: 0 completed, 1 fatal error (every shop failed), 3 degraded (an import
    /// read no page, or some shops failed while others went through); 2 is a usage error.
    #[arg(long)]
    once: bool,

    /// Only this shop: `default` ([marketplace]) or a [shops.NAME] of the configuration. With
    /// --once (or the schedule) it runs that shop alone; on status, failures, review and order
    /// it shows that shop's orders only.
    #[arg(long, global = true, value_name = "NAME")]
    shop: Option<ShopName>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the configuration, the database, its migrations and the marketplace key (A01);
    /// one line each. Exits non-zero if any check fails.
    Check {
        #[command(flatten)]
        output: Output,
    },
    /// The failure inbox: what a person has to look at.
    #[command(subcommand)]
    Failures(FailuresCommand),
    /// The review queue: orders the rules left to a person, and their decisions.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// One order's status timeline, line and review decisions, failures and API calls.
    Order {
        /// The marketplace's order id.
        order_id: String,
        #[command(flatten)]
        output: Output,
    },
    /// Orders per status, orders in review, the oldest pending order, the nearest deadline,
    /// orders close to it, open failures and the last run.
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// The operator console in the browser, on `console.listen`; needs only DATABASE_URL.
    /// `console user …` manages its accounts.
    Console {
        #[command(subcommand)]
        command: Option<ConsoleCommand>,
    },
    /// Ask the worker's health endpoint; exit 0 when it answers 200 (container health checks).
    /// Reads no configuration.
    Health {
        /// The health endpoint to ask.
        #[arg(long, default_value = healthcheck::DEFAULT_URL)]
        url: url::Url,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
enum FailuresCommand {
    /// Failures, newest first (open ones unless --all).
    List {
        /// Include resolved failures.
        #[arg(long)]
        all: bool,
        /// Only failures of this process (e.g. OrderAcceptance).
        #[arg(long, value_name = "NAME")]
        process: Option<String>,
        /// Only failures recorded within this long (e.g. 2h, 3d).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Everything about one failure: details, payload, the order's current status.
    Show {
        /// The failure's id (first column of `failures list`).
        #[arg(value_parser = failure_id())]
        id: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Close a failure with a note.
    Resolve {
        /// The failure's id.
        #[arg(value_parser = failure_id())]
        id: i64,
        /// What was done about it.
        #[arg(long, value_parser = non_blank)]
        note: String,
        /// Who resolved it [default: $USER, else "unknown"].
        #[arg(long, value_parser = non_blank)]
        by: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Put the failure's order back in the queue and resolve the failure.
    Retry {
        /// The failure's id.
        #[arg(value_parser = failure_id())]
        id: i64,
        /// Who asked for the retry [default: $USER, else "unknown"].
        #[arg(long, value_parser = non_blank)]
        by: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Console accounts: viewers read, operators decide reviews and work the inbox, admins
    /// also manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account; the password is asked twice, or read from stdin's first line.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: console::accounts::Role,
    },
    /// Every account, its role and whether it is disabled.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Stop an account from logging in and end its sessions.
    Disable { name: String },
    /// Set a new password (asked twice, or stdin's first line); ends the account's sessions.
    Password { name: String },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// Orders in review, oldest first: time left to the marketplace's deadline, the rule
    /// that stopped each line, and any decision already queued.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Accept the order (or only the lines named; the others are refused). The worker's next
    /// run carries the decision out, or this command at once with --now.
    Accept {
        #[command(flatten)]
        decision: DecisionArgs,
        /// Why (kept in the audit trail).
        #[arg(long, value_parser = non_blank)]
        note: Option<String>,
    },
    /// Refuse the order (or only the lines named; the others are accepted). The worker's next
    /// run carries the decision out, or this command at once with --now.
    Refuse {
        #[command(flatten)]
        decision: DecisionArgs,
        /// Why (kept in the audit trail; required to refuse).
        #[arg(long, value_parser = non_blank)]
        note: String,
    },
}

#[derive(Args)]
struct DecisionArgs {
    /// The marketplace's order id (see `review list`).
    order_id: String,
    /// Only these order lines (ids from `review list`), separated by commas.
    #[arg(long, value_name = "L1,L2", value_delimiter = ',', value_parser = non_blank)]
    lines: Option<Vec<String>>,
    /// Who decides [default: $USER, else "unknown"].
    #[arg(long, value_parser = non_blank)]
    by: Option<String>,
    /// Carry the decision out at once (claim, OR21, validation for this order only) instead
    /// of leaving it to the worker's next run. Needs the worker's settings, the marketplace
    /// key included.
    #[arg(long)]
    now: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Clone, Copy)]
struct Output {
    /// Print JSON for machines instead of tables.
    #[arg(long)]
    json: bool,
    /// Show tables in full, however wide (by default they fit 120 columns, long texts cut).
    #[arg(long, conflicts_with = "json")]
    wide: bool,
}

impl Output {
    fn width(self) -> Width {
        if self.wide { Width::Wide } else { Width::Fit }
    }
}

fn failure_id() -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(1..)
}

fn non_blank(value: &str) -> Result<String, String> {
    match value.trim() {
        "" => Err("must not be blank".to_string()),
        text => Ok(text.to_string()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            // A driver error may repeat the database URL: no secret is printed, whatever the text.
            let message = redact::scrub(&format!("{err:#}")).into_owned();
            tracing::error!(error = %message, "fatal");
            eprintln!("error: {}", terminal::escape_lines(&message));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    let shop = cli.shop.as_ref().map(ShopName::as_str);
    match cli.command {
        Some(Command::Migrate) => migrate(config).await,
        Some(Command::Check { output }) => check(config, output).await,
        Some(Command::Failures(command)) => failures(config, shop, command).await,
        Some(Command::Review(command)) => review(config, shop, command).await,
        Some(Command::Order { order_id, output }) => {
            let (_, pool) = operator_db(config, shop).await?;
            emit(
                output,
                &inbox::order_report(&pool, &order_id, shop).await?,
                render::order,
            )
        }
        Some(Command::Status { output }) => {
            let (settings, pool) = operator_db(config, shop).await?;
            let windows = acceptance::shops::windows(&settings);
            let windows: Vec<(&str, Duration)> =
                windows.iter().map(|(s, w)| (s.as_str(), *w)).collect();
            let report = inbox::status_report(
                &pool,
                shop,
                &windows,
                settings.alerts.pending_after,
                Utc::now(),
            )
            .await?;
            emit(output, &report, render::status)
        }
        Some(Command::Console { command }) => console_command(config, command).await,
        Some(Command::Health { url, timeout }) => {
            healthcheck::probe(&url, timeout).await?;
            println!("healthy: {url}");
            Ok(ExitCode::SUCCESS)
        }
        None => work(config, shop, cli.once).await,
    }
}

/// The worker itself: one run of every shop (or of `--shop`) with `--once`, else the cron
/// schedule.
async fn work(config: Option<&Path>, shop: Option<&str>, once: bool) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, Needs::Everything)?;
    telemetry::init(settings.log.format);
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let pool = db::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        db::migrate(&pool, &settings.database).await?;
    }
    require_schema(&pool, &settings).await?;
    if settings.rules.enabled {
        db::stock::inspect_stock_relation(&pool, &settings.rules.stock_relation).await?;
    }
    acceptance::shops::register(&pool, &settings)
        .await
        .context("registering the configured shops in the shops table")?;
    let workers = acceptance::shops::contexts(&pool, &settings, shop)?;
    let server = match settings.server.listen {
        Some(addr) => Some(server::start(addr, pool.clone()).await?),
        None => None,
    };
    let shutdown = scheduler::shutdown_signal();
    let worked = if once {
        let runs = acceptance::run_every_shop(&workers, &shutdown).await;
        println!("{}", acceptance::shops_summary(&runs, Width::Fit));
        once_exit_code(runs)
    } else {
        scheduler::run_on_schedule(workers, shutdown)
            .await
            .map(|()| ExitCode::SUCCESS)
    };
    // Stopped after the work, error or not: /healthz answers while a run finishes its grace.
    if let Some(server) = server {
        server.stop().await;
    }
    worked
}

/// A database without this release's schema would fail the first query with "relation does not
/// exist"; say what to do instead.
async fn require_schema(pool: &PgPool, settings: &Settings) -> anyhow::Result<()> {
    let state = db::migration_state(pool)
        .await
        .context("reading the applied migrations (_sqlx_migrations)")?;
    if !state.pending.is_empty() {
        anyhow::bail!(
            "the database {} lacks {} of this release's {} migrations (a new database, or one an older release set up): run `order-acceptance migrate`, or set database.migrate_on_start = true",
            settings.database.redacted_url(),
            state.pending.len(),
            db::MIGRATOR.iter().count()
        );
    }
    Ok(())
}

/// The exit codes a script can tell apart (README, "Exit codes"). 0 and 1 are the usual ones;
/// 2 is clap's for a usage error (a mistyped flag), so a degraded run needs a code of its own.
mod exit_code {
    /// The run completed (some orders may have failed: they are in the inbox).
    pub const COMPLETED: u8 = 0;
    /// `--once` ran, but its import read no page (see the summary's `import failed` line).
    pub const DEGRADED: u8 = 3;
}

/// `--once`: [`exit_code::DEGRADED`] tells a caller the run did its work but an import failed,
/// or some shops failed while others went through; every shop failing is an error (exit 1),
/// the first shop's error its message.
fn once_exit_code(runs: Vec<acceptance::ShopRun>) -> anyhow::Result<ExitCode> {
    if runs.iter().all(acceptance::ShopRun::is_whole) {
        return Ok(ExitCode::from(exit_code::COMPLETED));
    }
    let several = runs.len() > 1;
    let mut failed = Vec::with_capacity(runs.len());
    for run in runs {
        match run.outcome {
            Err(err) => failed.push((run.shop, err)),
            // One shop did its work: the run is degraded, not failed.
            Ok(_) => return Ok(ExitCode::from(exit_code::DEGRADED)),
        }
    }
    match failed.into_iter().next() {
        Some((shop, err)) if several => Err(anyhow::Error::from(err).context(format!(
            "no shop could be worked on (shop {shop}'s error follows; the summary shows the others')"
        ))),
        Some((_, err)) => Err(err.into()),
        None => Ok(ExitCode::from(exit_code::DEGRADED)),
    }
}

/// `check`: every check on its own line; exit 1 when any fails. The report is the output, so
/// a failure is not also printed as an error.
async fn check(config: Option<&Path>, output: Output) -> anyhow::Result<ExitCode> {
    let report = match Settings::load(config, Needs::Everything) {
        Ok(settings) => {
            // Logs (e.g. a failed api_calls write with the database down) go to stderr, so
            // stdout holds only the report.
            telemetry::init_with_writer(settings.log.format, std::io::stderr);
            check::run_checks(&settings).await
        }
        Err(err) => check::CheckReport::invalid_configuration(&err),
    };
    let text = if output.json {
        render::json(&report).context("writing JSON")?
    } else {
        terminal::escape_lines(&report.render()).into_owned()
    };
    println!("{}", text.trim_end());
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn migrate(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, Needs::DatabaseOnly)?;
    telemetry::init(settings.log.format);
    let pool = db::connect(&settings.database).await?;
    db::migrate(&pool, &settings.database)
        .await
        .context("migrate")?;
    acceptance::shops::register(&pool, &settings)
        .await
        .context("registering the configured shops in the shops table")?;
    tracing::info!(database = %settings.database.redacted_url(), "migrations applied");
    Ok(ExitCode::SUCCESS)
}

async fn failures(
    config: Option<&Path>,
    shop: Option<&str>,
    command: FailuresCommand,
) -> anyhow::Result<ExitCode> {
    let (_, pool) = operator_db(config, shop).await?;
    let now = Utc::now();
    match command {
        FailuresCommand::List {
            all,
            process,
            since,
            limit,
            output,
        } => {
            let since = since
                .map(|duration| inbox::time_before(now, duration, "--since"))
                .transpose()?;
            let filter = FailureFilter {
                include_resolved: all,
                process_name: process,
                shop: shop.map(str::to_string),
                since,
                limit,
            };
            let list = inbox::list_failures(&pool, &filter, now).await?;
            emit(output, &list, render::failure_list)
        }
        FailuresCommand::Show { id, output } => emit(
            output,
            &inbox::show_failure(&pool, id, now).await?,
            render::failure,
        ),
        FailuresCommand::Resolve {
            id,
            note,
            by,
            output,
        } => emit(
            output,
            &inbox::resolve_failure(&pool, id, &note, &operator(by)).await?,
            |resolution, _| render::resolution(resolution),
        ),
        FailuresCommand::Retry { id, by, output } => emit(
            output,
            &inbox::retry_failure(&pool, id, &operator(by)).await?,
            |retry, _| render::retry(retry),
        ),
    }
}

async fn review(
    config: Option<&Path>,
    shop: Option<&str>,
    command: ReviewCommand,
) -> anyhow::Result<ExitCode> {
    let (args, action, note) = match command {
        ReviewCommand::List { output } => {
            let (settings, pool) = operator_db(config, shop).await?;
            let windows = acceptance::shops::windows(&settings);
            let windows: Vec<(&str, Duration)> =
                windows.iter().map(|(s, w)| (s.as_str(), *w)).collect();
            let note = inbox::deadline_note(settings.marketplace.acceptance_window);
            let list = review::list_in_review(&pool, shop, &windows, note, Utc::now()).await?;
            return emit(output, &list, render::review_list);
        }
        ReviewCommand::Accept { decision, note } => (decision, ReviewAction::Accept, note),
        ReviewCommand::Refuse { decision, note } => (decision, ReviewAction::Refuse, Some(note)),
    };
    let settings = match args.now {
        true => Settings::load(config, Needs::Everything)?,
        false => Settings::load(config, Needs::DatabaseOnly)?,
    };
    telemetry::init_with_writer(settings.log.format, std::io::stderr);
    let pool = db::connect(&settings.database).await?;
    let decision = Decision {
        shop: inbox::shop_of_order(&pool, &args.order_id, shop).await?,
        order_id: args.order_id,
        action,
        lines: args.lines,
        note,
        decided_by: operator(args.by),
    };
    if !args.now {
        let queued = review::queue_decision(&pool, &decision).await?;
        return emit(args.output, &queued, |queued, _| render::queued(queued));
    }
    let worker = acceptance::shops::contexts(&pool, &settings, Some(&decision.shop))?
        .into_iter()
        .next()
        .context("no worker for the order's shop")?;
    let decided = acceptance::decide_now(&worker, &scheduler::shutdown_signal(), &decision).await?;
    emit(args.output, &decided, render::decided_now)
}

/// `console`: serves the console until SIGTERM or SIGINT; `console user …`: its accounts.
async fn console_command(
    config: Option<&Path>,
    command: Option<ConsoleCommand>,
) -> anyhow::Result<ExitCode> {
    use console::accounts;
    let Some(ConsoleCommand::User(command)) = command else {
        let settings = Settings::load(config, Needs::DatabaseOnly)?;
        telemetry::init(settings.log.format);
        let pool = db::connect(&settings.database).await?;
        console::run(settings, pool, scheduler::shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    };
    let pool = operator_pool(config).await?;
    match command {
        UserCommand::Add { name, role } => {
            let password = accounts::read_new_password(&name)?;
            let user = accounts::add_user(&pool, &name, role, &password).await?;
            println!("added {} ({})", user.name, user.role);
        }
        UserCommand::List { output } => {
            let users = accounts::list_users(&pool).await?;
            return emit(output, &users, |users, _| accounts::users_table(users));
        }
        UserCommand::Disable { name } => {
            accounts::disable_user(&pool, &name).await?;
            println!("disabled {name}: they can no longer log in, and their sessions are ended");
        }
        UserCommand::Password { name } => {
            let password = accounts::read_new_password(&name)?;
            accounts::change_password(&pool, &name, &password).await?;
            println!("changed the password of {name}; their sessions are ended");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who is acting, for resolutions, retries and review decisions.
fn operator(by: Option<String>) -> String {
    inbox::operator_name(by, std::env::var("USER").ok())
}

/// Settings for a command that only reads or writes the database. Its logs go to stderr so
/// stdout holds nothing but the result (`--json` output stays parseable).
fn operator_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    let settings = Settings::load(config, Needs::DatabaseOnly)?;
    telemetry::init_with_writer(settings.log.format, std::io::stderr);
    Ok(settings)
}

async fn operator_pool(config: Option<&Path>) -> anyhow::Result<PgPool> {
    let settings = operator_settings(config)?;
    Ok(db::connect(&settings.database).await?)
}

/// The settings and the database of an operator command about the orders of `shop` (or every
/// shop): a shop named must be configured, or known to the database (its orders stay after it
/// left the configuration), so a mistyped name is an error, not an empty report.
async fn operator_db(
    config: Option<&Path>,
    shop: Option<&str>,
) -> anyhow::Result<(Settings, PgPool)> {
    let settings = operator_settings(config)?;
    let pool = db::connect(&settings.database).await?;
    if let Some(name) = shop
        && settings.find_shop(name).is_none()
    {
        let known = db::runs::known_shops(&pool)
            .await
            .context("reading the shops the database knows (shops)")?;
        if !known.iter().any(|known| known == name) {
            anyhow::bail!(
                "--shop {name}: no such shop in the configuration or the database; the shops are {}",
                known.join(", ")
            );
        }
    }
    Ok((settings, pool))
}

/// Prints a command's result as a table (or JSON with --json).
fn emit<T: Serialize>(
    output: Output,
    value: &T,
    as_text: fn(&T, Width) -> String,
) -> anyhow::Result<ExitCode> {
    let text = if output.json {
        render::json(value).context("writing JSON")?
    } else {
        as_text(value, output.width())
    };
    println!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}
