//! Several shops in one deployment: one simulator per marketplace (their order ids overlap), one
//! database, one stock. Each test runs the shops the way `--once` does.

mod common;

use std::sync::Arc;

use marketplace_sim::{LineSpec, OrderSpec, SimConfig, Simulator};
use order_acceptance::acceptance::{self, Context, ShopRun};
use order_acceptance::config::{Needs, Settings};
use order_acceptance::db::failures::{self, FailureFilter};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::{API_KEY, database_url, test_env};

const OTHER: &str = "other_market";

/// The default shop and `other_market`, each on its own simulator seeded with `orders` orders
/// (the same ids on both); the other shop's key is `other_key`.
struct TwoShops {
    pool: PgPool,
    default_sim: Simulator,
    other_sim: Simulator,
    settings: Arc<Settings>,
    /// The environment the settings were loaded from.
    env: Vec<(String, String)>,
}

async fn simulator(orders: usize) -> Simulator {
    let mut config = SimConfig::new(API_KEY);
    config.step = std::time::Duration::from_millis(10);
    config.orders = orders;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Simulator::start(config, listener).await.expect("simulator")
}

async fn two_shops(
    pool: PgPool,
    orders: usize,
    other_key: &str,
    overrides: &[(&str, &str)],
) -> TwoShops {
    let default_sim = simulator(orders).await;
    let other_sim = simulator(orders).await;
    let mut env = test_env(&default_sim.url(), API_KEY);
    let prefix = format!("ORDER_ACCEPTANCE__SHOPS__{}__", OTHER.to_uppercase());
    env.push((format!("{prefix}URL"), other_sim.url()));
    env.push((format!("{prefix}API_KEY"), other_key.to_string()));
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = Settings::load_from(None, Needs::Everything, env.clone()).expect("settings");
    acceptance::shops::register(&pool, &settings)
        .await
        .expect("register the shops");
    TwoShops {
        pool,
        default_sim,
        other_sim,
        settings: Arc::new(settings),
        env,
    }
}

impl TwoShops {
    /// The same deployment with the other shop's key changed, as an operator fixes it.
    fn with_other_key(&mut self, key: &str) {
        let name = format!("ORDER_ACCEPTANCE__SHOPS__{}__API_KEY", OTHER.to_uppercase());
        for (var, value) in &mut self.env {
            if *var == name {
                *value = key.to_string();
            }
        }
        let settings = Settings::load_from(None, Needs::Everything, self.env.clone());
        self.settings = Arc::new(settings.expect("settings"));
    }

    /// Both shops' contexts, as one process has them.
    fn workers(&self) -> Vec<Context> {
        acceptance::shops::contexts(&self.pool, &self.settings, None).expect("contexts")
    }

    async fn run(&self) -> Vec<ShopRun> {
        acceptance::run_every_shop(&self.workers(), &CancellationToken::new()).await
    }

    async fn status(&self, shop: &str, order_id: &str) -> String {
        sqlx::query_scalar(
            "SELECT status FROM order_current_status WHERE shop = $1 AND order_id = $2",
        )
        .bind(shop)
        .bind(order_id)
        .fetch_one(&self.pool)
        .await
        .expect("status")
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

fn summary<'a>(runs: &'a [ShopRun], shop: &str) -> &'a ShopRun {
    runs.iter()
        .find(|run| run.shop == shop)
        .expect("the shop ran")
}

#[sqlx::test]
async fn the_same_order_id_on_two_shops_is_accepted_in_each_with_its_own_history(pool: PgPool) {
    let app = two_shops(pool, 3, API_KEY, &[]).await;
    let runs = app.run().await;

    for shop in ["default", OTHER] {
        let run = summary(&runs, shop);
        let done = run.outcome.as_ref().expect("the shop's run completes");
        assert_eq!((done.imported, done.accepted), (3, 3), "shop {shop}");
    }
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM orders WHERE shop = 'default' ORDER BY order_id")
            .fetch_all(&app.pool)
            .await
            .expect("ids");
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert_eq!(app.status("default", id).await, "accepted");
        assert_eq!(app.status(OTHER, id).await, "accepted");
        for sim in [&app.default_sim, &app.other_sim] {
            assert_ne!(sim.order_state(id).as_deref(), Some("WAITING_ACCEPTANCE"));
        }
    }
    // Each shop's history and calls are its own: one claim and one OR21 per order and shop.
    let per_shop: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT h.shop,
                count(*) FILTER (WHERE h.status = 'accepting'),
                (SELECT count(*) FROM api_calls c WHERE c.shop = h.shop AND c.endpoint = 'OR21')
         FROM order_status_history h GROUP BY h.shop ORDER BY h.shop",
    )
    .fetch_all(&app.pool)
    .await
    .expect("per shop");
    assert_eq!(
        per_shop,
        [("default".to_string(), 3, 3), (OTHER.to_string(), 3, 3)]
    );

    // The operator's view: the id alone is ambiguous; the shop settles it.
    let err = order_acceptance::inbox::order_report(&app.pool, &ids[0], None)
        .await
        .expect_err("ambiguous");
    assert!(err.to_string().contains("--shop"), "{err}");
    let report = order_acceptance::inbox::order_report(&app.pool, &ids[0], Some(OTHER))
        .await
        .expect("report");
    assert_eq!(report.order.shop, OTHER);
    assert_eq!(report.current_status.as_deref(), Some("accepted"));
    assert!(report.history.len() >= 3, "{:?}", report.history);
}

