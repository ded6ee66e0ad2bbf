//! Operating the worker: `check`, the health and metrics endpoint, and `api_calls` retention.
//! Real PostgreSQL (`#[sqlx::test]`, a fresh database each) and the simulator over real HTTP.

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use chrono::Utc;
use common::{API_KEY, TestApp, database_url, spawn_app};
use order_acceptance::acceptance::{self, RunResult, retention};
use order_acceptance::check::{self, CheckReport};
use order_acceptance::config::{Needs, Settings};
use order_acceptance::server::{self, ServerError};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_order-acceptance");
const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);

/// A port nothing listens on: bound, then released.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local address").port()
}

/// A pool to a PostgreSQL that is not there; it fails when used, not when made.
async fn unreachable_pool() -> PgPool {
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(closed_port().await)
        .username("nobody");
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options)
}

/// Runs the built binary with only the given environment (plus PATH), from the crate root.
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    // tokio's Command, so the simulator on this test's runtime keeps answering meanwhile.
    command.output().await.expect("run order-acceptance")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn line<'a>(report: &'a CheckReport, name: &str) -> &'a check::CheckLine {
    report
        .checks
        .iter()
        .find(|line| line.check == name)
        .unwrap_or_else(|| panic!("no {name} line in {report:?}"))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a text body"))
}

// `check` ------------------------------------------------------------------------------------

#[sqlx::test]
async fn check_passes_with_a_good_key(pool: PgPool) {
    let url = database_url(&pool);
    let app = spawn_app(pool, |_| {}, &[]).await;
    let settings = app.settings_with(&[("DATABASE_URL", &url)]);

    let report = check::run_checks(&settings).await;

    assert!(report.ok, "{}", report.render());
    let names: Vec<&str> = report
        .checks
        .iter()
        .map(|line| line.check.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "configuration",
            "schedule",
            "database",
            "migrations",
            "marketplace"
        ]
    );
    assert!(
        line(&report, "schedule").detail.contains("next runs"),
        "{report:?}"
    );
    assert!(line(&report, "database").detail.contains("PostgreSQL"));
    assert!(line(&report, "migrations").detail.starts_with("all "));
    assert!(
        line(&report, "marketplace")
            .detail
            .contains("shop \"Simulated Shop\" (id 2000)"),
        "{report:?}"
    );
    let rendered = report.render();
    assert_eq!(rendered.lines().filter(|l| l.starts_with('✓')).count(), 5);
    assert!(!rendered.contains(API_KEY));
}

#[sqlx::test]
async fn check_binary_exits_0_with_a_good_key(pool: PgPool) {
    let url = database_url(&pool);
    let app = spawn_app(pool, |_| {}, &[]).await;
    let sim = app.sim.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("MARKETPLACE_URL", sim.as_str()),
        ("MARKETPLACE_API_KEY", API_KEY),
    ];

    let output = run_binary(&["check"], &env).await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with('✓')), "{stdout}");
    assert!(stdout.contains("Simulated Shop"), "{stdout}");

    let output = run_binary(&["check", "--json"], &env).await;
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(json["ok"], true);
    assert_eq!(json["checks"][4]["check"], "marketplace");
    assert_eq!(json["checks"][4]["ok"], true);
}

#[sqlx::test]
async fn check_with_a_wrong_key_fails_without_printing_it(pool: PgPool) {
    const WRONG_KEY: &str = "wrong-key-5c3e9a1f-must-not-appear";
    let url = database_url(&pool);
    let app = spawn_app(pool, |_| {}, &[]).await;

    let settings = app.settings_with(&[("DATABASE_URL", &url), ("MARKETPLACE_API_KEY", WRONG_KEY)]);
    let report = check::run_checks(&settings).await;
    assert!(!report.ok);
    let marketplace = line(&report, "marketplace");
    assert!(!marketplace.ok);
    assert!(
        marketplace
            .detail
            .contains("the key was refused (HTTP 401): check marketplace.api_key"),
        "{marketplace:?}"
    );
    assert!(line(&report, "database").ok && line(&report, "migrations").ok);

    let sim = app.sim.url();
    let output = run_binary(
        &["check"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("MARKETPLACE_URL", sim.as_str()),
            ("MARKETPLACE_API_KEY", WRONG_KEY),
        ],
    )
    .await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("✗ marketplace") && l.contains("HTTP 401")),
        "{stdout}"
    );
    assert!(!stdout.contains(WRONG_KEY) && !stderr.contains(WRONG_KEY));
    // The A01 attempt is in the audit trail, without the key.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_calls WHERE endpoint = 'A01' AND status_code = 401
           AND coalesce(request_payload::text, '') || coalesce(response_body, '') NOT LIKE '%' || $1 || '%'",
    )
    .bind(WRONG_KEY)
    .fetch_one(&app.pool)
    .await
    .expect("count A01 rows");
    assert_eq!(stored, 2, "one row per check run");
}

