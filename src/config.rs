//! Typed settings: built-in defaults < config file < `ORDER_ACCEPTANCE__SECTION__KEY` variables <
//! the well-known `DATABASE_URL`, `MARKETPLACE_URL` and `MARKETPLACE_API_KEY`.
//!
//! Loading happens in two steps. Figment merges the layers into a loose [`raw`] form where every
//! duration is still a string; [`Settings::from_raw`] then checks every value and collects all
//! problems into one [`ConfigError`], so an operator fixes a bad file in one pass, not one error
//! per restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use secrecy::{ExposeSecret, SecretString};

/// Where the shipped configuration lives, relative to the working directory.
const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

/// The shipped file is also the bottom layer, compiled in: every key has its default in one
/// place, and a binary without the file beside it still has them all.
const BUILT_IN_DEFAULTS: &str = include_str!("../config/default.toml");

const ENV_PREFIX: &str = "ORDER_ACCEPTANCE__";

/// Well-known variables and the key each one overrides. Listed here once so the loader, the
/// missing-value message and the docs agree.
const WELL_KNOWN_VARS: [(&str, &str); 3] = [
    ("DATABASE_URL", "database.url"),
    ("MARKETPLACE_URL", "marketplace.url"),
    ("MARKETPLACE_API_KEY", "marketplace.api_key"),
];

/// The marketplace refuses an order left undecided this long after its creation.
pub const ACCEPTANCE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Bounds of `marketplace.max_requests_per_second` (other than 0): one call per 100 s to a pace
/// no marketplace publishes.
const MIN_RATE: f64 = 0.01;
const MAX_RATE: f64 = 10_000.0;

/// Below this, OR11 polling runs faster than Mirakl asks of background jobs.
const MIRAKL_MIN_READ_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub marketplace: MarketplaceSettings,
    pub schedule: ScheduleSettings,
    pub acceptance: AcceptanceSettings,
    pub validation: ValidationSettings,
    pub import: ImportSettings,
    pub api_calls: ApiCallsSettings,
    pub server: ServerSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
    pub alerts: AlertSettings,
    pub rules: RulesSettings,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    /// The full URL, password included: a secret.
    pub url: SecretString,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub migrate_on_start: bool,
}

impl DatabaseSettings {
    /// The URL with its password replaced, for logs and messages.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct MarketplaceSettings {
    pub url: url::Url,
    pub api_key: SecretString,
    pub shop_id: Option<String>,
    /// Written to `api_calls.service`.
    pub name: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetrySettings,
    pub gate: GateSettings,
    pub max_response_bytes: usize,
}

impl MarketplaceSettings {
    /// The longest one call may take, retries included: the last attempt can start just before
    /// the retry budget runs out and then take a full timeout.
    pub fn call_budget(&self) -> Duration {
        self.retry.budget + self.timeout
    }
}

#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub budget: Duration,
}

/// The rate gate every call passes before it is sent (`src/marketplace/gate.rs`).
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// The longest a run's calls may be held at closed gates, all closings together.
    pub retry_after_ceiling: Duration,
    /// Most requests per second per endpoint group; `None`: no pace.
    pub max_requests_per_second: Option<f64>,
    /// Pace each group after a closing at the rate the marketplace answered it at.
    pub learn_pace: bool,
}

#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub cron: String,
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone)]
pub struct AcceptanceSettings {
    pub batch_size: u32,
    pub concurrency: u32,
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct ValidationSettings {
    pub interval: Duration,
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct ImportSettings {
    pub enabled: bool,
    /// OR11 pages read and stored at once.
    pub parallel_pages: u32,
}

#[derive(Debug, Clone)]
pub struct ApiCallsSettings {
    pub retention: Duration,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub pending_after: Duration,
}

/// What a rule does with a line it matches, and what the deadline does with an order in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Accept,
    Refuse,
    /// Leave it to a person: the whole order waits in the review queue, no OR21.
    Review,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Accept => "accept",
            RuleAction::Refuse => "refuse",
            RuleAction::Review => "review",
        }
    }
}

