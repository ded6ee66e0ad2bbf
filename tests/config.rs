//! Configuration: layering, validation messages, and secrets kept out of Debug and errors.

use std::path::Path;
use std::time::Duration;

use order_acceptance::config::{LogFormat, Needs, Settings};
use secrecy::ExposeSecret;

const API_KEY: &str = "sk-live-3f9a7c1e-never-print-me";
const DB_PASSWORD: &str = "hunter2-db-secret";

fn required_env() -> Vec<(String, String)> {
    vec![
        (
            "DATABASE_URL".into(),
            format!("postgres://worker:{DB_PASSWORD}@localhost:5432/orders"),
        ),
        (
            "MARKETPLACE_URL".into(),
            "https://marketplace.bestbuy.ca".into(),
        ),
        ("MARKETPLACE_API_KEY".into(), API_KEY.into()),
    ]
}

fn with(mut env: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    env.push((name.into(), value.into()));
    env
}

fn load(env: Vec<(String, String)>) -> Result<Settings, String> {
    Settings::load_from(None, Needs::Everything, env).map_err(|err| err.to_string())
}

fn write_config(contents: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with_contents(contents)
}

/// A temporary file removed on drop, without another dependency.
mod tempfile_path {
    use std::path::{Path, PathBuf};

    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn with_contents(contents: &str) -> Self {
            let name = format!(
                "order-acceptance-config-{}-{}.toml",
                std::process::id(),
                rand::random::<u64>()
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).expect("temp dir is writable");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn defaults_apply_when_only_required_values_are_given() {
    let settings = load(required_env()).expect("valid");
    assert_eq!(settings.acceptance.batch_size, 100);
    assert_eq!(settings.acceptance.concurrency, 16);
    assert_eq!(settings.acceptance.lease, Duration::from_secs(60));
    assert_eq!(settings.validation.interval, Duration::from_secs(60));
    assert_eq!(settings.validation.max_attempts, 10);
    assert_eq!(
        settings.api_calls.retention,
        Duration::from_secs(30 * 86_400)
    );
    assert_eq!(settings.api_calls.max_body_bytes, 65_536);
    assert_eq!(settings.marketplace.name, "BestBuy");
    assert_eq!(settings.marketplace.shop_id, None);
    assert_eq!(settings.schedule.cron, "0 */5 * * * *");
    assert_eq!(settings.schedule.timezone, chrono_tz::UTC);
    assert!(settings.import.enabled);
    assert_eq!(settings.import.parallel_pages, 1);
    assert!(settings.server.listen.is_none());
    assert_eq!(settings.log.format, LogFormat::Auto);
    assert_eq!(
        settings.alerts.pending_after,
        Duration::from_secs(20 * 3600)
    );
    assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
}

#[test]
fn the_shipped_config_file_loads_and_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let from_file =
        Settings::load_from(Some(&path), Needs::Everything, required_env()).expect("valid");
    let built_in = load(required_env()).expect("valid");
    assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
}

#[test]
fn file_values_override_defaults_and_env_overrides_the_file() {
    let file = write_config(
        r#"
        [acceptance]
        batch_size = 50
        concurrency = 8
        lease = "2h"
        [validation]
        interval = "2m"
        [marketplace]
        shop_id = "2001"
        "#,
    );
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__ACCEPTANCE__CONCURRENCY",
        "4",
    );
    let env = with(env, "ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "90s");
    let settings = Settings::load_from(Some(file.path()), Needs::Everything, env).expect("valid");
    assert_eq!(settings.acceptance.batch_size, 50, "from the file");
    assert_eq!(settings.acceptance.concurrency, 4, "env beats the file");
    assert_eq!(settings.validation.interval, Duration::from_secs(90));
    assert_eq!(settings.marketplace.shop_id.as_deref(), Some("2001"));
}

#[test]
fn a_shop_id_that_is_not_a_number_is_refused_naming_the_key() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__SHOP_ID",
        "bestbuy-ca",
    );
    let err = load(env).expect_err("not a number");
    assert!(
        err.contains(r#"marketplace.shop_id: "bestbuy-ca" is not a number"#),
        "{err}"
    );
    assert!(err.contains("Mirakl shop ids are integers"), "{err}");

    // A number from the environment arrives as a TOML integer and is kept as text.
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__SHOP_ID",
        " 2001 ",
    );
    let settings = load(env).expect("numeric");
    assert_eq!(settings.marketplace.shop_id.as_deref(), Some("2001"));
}