#[sqlx::test]
async fn check_with_the_database_down_reports_it_and_carries_on(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let port = closed_port().await;
    let url = format!("postgres://worker:db-secret-pw@127.0.0.1:{port}/orders");
    let sim = app.sim.url();

    let output = run_binary(
        &["check"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("MARKETPLACE_URL", sim.as_str()),
            ("MARKETPLACE_API_KEY", API_KEY),
            ("ORDER_ACCEPTANCE__DATABASE__CONNECT_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].starts_with("✓ configuration"), "{stdout}");
    assert!(lines[1].starts_with("✓ schedule"), "{stdout}");
    assert!(
        lines[2].starts_with("✗ database") && lines[2].contains("cannot connect"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("✗ migrations") && lines[3].contains("not checked"));
    // The marketplace is still checked; its api_calls row could not be written, which is logged.
    assert!(lines[4].starts_with("✓ marketplace"), "{stdout}");
    assert!(!stdout.contains("db-secret-pw") && !stderr.contains("db-secret-pw"));
}

#[sqlx::test]
async fn check_checks_every_shop_and_names_the_one_whose_key_is_refused(pool: PgPool) {
    const WRONG_KEY: &str = "wrong-shop-key-0a7f3d-must-not-appear";
    let url = database_url(&pool);
    let sim = common::spawn_marketplaces(&["bestbuy_ca", "other"], |_| {}).await;
    let (ca, other) = (
        sim.marketplace("bestbuy_ca").expect("served").url(),
        sim.marketplace("other").expect("served").url(),
    );
    let mut env = common::test_env(&ca, API_KEY);
    env.push(("DATABASE_URL".into(), url.clone()));
    env.extend(common::shop_env("other", &other, WRONG_KEY));
    env.extend(common::shop_env("good", &other, API_KEY));
    let settings = Settings::load_from(None, Needs::Everything, env.clone()).expect("settings");

    let report = check::run_checks(&settings).await;
    assert!(!report.ok, "{}", report.render());
    let names: Vec<&str> = report
        .checks
        .iter()
        .map(|line| line.check.as_str())
        .collect();
    assert_eq!(
        names[names.len() - 3..],
        [
            "marketplace (default)",
            "marketplace (good)",
            "marketplace (other)"
        ]
    );
    assert!(line(&report, "marketplace (default)").ok, "{report:?}");
    assert!(line(&report, "marketplace (good)").ok, "{report:?}");
    let refused = line(&report, "marketplace (other)");
    assert!(!refused.ok);
    assert_eq!(refused.shop.as_deref(), Some("other"));
    assert!(
        refused.detail.contains(&format!("{other}: the key was refused (HTTP 401): check shops.other.api_key (ORDER_ACCEPTANCE__SHOPS__OTHER__API_KEY) or shops.other.api_key_file and shops.other.url")),
        "{refused:?}"
    );
    // Each shop's A01 reached its own marketplace: the wrong key only the other one's.
    let other_stats = sim.marketplace("other").expect("served").stats();
    assert_eq!(other_stats.requests.get("unauthorized"), Some(&1));
    assert_eq!(other_stats.requests.get("A01"), Some(&1), "the good shop's");
    let ca_stats = sim.marketplace("bestbuy_ca").expect("served").stats();
    assert_eq!(ca_stats.requests.get("A01"), Some(&1));

    // The binary exits 1 and prints one line per shop, never the key.
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = run_binary(&["check"], &env).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("✓ marketplace (default)") && l.contains("Simulated Shop")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("✗ marketplace (other)") && l.contains("HTTP 401")),
        "{stdout}"
    );
    assert!(!stdout.contains(WRONG_KEY) && !stderr.contains(WRONG_KEY));
    assert!(!stdout.contains(API_KEY) && !stderr.contains(API_KEY));
    sim.shutdown().await;
}

#[tokio::test]
async fn check_with_an_invalid_configuration_stops_there() {
    let output = run_binary(
        &["check"],
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    )
    .await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("✗ configuration"), "{stdout}");
    assert!(
        stdout.contains("marketplace.url (or MARKETPLACE_URL)"),
        "{stdout}"
    );
    let checks = stdout
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗'))
        .count();
    assert_eq!(checks, 1, "{stdout}");
}

#[tokio::test]
async fn check_says_a_shop_id_must_be_a_number() {
    let output = run_binary(
        &["check"],
        &[
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("MARKETPLACE_URL", "https://marketplace.bestbuy.ca"),
            ("MARKETPLACE_API_KEY", "some-key"),
            ("ORDER_ACCEPTANCE__MARKETPLACE__SHOP_ID", "my-shop"),
        ],
    )
    .await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("✗ configuration"), "{stdout}");
    assert!(
        stdout.contains(
            r#"marketplace.shop_id: "my-shop" is not a number; Mirakl shop ids are integers"#
        ),
        "{stdout}"
    );
}

