//! marketplace-sim: serves a Mirakl-compatible marketplace (OR11, OR21, A01) for demos, tests
//! and benchmarks. The simulator itself is this crate's library, `marketplace_sim`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use std::io::IsTerminal;

use clap::Parser;
use marketplace_sim::{Catalogue, Faults, SimConfig, Simulator, marketplace_name};
use tracing_subscriber::EnvFilter;

/// A Mirakl-compatible marketplace simulator for demos, tests and benchmarks.
///
/// Serves OR11, OR21 and A01 under /api, moves accepted orders through WAITING_DEBIT,
/// WAITING_DEBIT_PAYMENT and SHIPPING one --step apart, and injects faults on request.
/// Control endpoints (no key): POST /sim/orders, GET /sim/stats, GET /sim/orders/{id}.
/// With --marketplaces, each marketplace's /api and /sim routes are under /NAME.
/// Rates are probabilities from 0 to 1; random draws come from --seed, so runs are
/// reproducible. Stops cleanly on SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "marketplace-sim", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,

    /// Shop API key the Authorization header must carry, exactly (no "Bearer ").
    #[arg(long, env = "MARKETPLACE_API_KEY", hide_env_values = true, value_parser = non_empty)]
    key: String,

    /// Orders seeded in WAITING_ACCEPTANCE at start-up, created over the last six hours.
    #[arg(long, default_value_t = 0, value_name = "N")]
    orders: usize,

    /// The catalogue generated orders draw their lines from: a CSV file of
    /// sku,unit_price[,title] lines (header line allowed; e.g. config/demo-catalogue.csv) or
    /// an inline list like "SKU1:19.99,SKU2:5". Default: eight built-in Best Buy-like products.
    #[arg(long, value_parser = catalogue, value_name = "FILE|LIST")]
    skus: Option<Catalogue>,

    /// Serve several marketplaces from this process: each one's whole API (/api and /sim)
    /// under /NAME, e.g. --marketplaces bestbuy_ca,other serves
    /// http://ADDR/bestbuy_ca/api/orders and http://ADDR/other/api/orders. Each has its own
    /// orders (--orders N each, so the same order ids on every one), faults, rate limit and
    /// counters, all from the other flags. Names are plain identifiers (a lowercase letter, then
    /// lowercase letters, digits or underscores). Without it, one marketplace is served at /.
    #[arg(long, value_delimiter = ',', value_parser = marketplace_name, value_name = "NAME,NAME")]
    marketplaces: Vec<String>,

    /// Seed for order contents, order fates and faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Time between state transitions after acceptance (0 makes them immediate).
    #[arg(long, default_value = "200ms", value_parser = duration, value_name = "DURATION")]
    step: Duration,

    /// Orders left undecided in WAITING_ACCEPTANCE this long after creation read REFUSED
    /// with reason code AUTO_REFUSED_ACCEPTANCE_DEADLINE; OR21 on them answers
    /// ORDER_INVALID_STATE.
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    acceptance_deadline: Duration,

    /// Answer OR21 that accepts some lines and refuses others with
    /// ORDER_PARTIAL_ACCEPTANCE_DISABLED (by default the order goes on with its accepted
    /// lines and the refused ones read REFUSED).
    #[arg(long)]
    no_partial_acceptance: bool,

    /// Delay on every /api request: fixed ("50ms") or uniform in a range ("20ms..80ms").
    #[arg(long, value_parser = latency, value_name = "DURATION[..DURATION]")]
    latency: Option<(Duration, Duration)>,

    /// Share of requests answered 5xx (500 JSON, 502/503 HTML gateway pages); no effect.
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    error_rate: f64,

    /// Share of requests answered 429 with Retry-After; no effect.
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    throttle_rate: f64,

    /// Retry-After on 429 answers (in whole seconds, rounded up).
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    retry_after: Duration,

    /// How 429 answers write Retry-After: "seconds" (e.g. 5) or "http-date" (the time to
    /// retry at, e.g. "Tue, 01 Dec 2026 09:00:05 GMT").
    #[arg(long, value_enum, default_value_t = RetryAfterFormat::Seconds, value_name = "FORMAT")]
    retry_after_format: RetryAfterFormat,

    /// Requests per second for each endpoint (OR11, OR21 and A01 each have their own token
    /// bucket, one second of burst) over which the answer is 429.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    rate_limit: Option<u32>,

    /// Share of OR21 calls applied but answered only after --slow-delay (client timeouts).
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    slow_rate: f64,

    /// How long slow OR21 answers are held back.
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    slow_delay: Duration,

    /// Share of orders that go CANCELED one step after acceptance instead of moving on.
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    cancel_rate: f64,

    /// Share of orders that stay WAITING_ACCEPTANCE forever after a 204.
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    stuck_rate: f64,

    /// Share of OR11 calls answered 200 with an HTML page instead of JSON.
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    html_rate: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RetryAfterFormat {
    Seconds,
    HttpDate,
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("the key must not be empty".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

fn catalogue(value: &str) -> Result<Catalogue, String> {
    Catalogue::from_arg(value).map_err(|error| error.to_string())
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|error| format!("{error} (expected e.g. 200ms, 1s, 5m)"))
}

fn latency(value: &str) -> Result<(Duration, Duration), String> {
    match value.split_once("..") {
        None => duration(value).map(|fixed| (fixed, fixed)),
        Some((low, high)) => {
            let (low, high) = (duration(low)?, duration(high)?);
            if low > high {
                Err(format!("the range {value} ends before it starts"))
            } else {
                Ok((low, high))
            }
        }
    }
}

fn rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{value} is not a rate between 0 and 1")),
    }
}

