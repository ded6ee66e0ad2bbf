//! Validation: every value of the merged layers is checked and turned into its typed form, and
//! every problem is collected into one [`ConfigError`], so an operator fixes a bad file in one
//! pass, not one error per restart.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};

use super::load::WELL_KNOWN_VARS;
use super::raw;
use super::settings::*;
use super::{ConfigError, Needs};
use crate::rules::RuleAction;

impl Settings {
    /// Checks every value of the merged layers and builds the typed settings.
    pub(super) fn from_raw(raw: raw::Settings, needs: Needs) -> Result<Self, ConfigError> {
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
            url: check.marketplace_url(&DEFAULT_KEYS, &raw.marketplace.url),
            api_key: SecretString::from(raw.marketplace.api_key.clone()),
            shop_id: check.shop_id("marketplace.shop_id", &raw.marketplace.shop_id),
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
            acceptance_window: check.acceptance_window(
                "marketplace.acceptance_window",
                &raw.marketplace.acceptance_window,
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
            heartbeat: check.duration("acceptance.heartbeat", &raw.acceptance.heartbeat),
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
            max_orders: check.within("import.max_orders", raw.import.max_orders, 100, 10_000_000),
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
        let rules = check.rules(raw.rules, marketplace.acceptance_window);
        let console = check.console(raw.console);
        let shops = check.shops(raw.shops, &marketplace, &rules, needs);

        check.schedule_fires(&schedule);
        check.finish()?;
        // From here on nothing this process prints, stores or logs may carry them.
        crate::redact::remember(&raw.marketplace.api_key);
        for shop in &shops {
            crate::redact::remember(shop.marketplace.api_key.expose_secret());
        }
        crate::redact::remember_url_passwords(&raw.database.url);
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
            console,
            shop: ShopName::default_shop(),
            shops,
            default_shop: None,
        };
        // The lease only matters to the worker; operator commands must work to fix a bad one.
        if needs == Needs::Everything {
            settings.check_lease()?;
        }
        Ok(settings)
    }

    /// The lease must outlive a few missed heartbeats, and leave the run time to send after
    /// the fence margin; otherwise a live run would lose its orders or fence itself.
    fn check_lease(&self) -> Result<(), ConfigError> {
        let acceptance = &self.acceptance;
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        let mut problems = Vec::new();
        if acceptance.lease < acceptance.heartbeat.saturating_mul(3) {
            problems.push(format!(
                "acceptance.lease: {} is shorter than 3 heartbeats (acceptance.heartbeat = {}): one late heartbeat would hand a live run's orders to another run; raise acceptance.lease to at least {} or lower acceptance.heartbeat",
                shown(acceptance.lease),
                shown(acceptance.heartbeat),
                shown(acceptance.heartbeat.saturating_mul(3)),
            ));
        } else if self.fence_window() < acceptance.heartbeat.saturating_mul(2) {
            problems.push(format!(
                "acceptance.lease: {} leaves {} to send OR21 after a heartbeat once the fence margin (marketplace.timeout {} + a tenth of the lease) is kept back, less than 2 heartbeats (acceptance.heartbeat = {}): the run would stop sending between heartbeats; raise acceptance.lease or lower marketplace.timeout or acceptance.heartbeat",
                shown(acceptance.lease),
                shown(self.fence_window()),
                shown(self.marketplace.timeout),
                shown(acceptance.heartbeat),
            ));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ConfigError { problems }),
        }
    }
}

/// A TOML number as the exact decimal it was written as: the shortest text that reads back as
/// the same `f64` is the text in the file (`0.1` stays `0.1`). `None` for NaN, infinities and
/// values past what a decimal holds.
fn decimal(value: f64) -> Option<Decimal> {
    let text = value.to_string();
    Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

/// The URL without its user name and password, to name it in a message.
fn without_user_info(url: &url::Url) -> String {
    let mut shown = url.clone();
    // Only fails on URLs that cannot carry user-info, which these do.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// No setting needs more; anything longer is a typo, and would overflow the sums of durations
/// the worker derives from the settings.
const LONGEST_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The keys a shop's connection is named by in messages.
pub(super) struct ConnectionKeys<'a> {
    /// `marketplace.url`, `shops.NAME.url`.
    pub url: &'a str,
    /// The variable that sets the URL.
    pub url_var: &'a str,
    /// The key (and its variable) the API key belongs in.
    pub api_key: &'a str,
}

const DEFAULT_KEYS: ConnectionKeys<'static> = ConnectionKeys {
    url: "marketplace.url",
    url_var: "MARKETPLACE_URL",
    api_key: "marketplace.api_key (MARKETPLACE_API_KEY)",
};