#[test]
fn import_parallel_pages_is_checked() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__IMPORT__PARALLEL_PAGES",
        "4",
    );
    assert_eq!(load(env).expect("valid").import.parallel_pages, 4);
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__IMPORT__PARALLEL_PAGES",
        "0",
    );
    let err = load(env).expect_err("zero pages");
    assert!(
        err.contains("import.parallel_pages: 0 is out of range (1 to 16)"),
        "{err}"
    );
}

#[test]
fn well_known_variables_beat_prefixed_ones() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__URL",
        "https://bby-dev.mirakl.net",
    );
    let settings = load(env).expect("valid");
    assert_eq!(
        settings.marketplace.url.as_str(),
        "https://marketplace.bestbuy.ca/"
    );
    assert_eq!(settings.marketplace.api_key.expose_secret(), API_KEY);
}

#[test]
fn a_numeric_api_key_stays_text() {
    let env = with(required_env(), "MARKETPLACE_API_KEY", "0012345");
    let settings = load(env).expect("valid");
    assert_eq!(settings.marketplace.api_key.expose_secret(), "0012345");
}

#[test]
fn a_bad_duration_names_the_key_the_value_and_examples() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__VALIDATION__INTERVAL",
        "soon",
    );
    let err = load(env).expect_err("invalid");
    assert!(
        err.contains(r#"validation.interval: "soon" is not a duration (examples: 500ms, 60s"#),
        "{err}"
    );
}

#[test]
fn all_problems_are_reported_together() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__VALIDATION__INTERVAL",
        "soon",
    );
    let env = with(env, "ORDER_ACCEPTANCE__ACCEPTANCE__CONCURRENCY", "0");
    let env = with(env, "ORDER_ACCEPTANCE__LOG__FORMAT", "xml");
    let env = with(env, "ORDER_ACCEPTANCE__SCHEDULE__CRON", "every minute");
    let err = load(env).expect_err("invalid");
    for expected in [
        "validation.interval",
        "acceptance.concurrency: 0 is out of range",
        "log.format: \"xml\"",
        "schedule.cron: \"every minute\" has 2 fields",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}

#[test]
fn missing_required_values_are_named_together() {
    let err = load(Vec::new()).expect_err("invalid");
    assert!(
        err.contains(
            "missing required settings: database.url (or DATABASE_URL), marketplace.url (or MARKETPLACE_URL), marketplace.api_key (or MARKETPLACE_API_KEY)"
        ),
        "{err}"
    );
}

#[test]
fn database_only_commands_need_no_marketplace_settings() {
    let env = vec![("DATABASE_URL".into(), "postgres://localhost/orders".into())];
    Settings::load_from(None, Needs::DatabaseOnly, env.clone()).expect("valid");
    let err = Settings::load_from(None, Needs::DatabaseOnly, Vec::<(String, String)>::new())
        .expect_err("the database URL is still required")
        .to_string();
    assert!(err.contains("database.url (or DATABASE_URL)"), "{err}");
    assert!(!err.contains("marketplace"), "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let file = write_config("[validation]\nintervall = \"2s\"\n");
    let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect_err("typo")
        .to_string();
    assert!(err.contains("intervall"), "{err}");
}

#[test]
fn a_missing_config_file_is_an_error_not_a_silent_default() {
    let err = Settings::load_from(
        Some(Path::new("/nonexistent/order-acceptance.toml")),
        Needs::Everything,
        required_env(),
    )
    .expect_err("missing file")
    .to_string();
    assert!(
        err.contains("/nonexistent/order-acceptance.toml: no such file"),
        "{err}"
    );
}

#[test]
fn five_and_six_field_cron_expressions_are_accepted() {
    let five = load(with(
        required_env(),
        "ORDER_ACCEPTANCE__SCHEDULE__CRON",
        "*/5 * * * *",
    ));
    assert!(five.is_ok(), "{five:?}");
    let six = load(with(
        required_env(),
        "ORDER_ACCEPTANCE__SCHEDULE__CRON",
        "*/10 * * * * *",
    ));
    assert!(six.is_ok(), "{six:?}");
    let bad = load(with(
        required_env(),
        "ORDER_ACCEPTANCE__SCHEDULE__CRON",
        "61 * * * *",
    ));
    assert!(bad.expect_err("minute 61").contains("schedule.cron"));
}