#[sqlx::test]
async fn a_shop_with_a_wrong_key_is_reported_once_and_the_other_shop_goes_on(pool: PgPool) {
    let mut app = two_shops(pool, 4, "not-the-key", &[]).await;

    for accepted in [4, 0] {
        let runs = app.run().await;
        let good = summary(&runs, "default");
        let done = good.outcome.as_ref().expect("good shop completes");
        assert_eq!(done.accepted, accepted);
        let bad = summary(&runs, OTHER);
        let err = bad
            .outcome
            .as_ref()
            .expect_err("the refused key fails the shop");
        assert!(err.to_string().contains("refused the API key"), "{err}");
        assert!(!err.to_string().contains("not-the-key"), "{err}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM order_current_status WHERE shop = 'default' AND status = 'accepted'")
            .await,
        4
    );
    // One inbox row for the shop, not one per run, naming it.
    let open = failures::list_failures(
        &app.pool,
        &FailureFilter {
            include_resolved: false,
            process_name: None,
            shop: Some(OTHER.to_string()),
            since: None,
            limit: 10,
        },
    )
    .await
    .expect("inbox");
    assert_eq!(open.len(), 1, "{open:?}");
    let details = open[0].details.as_deref().unwrap_or_default();
    assert!(
        details.contains(OTHER) && details.contains("refused the API key"),
        "{details}"
    );
    assert_eq!(open[0].related_id, None);

    // `status` shows each shop's last run.
    let report = order_acceptance::inbox::status_report(
        &app.pool,
        None,
        &[("default", std::time::Duration::from_secs(86_400))],
        std::time::Duration::from_secs(20 * 3600),
        chrono::Utc::now(),
    )
    .await
    .expect("status");
    let results: Vec<(String, String)> = report
        .last_run_per_shop
        .iter()
        .map(|run| (run.shop.clone(), run.result.clone()))
        .collect();
    assert_eq!(
        results,
        [
            ("default".to_string(), "completed".to_string()),
            (OTHER.to_string(), "failed".to_string())
        ]
    );

    // The key fixed: the shop's orders are accepted and its inbox row resolves itself.
    app.with_other_key(API_KEY);
    let runs = app.run().await;
    let fixed = summary(&runs, OTHER)
        .outcome
        .as_ref()
        .expect("the shop works again");
    assert_eq!(fixed.accepted, 4);
    assert_eq!(
        app.count("SELECT count(*) FROM process_failures WHERE resolved_at IS NULL")
            .await,
        0
    );
}

#[sqlx::test]
async fn a_handed_over_order_naming_an_unknown_shop_is_refused_and_nothing_is_stored(pool: PgPool) {
    let app = two_shops(pool, 0, API_KEY, &[]).await;
    let mut tx = app.pool.begin().await.expect("begin");
    let err = sqlx::query(
        "INSERT INTO orders (shop, order_id, raw_order_data) VALUES ('nowhere', 'X-1', '{}')",
    )
    .execute(&mut *tx)
    .await
    .expect_err("unknown shop");
    drop(tx);
    let text = err.to_string();
    assert!(text.contains("orders_shop_is_configured"), "{text}");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // A known shop named by the upstream system, and one naming none (the default shop).
    for (shop, id) in [(Some(OTHER), "UP-1"), (None, "UP-2")] {
        let mut tx = app.pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO orders (shop, order_id, raw_order_data) VALUES (coalesce($1, 'default'), $2, '{}')")
            .bind(shop)
            .bind(id)
            .execute(&mut *tx)
            .await
            .expect("order");
        match shop {
            Some(shop) => sqlx::query("INSERT INTO order_status_history (shop, order_id, status) VALUES ($1, $2, 'pending_acceptance')").bind(shop),
            None => sqlx::query("INSERT INTO order_status_history (order_id, status) VALUES ($1, 'pending_acceptance')"),
        }
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("history");
        tx.commit().await.expect("commit");
    }
    assert_eq!(app.status(OTHER, "UP-1").await, "pending_acceptance");
    assert_eq!(app.status("default", "UP-2").await, "pending_acceptance");
}