/// The per-line acceptance rules (`[rules]`). Off by default: every line is accepted, as before.
#[derive(Debug, Clone)]
pub struct RulesSettings {
    pub enabled: bool,
    /// The table or view the stock is read from: `name` or `schema.name`, checked to be plain
    /// identifiers because it is written into SQL.
    pub stock_relation: String,
    /// Reservations older than this no longer count against the stock; `None`: they count until
    /// released.
    pub reservation_ttl: Option<Duration>,
    /// How far below `min_price` a line's unit price may be, as a fraction (0.1 = 10 %).
    pub max_price_drop: f64,
    /// Orders whose total is above this go to review; `None`: no limit.
    pub max_order_total: Option<f64>,
    pub unknown_sku: RuleAction,
    pub insufficient_stock: RuleAction,
    pub backorder: RuleAction,
    pub price_below_floor: RuleAction,
    pub order_total_above_limit: RuleAction,
    /// What the worker does with an order still in review `deadline_margin` before the
    /// marketplace's 24-hour deadline.
    pub on_deadline: RuleAction,
    pub deadline_margin: Duration,
}

/// What a command needs: the worker needs everything; commands that only read the database
/// (`migrate`, the failure inbox, `status`) need no marketplace key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Everything,
    DatabaseOnly,
}