#[test]
fn a_lease_shorter_than_three_heartbeats_is_refused_naming_both_keys() {
    let env = with(required_env(), "ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "25s");
    let err = load(env).expect_err("lease under 3 heartbeats");
    assert!(
        err.contains("acceptance.lease: 25s is shorter than 3 heartbeats"),
        "{err}"
    );
    assert!(err.contains("acceptance.heartbeat = 10s"), "{err}");
    assert!(err.contains("at least 30s"), "{err}");
}

#[test]
fn a_lease_the_fence_margin_eats_is_refused_naming_the_timeout() {
    // 40s lease: margin 30s + 4s leaves 6s of sending, less than 2 heartbeats of 10s.
    let env = with(required_env(), "ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "40s");
    let err = load(env).expect_err("the margin leaves too little");
    assert!(err.contains("acceptance.lease: 40s leaves 6s"), "{err}");
    assert!(err.contains("marketplace.timeout"), "{err}");

    let short = with(
        with(required_env(), "ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "1s"),
        "ORDER_ACCEPTANCE__ACCEPTANCE__HEARTBEAT",
        "200ms",
    );
    let short = with(short, "ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT", "400ms");
    let settings = load(short).expect("1s lease, 200ms heartbeats, 400ms timeout");
    assert_eq!(settings.fence_margin(), Duration::from_millis(500));
    assert_eq!(settings.fence_window(), Duration::from_millis(500));
}

#[test]
fn heartbeat_and_lease_default_to_ten_seconds_and_a_minute() {
    let settings = load(required_env()).expect("valid");
    assert_eq!(settings.acceptance.heartbeat, Duration::from_secs(10));
    assert_eq!(settings.acceptance.lease, Duration::from_secs(60));
    // 30s timeout + 6s: OR21 stops 36s after a heartbeat nobody confirmed.
    assert_eq!(settings.fence_margin(), Duration::from_secs(36));
}

#[test]
fn an_acceptance_window_of_zero_or_absurd_is_refused_naming_the_key() {
    for (value, says) in [
        ("0", "must be longer than zero"),
        ("0s", "must be longer than zero"),
        ("10m", "is out of range"),
        ("400d", "is out of range"),
        ("soon", "is not a duration"),
    ] {
        let env = with(
            required_env(),
            "ORDER_ACCEPTANCE__MARKETPLACE__ACCEPTANCE_WINDOW",
            value,
        );
        let err = load(env).expect_err(value);
        assert!(
            err.contains("marketplace.acceptance_window") && err.contains(says),
            "{value}: {err}"
        );
    }
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__ACCEPTANCE_WINDOW",
        "3d",
    );
    let settings = load(env).expect("three days");
    assert_eq!(
        settings.marketplace.acceptance_window,
        Duration::from_secs(3 * 86_400)
    );
    assert_eq!(
        load(required_env())
            .expect("valid")
            .marketplace
            .acceptance_window,
        Duration::from_secs(86_400)
    );
}

#[test]
fn the_deadline_margin_must_be_shorter_than_the_window() {
    let env = with(
        with(
            required_env(),
            "ORDER_ACCEPTANCE__MARKETPLACE__ACCEPTANCE_WINDOW",
            "2h",
        ),
        "ORDER_ACCEPTANCE__RULES__DEADLINE_MARGIN",
        "3h",
    );
    let err = load(env).expect_err("margin past the window");
    assert!(
        err.contains("rules.deadline_margin")
            && err.contains("marketplace.acceptance_window (2 h)"),
        "{err}"
    );
}

#[test]
fn the_rate_gate_keys_default_to_ten_minutes_and_no_pace() {
    let settings = load(required_env()).expect("valid");
    let gate = &settings.marketplace.gate;
    assert_eq!(gate.retry_after_ceiling, Duration::from_secs(600));
    assert_eq!(gate.max_requests_per_second, None);

    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__MAX_REQUESTS_PER_SECOND",
        "5",
    );
    let env = with(
        env,
        "ORDER_ACCEPTANCE__MARKETPLACE__RETRY_AFTER_CEILING",
        "2m",
    );
    let gate = load(env).expect("valid").marketplace.gate;
    assert_eq!(gate.max_requests_per_second, Some(5.0));
    assert_eq!(gate.retry_after_ceiling, Duration::from_secs(120));

    let file = write_config(
        "[marketplace]\nmax_requests_per_second = 0.5\n[acceptance]\nlease = \"2h\"\n",
    );
    let settings =
        Settings::load_from(Some(file.path()), Needs::Everything, required_env()).expect("valid");
    assert_eq!(settings.marketplace.gate.max_requests_per_second, Some(0.5));
}

#[test]
fn bad_rate_gate_keys_are_reported_together() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__MAX_REQUESTS_PER_SECOND",
        "-1",
    );
    let env = with(
        env,
        "ORDER_ACCEPTANCE__MARKETPLACE__RETRY_AFTER_CEILING",
        "soon",
    );
    let err = load(env).expect_err("invalid");
    assert!(
        err.contains("marketplace.max_requests_per_second: -1 is out of range"),
        "{err}"
    );
    assert!(
        err.contains("marketplace.retry_after_ceiling: \"soon\" is not a duration"),
        "{err}"
    );
}