/// Collects problems while building typed values, so all of them are reported at once.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<String>,
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

    pub(super) fn duration(&mut self, key: &str, value: &str) -> Duration {
        match humantime::parse_duration(value.trim()) {
            Ok(duration) if duration > LONGEST_DURATION => {
                self.too_long(key, value);
                LONGEST_DURATION
            }
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

    fn too_long(&mut self, key: &str, value: &str) {
        self.problems.push(format!(
            "{key}: \"{value}\" is longer than {}, the longest duration a setting may have",
            humantime::format_duration(LONGEST_DURATION)
        ));
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
    pub(super) fn rate(&mut self, key: &str, value: f64) -> Option<f64> {
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

    pub(super) fn non_empty(&mut self, key: &str, value: String) -> String {
        if value.trim().is_empty() {
            self.problems.push(format!("{key}: must not be empty"));
        }
        value
    }

    /// Mirakl shop ids are integers; empty means none is sent.
    pub(super) fn shop_id(&mut self, key: &str, value: &str) -> Option<String> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        if value.parse::<u64>().is_err() {
            self.problems.push(format!(
                "{key}: \"{value}\" is not a number; Mirakl shop ids are integers \
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

    pub(super) fn marketplace_url(&mut self, keys: &ConnectionKeys<'_>, value: &str) -> url::Url {
        // Stands in when the URL is missing (reported by `required`, or not needed by a
        // database-only command) or invalid (reported below); never called.
        let fallback = || url::Url::parse("http://localhost/").expect("static URL parses");
        if value.trim().is_empty() {
            return fallback();
        }
        let shown = crate::redact::url(value.trim());
        match url::Url::parse(value.trim()) {
            // Credentials in the URL would be printed wherever the URL is shown, and the key
            // goes in the Authorization header anyway.
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                self.problems.push(format!(
                    "{}: \"{}\" carries a user name or password; remove them from the URL ({}) and put the shop API key in {}",
                    keys.url,
                    without_user_info(&url),
                    keys.url_var,
                    keys.api_key,
                ));
                fallback()
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            Ok(_) | Err(_) => {
                self.problems.push(format!(
                    "{}: \"{shown}\" is not an http(s) URL (example: https://marketplace.bestbuy.ca)",
                    keys.url
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
        } else if let Err(err) = parse_cron(&value) {
            self.problems.push(format!(
                "schedule.cron: \"{value}\" is not a cron expression: {err}"
            ));
        }
        value
    }

    fn schedule_fires(&mut self, schedule: &ScheduleSettings) {
        if let Ok(runs) = next_runs(&schedule.cron, schedule.timezone, Utc::now(), 1)
            && runs.is_empty()
        {
            self.problems.push(format!(
                "schedule.cron: \"{}\" never fires within a year in {} (a date that does not exist, such as 31 February?); give a schedule that runs (example: \"*/5 * * * *\")",
                schedule.cron, schedule.timezone
            ));
        }
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

    fn console(&mut self, raw: raw::Console) -> ConsoleSettings {
        let listen = raw.listen.trim().parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "console.listen: \"{}\" is not an address (examples: 127.0.0.1:8088, 0.0.0.0:8088)",
                raw.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 8088))
        });
        let session_idle = self.duration("console.session_idle", &raw.session_idle);
        let session_absolute = self.duration("console.session_absolute", &raw.session_absolute);
        if session_idle > session_absolute {
            self.problems.push(format!(
                "console.session_idle ({}) is longer than console.session_absolute ({}): make the idle timeout the shorter one",
                raw.session_idle, raw.session_absolute
            ));
        }
        ConsoleSettings {
            listen,
            public_url: self.public_url(&raw.public_url),
            session_idle,
            session_absolute,
            trust_forwarded_for: raw.trust_forwarded_for,
        }
    }

    fn public_url(&mut self, value: &str) -> Option<url::Url> {
        if value.trim().is_empty() {
            return None;
        }
        match url::Url::parse(value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                self.problems.push(format!(
                    "console.public_url: \"{value}\" is not an http(s) URL (example: https://orders.example.com); empty: the console is reached at console.listen"
                ));
                None
            }
        }
    }

    fn rules(&mut self, raw: raw::Rules, window: Duration) -> RulesSettings {
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
            deadline_margin: self.deadline_margin(
                "rules.deadline_margin",
                &raw.deadline_margin,
                "marketplace.acceptance_window",
                window,
            ),
        }
    }

    /// The margin is taken from the marketplace's window, so it must leave some of it.
    pub(super) fn deadline_margin(
        &mut self,
        key: &str,
        value: &str,
        window_key: &str,
        window: Duration,
    ) -> Duration {
        let margin = self.duration(key, value);
        if margin >= window {
            self.problems.push(format!(
                "{key}: \"{value}\" is not shorter than {window_key} ({}) (example: 2h)",
                window_text(window)
            ));
        }
        margin
    }

    /// A window of zero would make every order late, one of months would hide every late one.
    pub(super) fn acceptance_window(&mut self, key: &str, value: &str) -> Duration {
        let window = self.duration(key, value);
        if !(MIN_ACCEPTANCE_WINDOW..=MAX_ACCEPTANCE_WINDOW).contains(&window) {
            self.problems.push(format!(
                "{key}: \"{value}\" is out of range: give the marketplace's acceptance deadline after an order's creation, from 1h to 30d (examples: 24h at Best Buy, 3d, 5d)"
            ));
            return Duration::from_secs(24 * 3600);
        }
        window
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
                Ok(duration) if duration > LONGEST_DURATION => {
                    self.too_long(key, value);
                    Some(LONGEST_DURATION)
                }
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

    pub(super) fn fraction(&mut self, key: &str, value: f64) -> Decimal {
        match decimal(value) {
            Some(fraction) if (0.0..1.0).contains(&value) => fraction,
            _ => {
                self.problems.push(format!(
                    "{key}: {value} is not a fraction from 0 up to (not including) 1 (example: 0.1 for 10 %)"
                ));
                Decimal::ZERO
            }
        }
    }

    /// An amount where 0 means "no limit".
    pub(super) fn optional_amount(&mut self, key: &str, value: f64) -> Option<Decimal> {
        match decimal(value) {
            Some(amount) if amount >= Decimal::ZERO => (amount > Decimal::ZERO).then_some(amount),
            _ => {
                self.problems.push(format!(
                    "{key}: {value} must be 0 (no limit) or a positive amount in the order's currency"
                ));
                None
            }
        }
    }

    pub(super) fn rule_action(&mut self, key: &str, value: &str) -> RuleAction {
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

/// Turns a 5-field expression into the 6-field form (seconds first) the scheduler reads, and
/// checks that it parses.
pub fn parse_cron(expression: &str) -> Result<String, String> {
    parse_schedule(expression).map(|(six_fields, _)| six_fields)
}

fn parse_schedule(expression: &str) -> Result<(String, croner::Cron), String> {
    let fields = expression.split_whitespace().count();
    let six_fields = if fields == 5 {
        format!("0 {}", expression.trim())
    } else {
        expression.trim().to_string()
    };
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&six_fields)
        .map_err(|err| err.to_string())?;
    Ok((six_fields, cron))
}

/// How far ahead a schedule must have a run: one that never fires within it (`0 0 31 2 *`) is
/// a mistake, not a schedule.
const SCHEDULE_HORIZON: TimeDelta = TimeDelta::days(366);

/// The next `count` start times of `expression` in `timezone` after `from`, those within a year.
pub fn next_runs(
    expression: &str,
    timezone: Tz,
    from: DateTime<Utc>,
    count: usize,
) -> Result<Vec<DateTime<Tz>>, String> {
    let (_, cron) = parse_schedule(expression)?;
    let horizon = from + SCHEDULE_HORIZON;
    let mut runs = Vec::with_capacity(count);
    let mut after = from.with_timezone(&timezone);
    while runs.len() < count {
        match cron.find_next_occurrence(&after, false) {
            Ok(next) if next.with_timezone(&Utc) <= horizon => {
                runs.push(next);
                after = next;
            }
            _ => break,
        }
    }
    Ok(runs)
}