// `/healthz` ---------------------------------------------------------------------------------

#[sqlx::test]
async fn healthz_is_ok_while_the_database_answers(pool: PgPool) {
    let server = server::start("127.0.0.1:0".parse().expect("address"), pool)
        .await
        .expect("server starts");
    let addr = server.local_addr();

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_string()));

    server.stop().await;
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err(),
        "the server stopped listening"
    );
}

#[tokio::test]
async fn healthz_is_503_without_the_database() {
    let server = server::start(
        "127.0.0.1:0".parse().expect("address"),
        unreachable_pool().await,
    )
    .await
    .expect("server starts");

    let (status, body) = get(server.local_addr(), "/healthz").await;

    assert_eq!(status, 503);
    assert!(body.starts_with("database unreachable: "), "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_taken_address_is_a_startup_error_naming_server_listen() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("local address");

    let err = match server::start(addr, unreachable_pool().await).await {
        Ok(_) => panic!("binding a taken address succeeded"),
        Err(err) => err,
    };

    assert!(matches!(err, ServerError::Bind { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&addr.to_string()) && message.contains("server.listen"),
        "{message}"
    );
}

// `/metrics` ---------------------------------------------------------------------------------

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

#[sqlx::test]
async fn metrics_after_a_run(pool: PgPool) {
    let app: TestApp = spawn_app(pool, |sim| sim.orders = 5, &[]).await;
    // Started before the run: the recorder must be installed when the run counts.
    let server = server::start("127.0.0.1:0".parse().expect("address"), app.pool.clone())
        .await
        .expect("server starts");
    let summary = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run completes");
    assert_eq!(
        (summary.result, summary.accepted),
        (RunResult::Completed, 5)
    );
    // Two orders handed over after the run: the pending gauge is read at scrape time.
    app.insert_pending("LATE-1", serde_json::json!({"order_id": "LATE-1"}))
        .await;
    app.insert_pending("LATE-2", serde_json::json!({"order_id": "LATE-2"}))
        .await;

    let (status, metrics) = get(server.local_addr(), "/metrics").await;
    server.stop().await;

    assert_eq!(status, 200);
    // Counters are process-wide and other tests in this binary add to them: at least ours.
    let at_least = |series: &str, min: f64| {
        let value =
            sample(&metrics, series).unwrap_or_else(|| panic!("{series} missing:\n{metrics}"));
        assert!(value >= min, "{series} = {value}, expected at least {min}");
    };
    at_least(
        r#"acceptance_runs_total{result="completed",shop="default"}"#,
        1.0,
    );
    at_least(
        r#"acceptance_orders_total{outcome="accepted",shop="default"}"#,
        5.0,
    );
    at_least(
        r#"marketplace_api_calls_total{endpoint="OR21",status_class="2xx",shop="default"}"#,
        5.0,
    );
    at_least(
        r#"marketplace_api_calls_total{endpoint="OR11",status_class="2xx",shop="default"}"#,
        2.0,
    );
    at_least(
        r#"marketplace_api_call_duration_seconds_count{endpoint="OR21",shop="default"}"#,
        5.0,
    );
    at_least(r#"acceptance_claim_duration_seconds_count"#, 1.0);
    at_least(
        r#"acceptance_last_successful_run_timestamp_seconds{shop="default"}"#,
        1.0,
    );
    assert!(
        metrics.contains(
            r#"marketplace_api_call_duration_seconds_bucket{endpoint="OR21",shop="default",le="0.005"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"acceptance_claim_duration_seconds_bucket{le="+Inf"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE marketplace_api_call_duration_seconds histogram"));
    // Gauges read from this test's database at scrape time.
    assert_eq!(sample(&metrics, "acceptance_pending_orders"), Some(2.0));
    assert_eq!(sample(&metrics, "acceptance_open_failures"), Some(0.0));
    assert_eq!(sample(&metrics, "acceptance_database_up"), Some(1.0));
    let age = sample(&metrics, "acceptance_oldest_pending_age_seconds").expect("age gauge");
    assert!((0.0..60.0).contains(&age), "age {age}");
    // And per shop, a one-shop deployment's only shop being `default`.
    assert_eq!(
        sample(
            &metrics,
            r#"acceptance_shop_pending_orders{shop="default"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, r#"acceptance_shop_open_failures{shop="default"}"#),
        Some(0.0)
    );
}

// Retention ----------------------------------------------------------------------------------

async fn seed_api_calls(pool: &PgPool, rows: i32, age: &str) {
    sqlx::query(
        r#"INSERT INTO api_calls (service, endpoint, is_success, status_code, "timestamp")
           SELECT 'BestBuy', 'OR11', true, 200, now() - $2::interval - g * interval '1 second'
           FROM generate_series(1, $1) AS g"#,
    )
    .bind(rows)
    .bind(age)
    .execute(pool)
    .await
    .expect("seed api_calls");
}

async fn count_api_calls(pool: &PgPool, older_than: &str) -> i64 {
    sqlx::query_scalar(r#"SELECT count(*) FROM api_calls WHERE "timestamp" < now() - $1::interval"#)
        .bind(older_than)
        .fetch_one(pool)
        .await
        .expect("count api_calls")
}

#[sqlx::test]
async fn retention_deletes_only_old_rows_in_bounded_batches(pool: PgPool) {
    seed_api_calls(&pool, 25_000, "40 days").await;
    seed_api_calls(&pool, 10, "1 hour").await;
    sqlx::query(
        r#"INSERT INTO process_failures (related_id, process_name, details, "timestamp")
           VALUES ('OLD-1', 'OrderAcceptance', 'old failure', now() - interval '90 days')"#,
    )
    .execute(&pool)
    .await
    .expect("seed an old failure");
    let stop = CancellationToken::new();

    // 10 batches of 1,000: a bounded share of the backlog.
    let pruned = retention::prune_api_calls(&pool, THIRTY_DAYS, Utc::now(), 1_000, 10, &stop)
        .await
        .expect("prune");
    assert_eq!(
        pruned,
        retention::Pruned {
            deleted: 10_000,
            more_left: true
        }
    );
    assert_eq!(count_api_calls(&pool, "30 days").await, 15_000);
    assert_eq!(count_api_calls(&pool, "0 seconds").await, 15_010);

    // A stop signal ends pruning before the next batch.
    stop.cancel();
    let pruned = retention::prune_api_calls(&pool, THIRTY_DAYS, Utc::now(), 1_000, 10, &stop)
        .await
        .expect("prune");
    assert_eq!(pruned.deleted, 0);

    // Enough batches: the rest of the backlog goes, the recent rows and the failure stay.
    let pruned = retention::prune_api_calls(
        &pool,
        THIRTY_DAYS,
        Utc::now(),
        10_000,
        10,
        &CancellationToken::new(),
    )
    .await
    .expect("prune");
    assert_eq!(
        pruned,
        retention::Pruned {
            deleted: 15_000,
            more_left: false
        }
    );
    assert_eq!(count_api_calls(&pool, "0 seconds").await, 10);
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM process_failures")
        .fetch_one(&pool)
        .await
        .expect("count failures");
    assert_eq!(failures, 1);
}

#[sqlx::test]
async fn a_run_prunes_api_calls_past_the_retention(pool: PgPool) {
    seed_api_calls(&pool, 50, "8 days").await;
    seed_api_calls(&pool, 5, "2 days").await;
    let app = spawn_app(
        pool,
        |sim| sim.orders = 2,
        &[("ORDER_ACCEPTANCE__API_CALLS__RETENTION", "7d")],
    )
    .await;

    let summary = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("run completes");

    assert_eq!(summary.accepted, 2);
    assert_eq!(count_api_calls(&app.pool, "7 days").await, 0);
    assert_eq!(count_api_calls(&app.pool, "1 day").await, 5);
    let from_this_run: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM api_calls WHERE "timestamp" > now() - interval '1 hour'"#,
    )
    .fetch_one(&app.pool)
    .await
    .expect("count recent api_calls");
    assert_eq!(from_this_run as u64, summary.api_calls);
}