#[test]
fn short_validation_intervals_are_allowed_with_a_warning() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__VALIDATION__INTERVAL",
        "300ms",
    );
    let settings = load(env).expect("allowed");
    let warnings = settings.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("validation.interval is 300ms")),
        "{warnings:?}"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let settings = load(required_env()).expect("valid");
    let debug = format!("{settings:?}");
    assert!(!debug.contains(API_KEY), "{debug}");
    assert!(!debug.contains(DB_PASSWORD), "{debug}");
    assert!(
        debug.contains("postgres://worker:***@localhost:5432/orders"),
        "{debug}"
    );
}

#[test]
fn secrets_never_appear_in_error_messages() {
    // Every other setting broken at once, so every message is produced.
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT",
        "x",
    );
    let env = with(env, "ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "1s");
    let env = with(env, "ORDER_ACCEPTANCE__SERVER__LISTEN", "nowhere");
    let err = load(env).expect_err("invalid");
    assert!(!err.contains(API_KEY), "{err}");
    assert!(!err.contains(DB_PASSWORD), "{err}");

    let bad_scheme = with(
        required_env(),
        "DATABASE_URL",
        &format!("mysql://worker:{DB_PASSWORD}@localhost/orders"),
    );
    let err = load(bad_scheme).expect_err("not postgres");
    assert!(err.contains("database.url: scheme \"mysql\""), "{err}");
    assert!(!err.contains(DB_PASSWORD), "{err}");

    let key_as_table =
        write_config("[marketplace]\napi_key = { nested = \"sk-live-3f9a7c1e-never-print-me\" }\n");
    let err = Settings::load_from(
        Some(key_as_table.path()),
        Needs::Everything,
        Vec::<(String, String)>::new(),
    )
    .expect_err("a table is not a key")
    .to_string();
    assert!(err.contains("marketplace.api_key"), "{err}");
    assert!(!err.contains(API_KEY), "{err}");
}

#[test]
fn rules_are_off_by_default_with_the_documented_actions() {
    use order_acceptance::rules::RuleAction;
    let rules = load(required_env()).expect("defaults load").rules;
    assert!(!rules.enabled);
    assert_eq!(rules.stock_relation, "acceptance_stock");
    assert_eq!(rules.reservation_ttl, None);
    assert_eq!(rules.max_order_total, None);
    assert_eq!(
        [
            rules.unknown_sku,
            rules.insufficient_stock,
            rules.backorder,
            rules.price_below_floor,
            rules.order_total_above_limit,
            rules.on_deadline,
        ],
        [
            RuleAction::Review,
            RuleAction::Review,
            RuleAction::Accept,
            RuleAction::Review,
            RuleAction::Review,
            RuleAction::Review,
        ]
    );
    assert_eq!(rules.deadline_margin, Duration::from_secs(2 * 3600));
}

