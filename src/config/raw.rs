//! The merged layers before checking: plain strings and numbers. Every key is required here;
//! the embedded `config/default.toml` supplies each one, except in `[shops.NAME]` tables,
//! whose keys fall back to `[marketplace]` and `[rules]` when absent.
use std::collections::BTreeMap;

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
    pub console: Console,
    /// The named shops, by the name as written (checked by `shops`).
    #[serde(default)]
    pub shops: BTreeMap<String, Shop>,
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
    #[serde(deserialize_with = "lenient_string")]
    pub acceptance_window: String,
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
    pub heartbeat: String,
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
    pub max_orders: u32,
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
pub struct Console {
    #[serde(deserialize_with = "lenient_string")]
    pub listen: String,
    #[serde(deserialize_with = "lenient_string")]
    pub public_url: String,
    #[serde(deserialize_with = "lenient_string")]
    pub session_idle: String,
    #[serde(deserialize_with = "lenient_string")]
    pub session_absolute: String,
    pub trust_forwarded_for: bool,
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

/// A `[shops.NAME]` table: what is absent is inherited.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shop {
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub api_key: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub api_key_file: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub shop_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub acceptance_window: Option<String>,
    pub max_requests_per_second: Option<f64>,
    #[serde(default)]
    pub rules: ShopRules,
}

/// `[shops.NAME.rules]`: the per-line rules a shop may set apart from `[rules]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShopRules {
    pub max_price_drop: Option<f64>,
    pub max_order_total: Option<f64>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub unknown_sku: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub insufficient_stock: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub backorder: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub price_below_floor: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub order_total_above_limit: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub on_deadline: Option<String>,
    #[serde(default, deserialize_with = "lenient_optional_string")]
    pub deadline_margin: Option<String>,
}

/// [`lenient_string`] for a key that may be absent.
fn lenient_optional_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    lenient_string(deserializer).map(Some)
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