/// Every problem found in the configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}\nFix these in the config file or the environment and start again.", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl Settings {
    /// Loads settings from `path` (or `config/default.toml` when it exists) and the process
    /// environment.
    pub fn load(path: Option<&Path>, needs: Needs) -> Result<Self, ConfigError> {
        Self::load_from(path, needs, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment passed in so tests need not touch the
    /// process environment.
    pub fn load_from(
        path: Option<&Path>,
        needs: Needs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(BUILT_IN_DEFAULTS));
        if let Some(file) = config_file(path)? {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = merge_env(figment, env.into_iter().collect());
        let raw: raw::Settings = figment.extract().map_err(|err| ConfigError {
            problems: err.into_iter().map(describe_figment_error).collect(),
        })?;
        Self::from_raw(raw, needs)
    }

    /// Checks every value of the merged layers and builds the typed settings.
    fn from_raw(raw: raw::Settings, needs: Needs) -> Result<Self, ConfigError> {
        let mut check = Checker::default();
        check.required(&raw, needs);

        let database = DatabaseSettings {
            url: SecretString::from(raw.database.url.clone()),
            max_connections: check.at_least(
                "database.max_connections",
                raw.database.max_connections,
                1,
            ),
            connect_timeout: check
                .duration("database.connect_timeout", &raw.database.connect_timeout),
            migrate_on_start: raw.database.migrate_on_start,
        };
        if !raw.database.url.is_empty() {
            check.database_url(&raw.database.url);
        }

        let marketplace = MarketplaceSettings {
            url: check.marketplace_url(&raw.marketplace.url),
            api_key: SecretString::from(raw.marketplace.api_key),
            shop_id: check.shop_id(&raw.marketplace.shop_id),
            name: check.non_empty("marketplace.name", raw.marketplace.name),
            timeout: check.duration("marketplace.timeout", &raw.marketplace.timeout),
            connect_timeout: check.duration(
                "marketplace.connect_timeout",
                &raw.marketplace.connect_timeout,
            ),
            retry: RetrySettings {
                attempts: check.at_least(
                    "marketplace.retry_attempts",
                    raw.marketplace.retry_attempts,
                    1,
                ),
                initial_delay: check.duration(
                    "marketplace.retry_initial_delay",
                    &raw.marketplace.retry_initial_delay,
                ),
                max_delay: check.duration(
                    "marketplace.retry_max_delay",
                    &raw.marketplace.retry_max_delay,
                ),
                budget: check.duration("marketplace.retry_budget", &raw.marketplace.retry_budget),
            },
            gate: GateSettings {
                retry_after_ceiling: check.duration(
                    "marketplace.retry_after_ceiling",
                    &raw.marketplace.retry_after_ceiling,
                ),
                max_requests_per_second: check.rate(
                    "marketplace.max_requests_per_second",
                    raw.marketplace.max_requests_per_second,
                ),
                learn_pace: raw.marketplace.learn_pace,
            },
            max_response_bytes: check.at_least(
                "marketplace.max_response_bytes",
                raw.marketplace.max_response_bytes,
                1024,
            ),
        };

        let schedule = ScheduleSettings {
            cron: check.cron(raw.schedule.cron),
            timezone: check.timezone(&raw.schedule.timezone),
        };
        let acceptance = AcceptanceSettings {
            batch_size: check.within(
                "acceptance.batch_size",
                raw.acceptance.batch_size,
                1,
                10_000,
            ),
            concurrency: check.within(
                "acceptance.concurrency",
                raw.acceptance.concurrency,
                1,
                1_000,
            ),
            lease: check.duration("acceptance.lease", &raw.acceptance.lease),
            max_attempts: check.at_least("acceptance.max_attempts", raw.acceptance.max_attempts, 1),
            retry_delay: check.duration("acceptance.retry_delay", &raw.acceptance.retry_delay),
        };
        let validation = ValidationSettings {
            interval: check.duration("validation.interval", &raw.validation.interval),
            max_attempts: check.at_least("validation.max_attempts", raw.validation.max_attempts, 1),
        };
        let import = ImportSettings {
            enabled: raw.import.enabled,
            parallel_pages: check.within("import.parallel_pages", raw.import.parallel_pages, 1, 16),
        };
        let api_calls = ApiCallsSettings {
            retention: check.duration("api_calls.retention", &raw.api_calls.retention),
            max_body_bytes: check.at_least(
                "api_calls.max_body_bytes",
                raw.api_calls.max_body_bytes,
                256,
            ),
        };
        let server = ServerSettings {
            listen: check.listen_address(&raw.server.listen),
        };
        let shutdown = ShutdownSettings {
            grace: check.duration("shutdown.grace", &raw.shutdown.grace),
        };
        let log = LogSettings {
            format: check.log_format(&raw.log.format),
        };
        let alerts = AlertSettings {
            pending_after: check.duration("alerts.pending_after", &raw.alerts.pending_after),
        };
        let rules = check.rules(raw.rules);

        check.finish()?;
        let settings = Settings {
            database,
            marketplace,
            schedule,
            acceptance,
            validation,
            import,
            api_calls,
            server,
            shutdown,
            log,
            alerts,
            rules,
        };
        // The lease only matters to the worker; operator commands must work to fix a bad one.
        if needs == Needs::Everything {
            settings.check_lease()?;
        }
        Ok(settings)
    }

    /// The longest a run can work on one claimed order before recording its outcome: its
    /// preflight read, the accept calls queued ahead of it (a run claims at most one batch ahead
    /// of the one being accepted), its own re-reads and re-sends after unclear OR21 answers, and
    /// its validation, which ends at [`Settings::validation_deadline`]; plus the time the rate
    /// gate may hold calls: closed gates at most
    /// `marketplace.retry_after_ceiling` per run, and the pace for the calls queued ahead.
    /// The accept rounds are counted at `acceptance.concurrency`: after 429s the adaptive limit
    /// runs fewer calls at once, which this bound covers only while those calls stay quick.
    pub fn work_bound(&self) -> Duration {
        let call = self.marketplace.call_budget();
        let queued = self.acceptance.batch_size * 2;
        let accept_rounds = queued.div_ceil(self.acceptance.concurrency);
        call * (1 + accept_rounds)
            + self.resend_bound()
            + self.validation_deadline()
            + self.marketplace.gate.retry_after_ceiling
            + self.pace_bound(queued)
    }

    /// Re-sends of one order start within `marketplace.retry_budget` of its first OR21; the
    /// last one may wait for the re-read batch in flight, its own re-read, then take a call.
    fn resend_bound(&self) -> Duration {
        self.marketplace.retry.budget + self.marketplace.call_budget() * 3
    }

    /// How long the pace can hold one order's calls: behind the OR21 calls queued ahead of it,
    /// and behind one OR11 read per 100 of them at each validation tick.
    fn pace_bound(&self, queued: u32) -> Duration {
        let Some(rate) = self.marketplace.gate.max_requests_per_second else {
            return Duration::ZERO;
        };
        let reads = queued.div_ceil(100) * (self.validation.max_attempts + 2);
        Duration::from_secs_f64(f64::from(queued + reads) / rate)
    }

    /// How long after its 204 an order may wait for confirmation. Failed reads do not count as
    /// attempts, but they cannot stretch validation past this: an order still unconfirmed then
    /// is left for a later run, whose preflight reads its real state.
    pub fn validation_deadline(&self) -> Duration {
        self.validation.interval * (self.validation.max_attempts + 1)
            + self.marketplace.call_budget()
    }

    /// A lease shorter than the work it covers would let a second run claim an order that a
    /// live run is still accepting.
    fn check_lease(&self) -> Result<(), ConfigError> {
        let needed = self.work_bound();
        if self.acceptance.lease < needed {
            return Err(ConfigError::one(format!(
                "acceptance.lease: {} is shorter than the work a run may do on one order ({}), \
                 computed from marketplace.timeout + marketplace.retry_budget (re-sends included), \
                 acceptance.batch_size / acceptance.concurrency, validation.interval × \
                 validation.max_attempts, marketplace.retry_after_ceiling and \
                 marketplace.max_requests_per_second; raise acceptance.lease to at least {} or lower those \
                 (a shorter lease would let another run claim an order this one is still accepting)",
                humantime::format_duration(self.acceptance.lease),
                humantime::format_duration(needed),
                humantime::format_duration(round_up_to_minute(needed)),
            )));
        }
        Ok(())
    }

    /// Settings that are allowed but deserve an operator's attention, logged at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.validation.interval < MIRAKL_MIN_READ_INTERVAL {
            warnings.push(format!(
                "validation.interval is {}: Mirakl asks background jobs to read orders at most \
                 once a minute; use short intervals only with the simulator or in tests",
                humantime::format_duration(self.validation.interval)
            ));
        }
        if self.marketplace.url.scheme() == "http" && !is_loopback(&self.marketplace.url) {
            warnings.push(format!(
                "marketplace.url {} is plain HTTP: the API key travels unencrypted",
                self.marketplace.url
            ));
        }
        warnings
    }
}

