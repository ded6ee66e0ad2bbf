//! Test harness: each test gets its own database (from `#[sqlx::test]`) and its own simulator on
//! a loopback port, and a worker context wired to both with short intervals.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod console;

use std::sync::Arc;

use marketplace_sim::{SimConfig, Simulator};
use order_acceptance::acceptance::Context;
use order_acceptance::config::{Needs, Settings};
use order_acceptance::marketplace::MarketplaceClient;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub const API_KEY: &str = "test-key-7d1f0c2b9e-never-logged";

/// Attempts and budgets with room to spare on a slow host, for tests against a rate-limited
/// marketplace: what they check is that every order goes in the one run, not how fast.
pub const ROOM_TO_SPARE: &[(&str, &str)] = &[
    ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "8"),
    ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_BUDGET", "30s"),
    ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "300ms"),
    ("ORDER_ACCEPTANCE__VALIDATION__MAX_ATTEMPTS", "20"),
];

pub struct TestApp {
    pub pool: PgPool,
    pub sim: Simulator,
    pub settings: Arc<Settings>,
}

/// Settings for tests: fast timeouts, retries and validation, and a lease that fits them.
pub fn test_env(marketplace_url: &str, key: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
        ("MARKETPLACE_URL", marketplace_url),
        ("MARKETPLACE_API_KEY", key),
        ("ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT", "400ms"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__CONNECT_TIMEOUT", "200ms"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_ATTEMPTS", "2"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_INITIAL_DELAY", "10ms"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_MAX_DELAY", "1500ms"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_BUDGET", "2s"),
        ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_AFTER_CEILING", "1m"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "10"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__CONCURRENCY", "4"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "5m"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__MAX_ATTEMPTS", "3"),
        ("ORDER_ACCEPTANCE__ACCEPTANCE__RETRY_DELAY", "1m"),
        ("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "40ms"),
        ("ORDER_ACCEPTANCE__VALIDATION__MAX_ATTEMPTS", "4"),
        ("ORDER_ACCEPTANCE__SHUTDOWN__GRACE", "10s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The URL of this test's own database (`#[sqlx::test]` made it on the server of
/// `DATABASE_URL`, which `scripts/test` exports), for a child process.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("scripts/test exports DATABASE_URL");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    let database = pool
        .connect_options()
        .get_database()
        .expect("the test pool names its database")
        .to_string();
    url.set_path(&database);
    url.to_string()
}

/// Starts a simulator (a 10 ms step unless `configure` says otherwise) and loads test settings
/// pointing at it, with `overrides` applied last.
pub async fn spawn_app(
    pool: PgPool,
    configure: impl FnOnce(&mut SimConfig),
    overrides: &[(&str, &str)],
) -> TestApp {
    let mut config = SimConfig::new(API_KEY);
    config.step = std::time::Duration::from_millis(10);
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let sim = Simulator::start(config, listener)
        .await
        .expect("start simulator");
    let mut env = test_env(&sim.url(), API_KEY);
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = Settings::load_from(None, Needs::Everything, env).expect("test settings");
    TestApp {
        pool,
        sim,
        settings: Arc::new(settings),
    }
}

impl TestApp {
    /// A worker context; each call is another worker (its own id), as another process would be.
    pub fn worker(&self) -> Context {
        self.worker_with(&self.settings)
    }

    pub fn worker_with(&self, settings: &Arc<Settings>) -> Context {
        let client = MarketplaceClient::new(
            &settings.marketplace,
            &settings.api_calls,
            self.pool.clone(),
        )
        .expect("client");
        Context::new(self.pool.clone(), client, settings.clone())
    }

    /// Settings with some keys changed.
    pub fn settings_with(&self, overrides: &[(&str, &str)]) -> Arc<Settings> {
        let mut env = test_env(&self.sim.url(), API_KEY);
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Arc::new(Settings::load_from(None, Needs::Everything, env).expect("test settings"))
    }

    /// Stores an order as an upstream system would: raw JSON and a `pending_acceptance` row, in
    /// one transaction.
    pub async fn insert_pending(&self, order_id: &str, raw: serde_json::Value) {
        let mut tx = self.pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO orders (order_id, raw_order_data) VALUES ($1, $2)")
            .bind(order_id)
            .bind(raw)
            .execute(&mut *tx)
            .await
            .expect("insert order");
        sqlx::query(
            "INSERT INTO order_status_history (order_id, status, notes) VALUES ($1, 'pending_acceptance', 'from upstream')",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .expect("insert pending row");
        tx.commit().await.expect("commit");
    }

    pub async fn current_status(&self, order_id: &str) -> (String, Option<String>) {
        sqlx::query_as(
            "SELECT c.status, h.notes FROM order_current_status c JOIN order_status_history h USING (history_id) WHERE c.order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&self.pool)
        .await
        .expect("current status")
    }

    pub async fn statuses(&self, order_id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT status FROM order_status_history WHERE order_id = $1 ORDER BY \"timestamp\", history_id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await
        .expect("history")
    }

    /// Open failures of an order: (details, retryable).
    pub async fn open_failures(&self, order_id: &str) -> Vec<(String, bool)> {
        sqlx::query_as(
            "SELECT details, retryable FROM process_failures WHERE related_id = $1 AND resolved_at IS NULL ORDER BY failure_id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await
        .expect("failures")
    }

    /// The OR21 bodies the worker sent for an order, oldest first, from its api_calls rows.
    pub async fn or21_bodies(&self, order_id: &str) -> Vec<serde_json::Value> {
        sqlx::query_scalar(
            "SELECT request_payload FROM api_calls WHERE endpoint = 'OR21' AND related_id = $1 ORDER BY call_id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await
        .expect("OR21 calls")
    }

    pub fn or21_calls(&self, order_id: &str) -> u64 {
        self.sim
            .stats()
            .or21_calls_per_order
            .get(order_id)
            .copied()
            .unwrap_or(0)
    }

    /// Makes every claimable order due now, as if its retry delay had run out (the projection
    /// is the claim's clock), and every run's hold on its orders over, as if its heartbeat had
    /// stopped a lease ago: the next claim releases their orders.
    pub async fn let_time_pass(&self) {
        sqlx::query(
            "UPDATE order_current_status SET claimable_at = now() - interval '1 second' WHERE claimable_at IS NOT NULL",
        )
        .execute(&self.pool)
        .await
        .expect("expire retry delays");
        sqlx::query(
            "UPDATE acceptance_runs SET held_until = now() - interval '1 second' WHERE released_at IS NULL",
        )
        .execute(&self.pool)
        .await
        .expect("expire holds");
    }
}

/// A simulator serving one marketplace per name under `/NAME`, each a 10 ms step unless
/// `configure` says otherwise, with the same seeded orders (so the same ids) on each.
pub async fn spawn_marketplaces(names: &[&str], configure: impl Fn(&mut SimConfig)) -> Simulator {
    let marketplaces = names
        .iter()
        .map(|name| {
            let mut config = SimConfig::new(API_KEY);
            config.step = std::time::Duration::from_millis(10);
            configure(&mut config);
            (name.to_string(), config)
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    Simulator::start_marketplaces(marketplaces, listener)
        .await
        .expect("start simulator")
}

/// The variables that add the shop `name` at `url` with `key`.
pub fn shop_env(name: &str, url: &str, key: &str) -> Vec<(String, String)> {
    let var = |key: &str| format!("ORDER_ACCEPTANCE__SHOPS__{}__{key}", name.to_uppercase());
    vec![
        (var("URL"), url.to_owned()),
        (var("API_KEY"), key.to_owned()),
    ]
}