async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = SimConfig {
        key: cli.key,
        orders: cli.orders,
        seed: cli.seed,
        step: cli.step,
        acceptance_deadline: cli.acceptance_deadline,
        partial_acceptance: !cli.no_partial_acceptance,
        catalogue: cli.skus.unwrap_or_default(),
        faults: Faults {
            latency: cli.latency,
            error_rate: cli.error_rate,
            throttle_rate: cli.throttle_rate,
            retry_after: cli.retry_after,
            retry_after_http_date: cli.retry_after_format == RetryAfterFormat::HttpDate,
            rate_limit: cli.rate_limit,
            slow_rate: cli.slow_rate,
            slow_delay: cli.slow_delay,
            cancel_rate: cli.cancel_rate,
            stuck_rate: cli.stuck_rate,
            html_rate: cli.html_rate,
        },
    };
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let started = match cli.marketplaces.as_slice() {
        [] => Simulator::start(config, listener).await,
        names => {
            let marketplaces = names
                .iter()
                .map(|name| (name.clone(), config.clone()))
                .collect();
            Simulator::start_marketplaces(marketplaces, listener).await
        }
    };
    let simulator = match started {
        Ok(simulator) => simulator,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts wait for this line, so it goes to stdout whatever the log format.
    match cli.marketplaces.is_empty() {
        true => println!(
            "marketplace-sim listening on {} with {} orders",
            simulator.url(),
            cli.orders
        ),
        false => {
            let urls: Vec<String> = simulator.marketplaces().iter().map(|m| m.url()).collect();
            println!(
                "marketplace-sim listening on {} with {} orders on each of {}",
                simulator.url(),
                cli.orders,
                urls.join(", ")
            );
        }
    }
    let code = match stop_signal().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot wait for signals: {error}");
            ExitCode::FAILURE
        }
    };
    simulator.shutdown().await;
    code
}

/// JSON lines when stdout is not a terminal (containers, log files), readable text otherwise, as
/// the worker logs; `RUST_LOG` sets the level (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::io::stdout().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).with_ansi(false).init();
    }
}
