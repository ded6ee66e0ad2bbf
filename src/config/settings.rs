//! The typed settings the rest of the worker reads: one struct per config section, durations as
//! `Duration`, secrets as `SecretString`. Built only by [`super::load`] after every value passed
//! [`super::validate`].

use std::net::SocketAddr;
use std::time::Duration;

use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};

use crate::rules::RuleAction;

/// Bounds of `marketplace.acceptance_window`: Mirakl marketplaces give from hours to a few days.
pub(super) const MIN_ACCEPTANCE_WINDOW: Duration = Duration::from_secs(3600);
pub(super) const MAX_ACCEPTANCE_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// Bounds of `marketplace.max_requests_per_second` (other than 0): one call per 100 s to a pace
/// no marketplace publishes.
pub(super) const MIN_RATE: f64 = 0.01;
pub(super) const MAX_RATE: f64 = 10_000.0;

/// Connections one shop's run keeps busy at once: its heartbeat's, and about two for its claims,
/// records and `api_calls` rows.
const CONNECTIONS_PER_SHOP: usize = 3;

/// Below this, OR11 polling runs faster than Mirakl asks of background jobs.
pub(super) const MIRAKL_MIN_READ_INTERVAL: Duration = Duration::from_secs(60);

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
    pub console: ConsoleSettings,
    /// The shop `marketplace` and `rules` are for: `default` after loading, the shop's own
    /// after [`Settings::for_shop`].
    pub shop: ShopName,
    /// The named `[shops.NAME]` shops, in name order, each with its inherited values filled in.
    pub shops: Vec<Shop>,
    /// The `[marketplace]` shop while `marketplace` and `rules` are another shop's (after
    /// [`Settings::for_shop`] with a named shop); `None` while they are its own, so a change to
    /// `settings.marketplace` is the default shop's.
    pub(super) default_shop: Option<Box<Shop>>,
}

/// A shop's name: a plain identifier; `default` is the [marketplace] shop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShopName(String);

/// The longest shop name: it goes into metric labels, table columns and file names.
const MAX_SHOP_NAME: usize = 40;

impl ShopName {
    pub const DEFAULT: &'static str = "default";

    pub fn default_shop() -> Self {
        ShopName(Self::DEFAULT.to_owned())
    }