#[test]
fn bad_rules_are_reported_together_naming_each_key() {
    let mut env = required_env();
    for (key, value) in [
        ("STOCK_RELATION", "stock; DROP TABLE orders"),
        ("UNKNOWN_SKU", "maybe"),
        ("MAX_PRICE_DROP", "1.5"),
        ("MAX_ORDER_TOTAL", "-3"),
        ("DEADLINE_MARGIN", "25h"),
        ("RESERVATION_TTL", "soon"),
    ] {
        env = with(env, &format!("ORDER_ACCEPTANCE__RULES__{key}"), value);
    }
    let err = load(env).expect_err("bad rules refused");
    for key in [
        "rules.stock_relation",
        "rules.unknown_sku",
        "rules.max_price_drop",
        "rules.max_order_total",
        "rules.deadline_margin",
        "rules.reservation_ttl",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn a_schema_qualified_stock_view_and_a_ttl_are_accepted() {
    let env = with(
        with(
            required_env(),
            "ORDER_ACCEPTANCE__RULES__STOCK_RELATION",
            "inventory.available_stock",
        ),
        "ORDER_ACCEPTANCE__RULES__RESERVATION_TTL",
        "7d",
    );
    let rules = load(env).expect("loads").rules;
    assert_eq!(rules.stock_relation, "inventory.available_stock");
    assert_eq!(rules.reservation_ttl, Some(Duration::from_secs(7 * 86_400)));
}

// Several shops ------------------------------------------------------------------------------

const SHOP_KEY: &str = "sk-shop-b7e2d94a-never-print-me";
const FILE_KEY: &str = "sk-file-51c0a3e8-never-print-me";

const TWO_SHOPS: &str = r#"
[marketplace]
acceptance_window = "24h"
max_requests_per_second = 5

[rules]
enabled = true
max_price_drop = 0.1
unknown_sku = "review"
backorder = "accept"
deadline_margin = "2h"

[shops.other_marketplace]
url = "https://other.example.com/mirakl"
acceptance_window = "72h"
name = "Other"
shop_id = "3001"
max_requests_per_second = 0

[shops.other_marketplace.rules]
unknown_sku = "refuse"
max_order_total = 500
deadline_margin = "6h"

[shops.bestbuy_us]
url = "https://marketplace.bestbuy.com"
"#;

#[test]
fn two_named_shops_load_in_name_order_with_inherited_and_own_values() {
    use order_acceptance::config::ShopName;
    use order_acceptance::rules::RuleAction;
    let file = write_config(TWO_SHOPS);
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY",
        SHOP_KEY,
    );
    let env = with(env, "ORDER_ACCEPTANCE__SHOPS__BESTBUY_US__API_KEY", "sk-us");
    let settings = Settings::load_from(Some(file.path()), Needs::Everything, env).expect("valid");

    assert_eq!(settings.shop, ShopName::default_shop());
    let names: Vec<&str> = settings.shops.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["bestbuy_us", "other_marketplace"]);
    let all: Vec<String> = settings
        .all_shops()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(all, ["default", "bestbuy_us", "other_marketplace"]);

    let default = settings.find_shop("default").expect("the default shop");
    assert_eq!(
        default.marketplace.url.as_str(),
        "https://marketplace.bestbuy.ca/"
    );
    assert_eq!(default.marketplace.api_key.expose_secret(), API_KEY);

    let other = settings.find_shop("other_marketplace").expect("listed");
    assert_eq!(
        other.marketplace.url.as_str(),
        "https://other.example.com/mirakl"
    );
    assert_eq!(other.marketplace.api_key.expose_secret(), SHOP_KEY);
    assert_eq!(other.marketplace.name, "Other");
    assert_eq!(other.marketplace.shop_id.as_deref(), Some("3001"));
    assert_eq!(
        other.marketplace.acceptance_window,
        Duration::from_secs(72 * 3600)
    );
    assert_eq!(
        other.marketplace.gate.max_requests_per_second, None,
        "0: no pace"
    );
    assert_eq!(other.rules.unknown_sku, RuleAction::Refuse);
    assert_eq!(other.rules.max_order_total, Some(500.into()));
    assert_eq!(other.rules.deadline_margin, Duration::from_secs(6 * 3600));
    // Inherited from [marketplace] and [rules].
    assert_eq!(other.marketplace.timeout, settings.marketplace.timeout);
    assert_eq!(
        other.marketplace.retry.attempts,
        settings.marketplace.retry.attempts
    );
    assert!(other.rules.enabled);
    assert_eq!(other.rules.backorder, RuleAction::Accept);
    assert_eq!(other.rules.max_price_drop.to_string(), "0.1");
    assert_eq!(other.rules.stock_relation, "acceptance_stock");

    let us = settings.find_shop("bestbuy_us").expect("listed");
    assert_eq!(us.marketplace.name, "BestBuy", "[marketplace].name");
    assert_eq!(us.marketplace.shop_id, None, "a shop id is never inherited");
    assert_eq!(
        us.marketplace.acceptance_window,
        Duration::from_secs(24 * 3600)
    );
    assert_eq!(us.marketplace.gate.max_requests_per_second, Some(5.0));
    assert_eq!(us.rules.unknown_sku, RuleAction::Review);
    assert!(settings.find_shop("nowhere").is_none());
}