fn one_unit_of(sku: &str, id: &str) -> OrderSpec {
    OrderSpec {
        order_id: Some(id.to_string()),
        items: Some(vec![LineSpec {
            sku: sku.to_string(),
            quantity: 1,
            unit_price: Some(10.0),
            product_sku: None,
        }]),
        ..OrderSpec::default()
    }
}

async fn hand_over(pool: &PgPool, shop: &str, ids: &[String]) {
    let mut tx = pool.begin().await.expect("begin");
    for id in ids {
        sqlx::query("INSERT INTO orders (shop, order_id, raw_order_data) VALUES ($1, $2, $3)")
            .bind(shop)
            .bind(id)
            .bind(json!({ "order_id": id }))
            .execute(&mut *tx)
            .await
            .expect("order");
        sqlx::query(
            "INSERT INTO order_status_history (shop, order_id, status) VALUES ($1, $2, 'pending_acceptance')",
        )
        .bind(shop)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("history");
    }
    tx.commit().await.expect("commit");
}

#[sqlx::test]
async fn the_last_units_are_promised_once_whichever_marketplace_asks(pool: PgPool) {
    let app = two_shops(
        pool,
        0,
        API_KEY,
        &[
            ("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false"),
            ("ORDER_ACCEPTANCE__RULES__ENABLED", "true"),
            ("ORDER_ACCEPTANCE__RULES__INSUFFICIENT_STOCK", "refuse"),
            ("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "2"),
        ],
    )
    .await;
    for round in 0..20 {
        let stock_sku = format!("WAREHOUSE-{round}");
        // The other marketplace names the product by its own offer SKU.
        let other_sku = format!("OM-{round}");
        sqlx::query("INSERT INTO acceptance_stock (sku, available) VALUES ($1, 3)")
            .bind(&stock_sku)
            .execute(&app.pool)
            .await
            .expect("stock");
        sqlx::query("INSERT INTO offer_sku_map (shop, offer_sku, sku) VALUES ($1, $2, $3)")
            .bind(OTHER)
            .bind(&other_sku)
            .bind(&stock_sku)
            .execute(&app.pool)
            .await
            .expect("mapping");
        // 8 orders of one unit each, 4 per marketplace; the ids overlap across them.
        let ids: Vec<String> = (0..4).map(|n| format!("R{round}-{n}")).collect();
        app.default_sim
            .add_orders(ids.iter().map(|id| one_unit_of(&stock_sku, id)).collect());
        app.other_sim
            .add_orders(ids.iter().map(|id| one_unit_of(&other_sku, id)).collect());
        hand_over(&app.pool, "default", &ids).await;
        hand_over(&app.pool, OTHER, &ids).await;

        // Two processes at once, each running both shops.
        let (first, second) = (app.workers(), app.workers());
        let stop = CancellationToken::new();
        let (a, b) = tokio::join!(
            acceptance::run_every_shop(&first, &stop),
            acceptance::run_every_shop(&second, &stop),
        );
        let accepted: u64 = a
            .iter()
            .chain(b.iter())
            .map(|run| run.outcome.as_ref().expect("every run completes").accepted)
            .sum();
        assert_eq!(accepted, 3, "round {round}");
        let (reserved, lines): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(quantity), 0)::int8, count(*) FROM stock_reservations WHERE sku = $1 AND released_at IS NULL",
        )
        .bind(&stock_sku)
        .fetch_one(&app.pool)
        .await
        .expect("reservations");
        assert_eq!((reserved, lines), (3, 3), "round {round}: over-commit");
        let at_marketplaces = ids
            .iter()
            .flat_map(|id| {
                [
                    app.default_sim.order_state(id),
                    app.other_sim.order_state(id),
                ]
            })
            .filter(|state| {
                state.as_deref() != Some("WAITING_ACCEPTANCE")
                    && state.as_deref() != Some("REFUSED")
            })
            .count();
        assert_eq!(at_marketplaces, 3, "round {round}");
    }
}