    /// Err is a message for people naming the rule.
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        // No `__` and no `_` at the end: `ORDER_ACCEPTANCE__SHOPS__<NAME>__API_KEY` splits at
        // double underscores, and would split such a name wrongly.
        let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.contains("__")
            && !name.ends_with('_')
            && name.len() <= MAX_SHOP_NAME;
        if plain {
            Ok(ShopName(name.to_owned()))
        } else {
            Err(format!(
                "\"{}\" is not a shop name: use a lowercase letter, then up to {} lowercase letters, digits or single underscores, not ending in one (examples: bestbuy_ca, other_marketplace)",
                name.escape_default(),
                MAX_SHOP_NAME - 1
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl std::fmt::Display for ShopName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ShopName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        ShopName::parse(name)
    }
}

/// One shop the worker serves: its marketplace connection and the rules its lines are decided by.
#[derive(Debug, Clone)]
pub struct Shop {
    pub name: ShopName,
    pub marketplace: MarketplaceSettings,
    pub rules: RulesSettings,
}

impl Shop {
    /// Where this shop's settings live in the file: `marketplace` or `shops.NAME`.
    pub fn section(&self) -> String {
        match self.name.is_default() {
            true => "marketplace".to_owned(),
            false => format!("shops.{}", self.name),
        }
    }

    /// Where this shop's key is set, for messages that ask a person to fix it.
    pub fn api_key_source(&self) -> String {
        match self.name.is_default() {
            true => "marketplace.api_key (MARKETPLACE_API_KEY)".to_owned(),
            false => format!(
                "shops.{name}.api_key ({var}) or shops.{name}.api_key_file",
                name = self.name,
                var = shop_env_var(&self.name, "api_key")
            ),
        }
    }
}

/// The variable that sets a named shop's key: `ORDER_ACCEPTANCE__SHOPS__NAME__KEY`.
pub(super) fn shop_env_var(name: &ShopName, key: &str) -> String {
    format!(
        "ORDER_ACCEPTANCE__SHOPS__{}__{}",
        name.as_str().to_uppercase(),
        key.to_uppercase()
    )
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
        crate::redact::url(self.url.expose_secret())
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
    /// The marketplace refuses an order left undecided this long after its creation.
    pub acceptance_window: Duration,
}

/// An acceptance window for people: `24 h`, `72 h`; other lengths as humantime writes them.
pub fn window_text(window: Duration) -> String {
    let secs = window.as_secs();
    match (secs % 3600, window.subsec_nanos()) {
        (0, 0) => format!("{} h", secs / 3600),
        _ => humantime::format_duration(window).to_string(),
    }
}

impl MarketplaceSettings {
    /// The longest one call may take, retries included: the last attempt can start just before
    /// the retry budget runs out and then take a full timeout.
    pub fn call_budget(&self) -> Duration {
        self.retry.budget.saturating_add(self.timeout)
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
    /// How often a run proves it is alive.
    pub heartbeat: Duration,
    /// How long a run may go without a heartbeat before its orders are due again.
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
    /// The most orders one import reads: its page cap, whatever `total_count` the marketplace
    /// announces.
    pub max_orders: u32,
}

impl ImportSettings {
    /// The most OR11 pages of 100 one import reads.
    pub fn max_pages(&self) -> u64 {
        u64::from(self.max_orders).div_ceil(100).max(1)
    }
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

/// The operator console (`order-acceptance console`, `[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub listen: SocketAddr,
    /// The address people type, when a TLS reverse proxy serves the console: its origin is the
    /// only one forms are accepted from, and `https` makes the session cookie `Secure`.
    pub public_url: Option<url::Url>,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after its login, used or not.
    pub session_absolute: Duration,
    /// Take the client's address from the last `X-Forwarded-For` entry (the proxy's view), for
    /// the audit and the per-address login limit. Only behind a proxy that sets it.
    pub trust_forwarded_for: bool,
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
    pub max_price_drop: Decimal,
    /// Orders whose total is above this go to review; `None`: no limit.
    pub max_order_total: Option<Decimal>,
    pub unknown_sku: RuleAction,
    pub insufficient_stock: RuleAction,
    pub backorder: RuleAction,
    pub price_below_floor: RuleAction,
    pub order_total_above_limit: RuleAction,
    /// What the worker does with an order still in review `deadline_margin` before the
    /// marketplace's deadline (`marketplace.acceptance_window`).
    pub on_deadline: RuleAction,
    pub deadline_margin: Duration,
}

impl Settings {
    /// Every shop: the default shop (`[marketplace]`, `[rules]`) first, then the named ones.
    pub fn all_shops(&self) -> Vec<Shop> {
        let default = match &self.default_shop {
            Some(shop) => Shop::clone(shop),
            None => Shop {
                name: ShopName::default_shop(),
                marketplace: self.marketplace.clone(),
                rules: self.rules.clone(),
            },
        };
        std::iter::once(default)
            .chain(self.shops.iter().cloned())
            .collect()
    }

    pub fn find_shop(&self, name: &str) -> Option<Shop> {
        self.all_shops()
            .into_iter()
            .find(|shop| shop.name.as_str() == name)
    }

    /// These settings for one shop: `shop`, `marketplace` and `rules` are the shop's, the rest
    /// is shared, so code that reads `settings.marketplace` works for that shop unchanged.
    pub fn for_shop(&self, shop: &Shop) -> Settings {
        let default_shop = match shop.name.is_default() {
            true => None,
            false => self.all_shops().into_iter().next().map(Box::new),
        };
        Settings {
            shop: shop.name.clone(),
            marketplace: shop.marketplace.clone(),
            rules: shop.rules.clone(),
            default_shop,
            ..self.clone()
        }
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
        for shop in self.all_shops() {
            let url = &shop.marketplace.url;
            if url.scheme() == "http" && !is_loopback(url) {
                warnings.push(format!(
                    "{}.url {url} is plain HTTP: the API key travels unencrypted",
                    shop.section()
                ));
            }
        }
        // Each shop's run holds a connection for its heartbeat and needs more for its stages.
        let shops = self.shops.len().saturating_add(1);
        let wanted = shops.saturating_mul(CONNECTIONS_PER_SHOP);
        if shops > 1 && (self.database.max_connections as usize) < wanted {
            warnings.push(format!(
                "database.max_connections is {} for {shops} shops run at once: each shop's run \
                 holds one connection for its heartbeat and uses more for its claims and \
                 records; give at least {wanted} ({CONNECTIONS_PER_SHOP} per shop)",
                self.database.max_connections
            ));
        }
        warnings
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(host)) => host == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