#[test]
fn settings_for_a_shop_read_as_that_shops_and_keep_every_shop() {
    let file = write_config(TWO_SHOPS);
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY",
        SHOP_KEY,
    );
    let env = with(env, "ORDER_ACCEPTANCE__SHOPS__BESTBUY_US__API_KEY", "sk-us");
    let settings = Settings::load_from(Some(file.path()), Needs::Everything, env).expect("valid");
    let other = settings.find_shop("other_marketplace").expect("listed");

    let for_other = settings.for_shop(&other);
    assert_eq!(for_other.shop.as_str(), "other_marketplace");
    assert_eq!(for_other.marketplace.name, "Other");
    assert_eq!(for_other.marketplace.api_key.expose_secret(), SHOP_KEY);
    assert_eq!(
        for_other.rules.deadline_margin,
        Duration::from_secs(6 * 3600)
    );
    assert_eq!(
        for_other.acceptance.concurrency,
        settings.acceptance.concurrency
    );
    // The default shop is still the [marketplace] one, seen from any shop's settings.
    let default = for_other.find_shop("default").expect("still there");
    assert_eq!(default.marketplace.api_key.expose_secret(), API_KEY);
    assert_eq!(for_other.all_shops().len(), 3);

    let back = for_other.for_shop(&default);
    assert_eq!(back.shop.as_str(), "default");
    assert_eq!(back.marketplace.api_key.expose_secret(), API_KEY);
    assert_eq!(format!("{back:?}"), format!("{settings:?}"));
}

#[test]
fn no_shops_table_is_one_default_shop() {
    let settings = load(required_env()).expect("valid");
    assert!(settings.shops.is_empty());
    let all = settings.all_shops();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name.as_str(), "default");
    assert_eq!(all[0].marketplace.url, settings.marketplace.url);

    let empty = write_config("[shops]\n");
    let settings =
        Settings::load_from(Some(empty.path()), Needs::Everything, required_env()).expect("valid");
    assert!(settings.shops.is_empty());
}

#[test]
fn a_shop_can_be_set_up_from_the_environment_alone() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__SHOPS__BESTBUY_US__URL",
        "https://marketplace.bestbuy.com",
    );
    let env = with(
        env,
        "ORDER_ACCEPTANCE__SHOPS__BESTBUY_US__API_KEY",
        "12345678",
    );
    let settings = load(env).expect("valid");
    let us = settings
        .find_shop("bestbuy_us")
        .expect("from the environment");
    assert_eq!(
        us.marketplace.api_key.expose_secret(),
        "12345678",
        "digits stay text"
    );
}

#[test]
fn a_shop_key_is_read_trimmed_from_the_file_api_key_file_names() {
    let key_file = write_config(&format!("  {FILE_KEY}\n"));
    let file = write_config(&format!(
        "[shops.other_marketplace]\nurl = \"https://other.example.com\"\napi_key_file = \"{}\"\n",
        key_file.path().display()
    ));
    let settings =
        Settings::load_from(Some(file.path()), Needs::Everything, required_env()).expect("valid");
    let other = settings.find_shop("other_marketplace").expect("listed");
    assert_eq!(other.marketplace.api_key.expose_secret(), FILE_KEY);
    assert!(!format!("{settings:?}").contains(FILE_KEY));
}