#[sqlx::test]
async fn a_mapping_to_a_sku_the_stock_lacks_makes_the_line_unknown(pool: PgPool) {
    let app = two_shops(
        pool,
        0,
        API_KEY,
        &[
            ("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false"),
            ("ORDER_ACCEPTANCE__RULES__ENABLED", "true"),
        ],
    )
    .await;
    sqlx::query("INSERT INTO acceptance_stock (sku, available) VALUES ('OM-A', 10)")
        .execute(&app.pool)
        .await
        .expect("stock");
    // The offer SKU is in stock under its own name, but the map says it is another product.
    sqlx::query("INSERT INTO offer_sku_map (shop, offer_sku, sku) VALUES ($1, 'OM-A', 'GONE')")
        .bind(OTHER)
        .execute(&app.pool)
        .await
        .expect("mapping");
    app.other_sim.add_orders(vec![one_unit_of("OM-A", "M-1")]);
    hand_over(&app.pool, OTHER, &["M-1".to_string()]).await;
    let runs = app.run().await;
    assert_eq!(
        summary(&runs, OTHER)
            .outcome
            .as_ref()
            .expect("completes")
            .in_review,
        1
    );
    let (rule, sku): (String, Option<String>) = sqlx::query_as(
        "SELECT rule, sku FROM acceptance_decisions WHERE shop = $1 AND order_id = 'M-1'",
    )
    .bind(OTHER)
    .fetch_one(&app.pool)
    .await
    .expect("decision");
    assert_eq!(
        (rule.as_str(), sku.as_deref()),
        ("unknown_sku", Some("GONE"))
    );
}

/// The binary with both shops configured, the other shop's key `other_key`.
fn binary(app: &TwoShops, other_key: &str, args: &[&str]) -> tokio::process::Command {
    // Not std's: the simulators answer on this test's runtime while the child runs.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-acceptance"));
    let prefix = format!("ORDER_ACCEPTANCE__SHOPS__{}__", OTHER.to_uppercase());
    command
        .env_clear()
        .envs(test_env(&app.default_sim.url(), API_KEY))
        .env("DATABASE_URL", database_url(&app.pool))
        .env(format!("{prefix}URL"), app.other_sim.url())
        .env(format!("{prefix}API_KEY"), other_key)
        .env("ORDER_ACCEPTANCE__LOG__FORMAT", "text")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true);
    command
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[sqlx::test]
async fn once_runs_every_shop_and_names_the_one_that_failed(pool: PgPool) {
    let app = two_shops(pool, 2, API_KEY, &[]).await;

    // One shop's key refused: the other's orders are accepted, the run is degraded (exit 3).
    let output = binary(&app, "wrong-key-4711", &["--once"])
        .output()
        .await
        .expect("run");
    let all = output_text(&output);
    assert_eq!(output.status.code(), Some(3), "{all}");
    assert!(
        all.contains("run of shop default") && all.contains(&format!("run of shop {OTHER}")),
        "{all}"
    );
    assert!(all.contains("refused the API key"), "{all}");
    assert!(!all.contains("wrong-key-4711"), "{all}");

    // The inbox and status name the shops.
    let output = binary(&app, API_KEY, &["failures", "list"])
        .output()
        .await
        .expect("failures");
    let listed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        listed.contains("SHOP") && listed.contains(OTHER),
        "{listed}"
    );
    let output = binary(&app, API_KEY, &["status"])
        .output()
        .await
        .expect("status");
    let status = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(status.contains("Last run of each shop"), "{status}");
    assert!(status.contains(&format!("{OTHER}: #")), "{status}");

    // `--shop` runs one shop alone: the other shop's good key now, and only its orders.
    let output = binary(&app, API_KEY, &["--once", "--shop", OTHER])
        .output()
        .await
        .expect("run");
    let all = output_text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains("run of shop default"), "{all}");
    assert_eq!(
        app.count("SELECT count(*) FROM order_current_status WHERE status = 'accepted'")
            .await,
        4
    );
    let runs = app.count("SELECT count(*) FROM acceptance_runs").await;
    assert_eq!(runs, 3, "two shops, then one");

    // The operator commands take --shop and show the shop.
    let output = binary(&app, API_KEY, &["status", "--shop", OTHER, "--json"])
        .output()
        .await
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["shop"], OTHER);
    assert_eq!(status["last_run"]["shop"], OTHER);
    assert_eq!(status["last_run"]["result"], "completed");

    let output = binary(&app, API_KEY, &["--shop", "Not-A-Name", "status"])
        .output()
        .await
        .expect("status");
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));

    let output = binary(&app, API_KEY, &["failures", "list", "--shop", "nosuchshop"])
        .output()
        .await
        .expect("failures");
    let all = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("no such shop"), "{all}");

    let output = binary(&app, API_KEY, &["--once", "--shop", "nosuchshop"])
        .output()
        .await
        .expect("run");
    let all = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("no such shop") && all.contains(OTHER), "{all}");
}