fn round_up_to_minute(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs().div_ceil(60) * 60)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(host)) => host == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An explicit path must exist; the default path is used only when present.
fn config_file(path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        Some(path) if path.is_file() => Ok(Some(path.to_path_buf())),
        Some(path) => Err(ConfigError::one(format!(
            "--config {}: no such file; give the path of a TOML config file (see config/default.toml)",
            path.display()
        ))),
        None => {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            Ok(default.is_file().then(|| default.to_path_buf()))
        }
    }
}

/// `ORDER_ACCEPTANCE__VALIDATION__INTERVAL=2s` becomes `validation.interval = "2s"`; the
/// well-known variables are merged last. Values are parsed like TOML scalars (`16`, `true`),
/// but string keys accept any scalar (see [`raw::lenient_string`]) so a numeric API key still
/// loads as text.
fn merge_env(mut figment: Figment, env: HashMap<String, String>) -> Figment {
    let mut prefixed: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    prefixed.sort();
    for (name, value) in prefixed {
        let key = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
        let value: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
        figment = figment.merge(Serialized::default(&key, value));
    }
    for (name, key) in WELL_KNOWN_VARS {
        if let Some(value) = env.get(name) {
            figment = figment.merge(Serialized::default(key, value.clone()));
        }
    }
    figment
}

/// Figment's messages name the key and the source; the value itself is shown only for
/// non-secret keys.
fn describe_figment_error(err: figment::Error) -> String {
    let key = err.path.join(".");
    let source = err
        .metadata
        .as_ref()
        .map(|meta| format!(" (from {})", meta.name))
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{source}", err.kind)
    } else if is_secret_key(&key) {
        format!("{key}: not a valid value{source}")
    } else {
        format!("{key}: {}{source}", err.kind)
    }
}

fn is_secret_key(key: &str) -> bool {
    matches!(key, "marketplace.api_key" | "database.url")
}

/// Replaces the password of a URL with `***`; anything unparseable is hidden whole.
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Setting a password only fails on URLs that cannot have one.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL hidden>".to_string(),
    }
}