#[test]
fn a_shop_key_file_that_cannot_be_read_or_is_empty_is_refused_naming_the_key() {
    let file = write_config(
        "[shops.other_marketplace]\nurl = \"https://other.example.com\"\napi_key_file = \"/nonexistent/other.key\"\n",
    );
    let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect_err("unreadable")
        .to_string();
    assert!(
        err.contains("shops.other_marketplace.api_key_file: cannot read /nonexistent/other.key"),
        "{err}"
    );
    // Commands that never call the marketplace do not need it.
    Settings::load_from(Some(file.path()), Needs::DatabaseOnly, required_env())
        .expect("not needed");

    let empty_key = write_config("\n");
    let file = write_config(&format!(
        "[shops.other_marketplace]\nurl = \"https://other.example.com\"\napi_key_file = \"{}\"\n",
        empty_key.path().display()
    ));
    let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect_err("empty")
        .to_string();
    assert!(
        err.contains("shops.other_marketplace.api_key_file: "),
        "{err}"
    );
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn a_shop_key_given_twice_is_refused() {
    let key_file = write_config(FILE_KEY);
    let file = write_config(&format!(
        "[shops.other_marketplace]\nurl = \"https://other.example.com\"\napi_key_file = \"{}\"\n",
        key_file.path().display()
    ));
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY",
        SHOP_KEY,
    );
    let err = Settings::load_from(Some(file.path()), Needs::Everything, env)
        .expect_err("two keys")
        .to_string();
    assert!(
        err.contains("shops.other_marketplace: both api_key (ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY) and api_key_file are set"),
        "{err}"
    );
    assert!(!err.contains(SHOP_KEY) && !err.contains(FILE_KEY), "{err}");
}

#[test]
fn shop_names_must_be_plain_identifiers_and_not_default() {
    let long = format!("a{}", "b".repeat(40));
    for name in [
        "Best-Buy",
        "default",
        "1x",
        "_x",
        "a__b",
        "x_",
        long.as_str(),
    ] {
        let file = write_config(&format!(
            "[shops.\"{name}\"]\nurl = \"https://other.example.com\"\napi_key = \"{SHOP_KEY}\"\n"
        ));
        let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
            .expect_err("not a plain identifier")
            .to_string();
        assert!(err.contains(&format!("shops.{name}: ")), "{name}: {err}");
        assert!(!err.contains(SHOP_KEY), "{err}");
    }
    let forty = format!("a{}", "b".repeat(39));
    let file = write_config(&format!(
        "[shops.{forty}]\nurl = \"https://other.example.com\"\napi_key = \"k\"\n"
    ));
    Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect("40 characters is the longest name");

    use order_acceptance::config::ShopName;
    assert_eq!("default".parse::<ShopName>(), Ok(ShopName::default_shop()));
    assert_eq!(
        "bestbuy_ca".parse::<ShopName>().map(|n| n.to_string()),
        Ok("bestbuy_ca".into())
    );
    let err = "Best-Buy".parse::<ShopName>().expect_err("refused");
    assert!(err.contains("lowercase letter"), "{err}");
}

#[test]
fn a_shop_without_a_url_is_refused_naming_the_key() {
    let file = write_config(&format!(
        "[shops.other_marketplace]\napi_key = \"{SHOP_KEY}\"\n"
    ));
    for needs in [Needs::Everything, Needs::DatabaseOnly] {
        let err = Settings::load_from(Some(file.path()), needs, required_env())
            .expect_err("no url")
            .to_string();
        assert!(
            err.contains("shops.other_marketplace.url: missing"),
            "{err}"
        );
        assert!(!err.contains(SHOP_KEY), "{err}");
    }
    let bad = write_config("[shops.other_marketplace]\nurl = \"ftp://other.example.com\"\n");
    let err = Settings::load_from(Some(bad.path()), Needs::DatabaseOnly, required_env())
        .expect_err("not http")
        .to_string();
    assert!(
        err.contains("shops.other_marketplace.url: \"ftp://"),
        "{err}"
    );
}

#[test]
fn a_shop_without_a_key_is_refused_only_when_the_marketplace_is_called() {
    let file = write_config("[shops.other_marketplace]\nurl = \"https://other.example.com\"\n");
    let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect_err("no key")
        .to_string();
    assert!(
        err.contains("missing required settings: shops.other_marketplace.api_key (or ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY, or shops.other_marketplace.api_key_file)"),
        "{err}"
    );
    let settings = Settings::load_from(Some(file.path()), Needs::DatabaseOnly, required_env())
        .expect("operator commands need no key");
    assert_eq!(settings.shops.len(), 1);
}

#[test]
fn unknown_keys_in_a_shop_are_refused() {
    for (table, key) in [
        ("", "retry_attempts"),
        ("", "ulr"),
        ("[shops.other_marketplace.rules]", "enabled"),
        ("[shops.other_marketplace.rules]", "stock_relation"),
    ] {
        let file = write_config(&format!(
            "[shops.other_marketplace]\nurl = \"https://other.example.com\"\napi_key = \"{SHOP_KEY}\"\n{table}\n{key} = 1\n"
        ));
        let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(!err.contains(SHOP_KEY), "{err}");
    }
}