/// Collects problems while building typed values, so all of them are reported at once.
#[derive(Default)]
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    fn required(&mut self, raw: &raw::Settings, needs: Needs) {
        let values = [
            raw.database.url.as_str(),
            raw.marketplace.url.as_str(),
            raw.marketplace.api_key.as_str(),
        ];
        let needed = match needs {
            Needs::Everything => values.len(),
            Needs::DatabaseOnly => 1,
        };
        let missing: Vec<String> = WELL_KNOWN_VARS
            .iter()
            .zip(values)
            .take(needed)
            .filter(|(_, value)| value.trim().is_empty())
            .map(|((var, key), _)| format!("{key} (or {var})"))
            .collect();
        if !missing.is_empty() {
            self.problems
                .push(format!("missing required settings: {}", missing.join(", ")));
        }
    }

    fn duration(&mut self, key: &str, value: &str) -> Duration {
        match humantime::parse_duration(value.trim()) {
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.problems.push(format!(
                    "{key}: \"{value}\" must be longer than zero (examples: 500ms, 60s)"
                ));
                Duration::from_secs(1)
            }
            Err(_) => {
                self.problems.push(format!(
                    "{key}: \"{value}\" is not a duration (examples: 500ms, 60s, 5m, 30d)"
                ));
                Duration::from_secs(1)
            }
        }
    }

    fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        key: &str,
        value: T,
        min: T,
    ) -> T {
        if value < min {
            self.problems
                .push(format!("{key}: {value} is too small (at least {min})"));
            return min;
        }
        value
    }

    fn within(&mut self, key: &str, value: u32, min: u32, max: u32) -> u32 {
        if !(min..=max).contains(&value) {
            self.problems
                .push(format!("{key}: {value} is out of range ({min} to {max})"));
            return value.clamp(min, max);
        }
        value
    }

    /// A requests-per-second figure: 0 means none, anything else must be within the bounds.
    fn rate(&mut self, key: &str, value: f64) -> Option<f64> {
        if value == 0.0 {
            return None;
        }
        if !(MIN_RATE..=MAX_RATE).contains(&value) {
            self.problems.push(format!(
                "{key}: {value} is out of range: give requests per second from {MIN_RATE} to {MAX_RATE} (examples: 5, 0.5), or 0 for no limit"
            ));
            return None;
        }
        Some(value)
    }

    fn non_empty(&mut self, key: &str, value: String) -> String {
        if value.trim().is_empty() {
            self.problems.push(format!("{key}: must not be empty"));
        }
        value
    }

    /// Mirakl shop ids are integers; empty means none is sent.
    fn shop_id(&mut self, value: &str) -> Option<String> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        if value.parse::<u64>().is_err() {
            self.problems.push(format!(
                "marketplace.shop_id: \"{value}\" is not a number; Mirakl shop ids are integers \
                 (A01 /api/account shows yours as shop_id), or leave it empty to use the key's \
                 default shop"
            ));
            return None;
        }
        Some(value.to_owned())
    }

    fn database_url(&mut self, value: &str) {
        match url::Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {}
            Ok(url) => self.problems.push(format!(
                "database.url: scheme \"{}\" is not PostgreSQL; use postgres://user:password@host:5432/database",
                url.scheme()
            )),
            Err(err) => self.problems.push(format!(
                "database.url: not a valid URL ({err}); use postgres://user:password@host:5432/database"
            )),
        }
    }

    fn marketplace_url(&mut self, value: &str) -> url::Url {
        // Stands in when the URL is missing (reported by `required`, or not needed by a
        // database-only command) or invalid (reported below); never called.
        let fallback = || url::Url::parse("http://localhost/").expect("static URL parses");
        if value.trim().is_empty() {
            return fallback();
        }
        match url::Url::parse(value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            Ok(_) | Err(_) => {
                self.problems.push(format!(
                    "marketplace.url: \"{value}\" is not an http(s) URL (example: https://marketplace.bestbuy.ca)"
                ));
                fallback()
            }
        }
    }

    fn cron(&mut self, value: String) -> String {
        let fields = value.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            self.problems.push(format!(
                "schedule.cron: \"{value}\" has {fields} fields; use 5 (min hour day month weekday) \
                 or 6 with seconds first (example: \"0 */5 * * * *\")"
            ));
        } else if let Err(err) = crate::scheduler::parse_cron(&value) {
            self.problems.push(format!(
                "schedule.cron: \"{value}\" is not a cron expression: {err}"
            ));
        }
        value
    }

    fn timezone(&mut self, value: &str) -> chrono_tz::Tz {
        value.parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "schedule.timezone: \"{value}\" is not an IANA time zone (examples: UTC, America/Toronto)"
            ));
            chrono_tz::UTC
        })
    }

    fn listen_address(&mut self, value: &str) -> Option<SocketAddr> {
        if value.trim().is_empty() {
            return None;
        }
        match value.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problems.push(format!(
                    "server.listen: \"{value}\" is not an address (examples: 127.0.0.1:9090, 0.0.0.0:9090; empty disables the server)"
                ));
                None
            }
        }
    }

    fn rules(&mut self, raw: raw::Rules) -> RulesSettings {
        RulesSettings {
            enabled: raw.enabled,
            stock_relation: self.relation_name("rules.stock_relation", raw.stock_relation),
            reservation_ttl: self.optional_duration("rules.reservation_ttl", &raw.reservation_ttl),
            max_price_drop: self.fraction("rules.max_price_drop", raw.max_price_drop),
            max_order_total: self.optional_amount("rules.max_order_total", raw.max_order_total),
            unknown_sku: self.rule_action("rules.unknown_sku", &raw.unknown_sku),
            insufficient_stock: self
                .rule_action("rules.insufficient_stock", &raw.insufficient_stock),
            backorder: self.rule_action("rules.backorder", &raw.backorder),
            price_below_floor: self.rule_action("rules.price_below_floor", &raw.price_below_floor),
            order_total_above_limit: self.rule_action(
                "rules.order_total_above_limit",
                &raw.order_total_above_limit,
            ),
            on_deadline: self.rule_action("rules.on_deadline", &raw.on_deadline),
            deadline_margin: self.deadline_margin(&raw.deadline_margin),
        }
    }

    /// The margin is taken from the marketplace's 24 hours, so it must leave some of them.
    fn deadline_margin(&mut self, value: &str) -> Duration {
        let margin = self.duration("rules.deadline_margin", value);
        if margin >= ACCEPTANCE_WINDOW {
            self.problems.push(format!(
                "rules.deadline_margin: \"{value}\" is not shorter than the marketplace's 24-hour acceptance window (example: 2h)"
            ));
        }
        margin
    }

    /// A table or view name, optionally schema-qualified, made of plain identifiers only: it is
    /// written into SQL, so nothing that could end the identifier is let through.
    fn relation_name(&mut self, key: &str, value: String) -> String {
        let plain = |part: &str| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let parts: Vec<&str> = value.trim().split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|part| plain(part)) {
            self.problems.push(format!(
                "{key}: \"{value}\" is not a table or view name; use letters, digits and \
                 underscores, optionally schema-qualified (examples: acceptance_stock, \
                 inventory.available_stock)"
            ));
        }
        value.trim().to_string()
    }

    /// A duration where `0` (or an empty value) means "none".
    fn optional_duration(&mut self, key: &str, value: &str) -> Option<Duration> {
        match value.trim() {
            "" | "0" => None,
            text => match humantime::parse_duration(text) {
                Ok(duration) if duration.is_zero() => None,
                Ok(duration) => Some(duration),
                Err(_) => {
                    self.problems.push(format!(
                        "{key}: \"{value}\" is not a duration (examples: 0 for none, 12h, 7d)"
                    ));
                    None
                }
            },
        }
    }

    fn fraction(&mut self, key: &str, value: f64) -> f64 {
        if !(0.0..1.0).contains(&value) {
            self.problems.push(format!(
                "{key}: {value} is not a fraction from 0 up to (not including) 1 (example: 0.1 for 10 %)"
            ));
            return 0.0;
        }
        value
    }

    /// An amount where 0 means "no limit".
    fn optional_amount(&mut self, key: &str, value: f64) -> Option<f64> {
        if !value.is_finite() || value < 0.0 {
            self.problems.push(format!(
                "{key}: {value} must be 0 (no limit) or a positive amount in the order's currency"
            ));
            return None;
        }
        (value > 0.0).then_some(value)
    }

    fn rule_action(&mut self, key: &str, value: &str) -> RuleAction {
        match value.trim() {
            "accept" => RuleAction::Accept,
            "refuse" => RuleAction::Refuse,
            "review" => RuleAction::Review,
            other => {
                self.problems.push(format!(
                    "{key}: \"{other}\" is not one of accept, refuse, review"
                ));
                RuleAction::Review
            }
        }
    }

    fn log_format(&mut self, value: &str) -> LogFormat {
        match value.trim() {
            "auto" => LogFormat::Auto,
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                self.problems.push(format!(
                    "log.format: \"{other}\" is not one of auto, json, text"
                ));
                LogFormat::Auto
            }
        }
    }
}