#[test]
fn bad_shop_values_are_reported_together_naming_each_key() {
    let file = write_config(
        r#"
        [shops.other_marketplace]
        url = "https://other.example.com"
        api_key = "k"
        shop_id = "other"
        name = " "
        acceptance_window = "10m"
        max_requests_per_second = 20000
        [shops.other_marketplace.rules]
        max_price_drop = 2
        max_order_total = -1
        backorder = "maybe"
        on_deadline = "later"
        deadline_margin = "soon"
        [shops.third]
        url = "https://third.example.com"
        api_key = "k"
        acceptance_window = "2h"
        "#,
    );
    let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect_err("bad values")
        .to_string();
    for key in [
        "shops.other_marketplace.shop_id",
        "shops.other_marketplace.name",
        "shops.other_marketplace.acceptance_window",
        "shops.other_marketplace.max_requests_per_second",
        "shops.other_marketplace.rules.max_price_drop",
        "shops.other_marketplace.rules.max_order_total",
        "shops.other_marketplace.rules.backorder",
        "shops.other_marketplace.rules.on_deadline",
        "shops.other_marketplace.rules.deadline_margin",
        // 2 h leaves nothing of the 2 h margin it inherits.
        "shops.third.acceptance_window (2 h) is not longer than the rules.deadline_margin",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn shop_keys_never_appear_in_errors_or_debug_output() {
    let file = write_config(TWO_SHOPS);
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY",
        SHOP_KEY,
    );
    let env = with(
        env,
        "ORDER_ACCEPTANCE__SHOPS__BESTBUY_US__API_KEY",
        FILE_KEY,
    );
    let settings =
        Settings::load_from(Some(file.path()), Needs::Everything, env.clone()).expect("valid");
    let debug = format!("{settings:?} {:?}", settings.all_shops());
    assert!(
        !debug.contains(SHOP_KEY) && !debug.contains(FILE_KEY),
        "{debug}"
    );
    let for_shop = settings.for_shop(&settings.shops[0]);
    assert!(!format!("{for_shop:?}").contains(FILE_KEY));

    // Every other shop value broken at once, so every message is produced.
    let broken = with(
        env,
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__TIMEOUT",
        "x",
    );
    let err = Settings::load_from(Some(file.path()), Needs::Everything, broken)
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("timeout"), "{err}");
    assert!(!err.contains(SHOP_KEY) && !err.contains(FILE_KEY), "{err}");

    // A key where a table or a string belongs: the value is not shown.
    for contents in [
        format!(
            "[shops.other_marketplace]\nurl = \"https://o.example.com\"\napi_key = {{ k = \"{SHOP_KEY}\" }}\n"
        ),
        format!("[shops]\nother_marketplace = \"{SHOP_KEY}\"\n"),
        format!("shops = \"{SHOP_KEY}\"\n"),
    ] {
        let file = write_config(&contents);
        let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
            .expect_err("wrong type")
            .to_string();
        assert!(err.contains("shops"), "{err}");
        assert!(!err.contains(SHOP_KEY), "{contents}: {err}");
    }

    // A URL carrying credentials names the shop's key, not the value.
    let file = write_config(&format!(
        "[shops.other_marketplace]\nurl = \"https://user:{SHOP_KEY}@o.example.com\"\napi_key = \"k\"\n"
    ));
    let err = Settings::load_from(Some(file.path()), Needs::Everything, required_env())
        .expect_err("credentials in the URL")
        .to_string();
    assert!(err.contains("shops.other_marketplace.url: "), "{err}");
    assert!(
        err.contains("ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY"),
        "{err}"
    );
    assert!(!err.contains(SHOP_KEY), "{err}");
}

#[test]
fn a_plain_http_shop_url_is_a_warning() {
    let env = with(
        required_env(),
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__URL",
        "http://other.example.com",
    );
    let env = with(
        env,
        "ORDER_ACCEPTANCE__SHOPS__OTHER_MARKETPLACE__API_KEY",
        SHOP_KEY,
    );
    let warnings = load(env).expect("valid").warnings();
    assert!(
        warnings.iter().any(|w| w
            .starts_with("shops.other_marketplace.url http://other.example.com/ is plain HTTP")),
        "{warnings:?}"
    );
}