/// The merged layers before checking: plain strings and numbers. Every key is required here;
/// the embedded `config/default.toml` supplies each one.
mod raw {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Settings {
        pub database: Database,
        pub marketplace: Marketplace,
        pub schedule: Schedule,
        pub acceptance: Acceptance,
        pub validation: Validation,
        pub import: Import,
        pub api_calls: ApiCalls,
        pub server: Server,
        pub shutdown: Shutdown,
        pub log: Log,
        pub alerts: Alerts,
        pub rules: Rules,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Database {
        #[serde(deserialize_with = "lenient_string")]
        pub url: String,
        pub max_connections: u32,
        #[serde(deserialize_with = "lenient_string")]
        pub connect_timeout: String,
        pub migrate_on_start: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Marketplace {
        #[serde(deserialize_with = "lenient_string")]
        pub url: String,
        #[serde(deserialize_with = "lenient_string")]
        pub api_key: String,
        #[serde(deserialize_with = "lenient_string")]
        pub shop_id: String,
        #[serde(deserialize_with = "lenient_string")]
        pub name: String,
        #[serde(deserialize_with = "lenient_string")]
        pub timeout: String,
        #[serde(deserialize_with = "lenient_string")]
        pub connect_timeout: String,
        pub retry_attempts: u32,
        #[serde(deserialize_with = "lenient_string")]
        pub retry_initial_delay: String,
        #[serde(deserialize_with = "lenient_string")]
        pub retry_max_delay: String,
        #[serde(deserialize_with = "lenient_string")]
        pub retry_budget: String,
        #[serde(deserialize_with = "lenient_string")]
        pub retry_after_ceiling: String,
        pub max_requests_per_second: f64,
        pub learn_pace: bool,
        pub max_response_bytes: usize,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Schedule {
        #[serde(deserialize_with = "lenient_string")]
        pub cron: String,
        #[serde(deserialize_with = "lenient_string")]
        pub timezone: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Acceptance {
        pub batch_size: u32,
        pub concurrency: u32,
        #[serde(deserialize_with = "lenient_string")]
        pub lease: String,
        pub max_attempts: u32,
        #[serde(deserialize_with = "lenient_string")]
        pub retry_delay: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Validation {
        #[serde(deserialize_with = "lenient_string")]
        pub interval: String,
        pub max_attempts: u32,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Import {
        pub enabled: bool,
        pub parallel_pages: u32,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiCalls {
        #[serde(deserialize_with = "lenient_string")]
        pub retention: String,
        pub max_body_bytes: usize,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        #[serde(deserialize_with = "lenient_string")]
        pub listen: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Shutdown {
        #[serde(deserialize_with = "lenient_string")]
        pub grace: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Log {
        #[serde(deserialize_with = "lenient_string")]
        pub format: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Alerts {
        #[serde(deserialize_with = "lenient_string")]
        pub pending_after: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rules {
        pub enabled: bool,
        #[serde(deserialize_with = "lenient_string")]
        pub stock_relation: String,
        #[serde(deserialize_with = "lenient_string")]
        pub reservation_ttl: String,
        pub max_price_drop: f64,
        pub max_order_total: f64,
        #[serde(deserialize_with = "lenient_string")]
        pub unknown_sku: String,
        #[serde(deserialize_with = "lenient_string")]
        pub insufficient_stock: String,
        #[serde(deserialize_with = "lenient_string")]
        pub backorder: String,
        #[serde(deserialize_with = "lenient_string")]
        pub price_below_floor: String,
        #[serde(deserialize_with = "lenient_string")]
        pub order_total_above_limit: String,
        #[serde(deserialize_with = "lenient_string")]
        pub on_deadline: String,
        #[serde(deserialize_with = "lenient_string")]
        pub deadline_margin: String,
    }

    /// Accepts any scalar as text: environment values are parsed like TOML, so an API key of
    /// digits arrives as a number, and a type error would print the key.
    pub fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Int(i64),
            Unsigned(u64),
            Float(f64),
            Bool(bool),
        }
        Ok(match Scalar::deserialize(deserializer)? {
            Scalar::Text(text) => text,
            Scalar::Int(n) => n.to_string(),
            Scalar::Unsigned(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        })
    }
}
