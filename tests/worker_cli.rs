//! The `order-acceptance` binary as an operator runs it: exit codes, signals, and the API key kept
//! out of every log line and every table.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{API_KEY, TestApp, database_url, spawn_app, test_env};
use sqlx::PgPool;
use tokio::process::Command;

/// The worker binary with the test settings, JSON logs at debug level, and `overrides`.
fn worker(app: &TestApp, key: &str, overrides: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_order-acceptance"));
    command
        .env_clear()
        .envs(test_env(&app.sim.url(), key))
        .env("DATABASE_URL", database_url(&app.pool))
        .env("RUST_LOG", "debug")
        .env("ORDER_ACCEPTANCE__LOG__FORMAT", "json")
        .envs(overrides.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true);
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every row of every table, as text.
async fn whole_database(pool: &PgPool) -> String {
    let mut dump = String::new();
    for table in [
        "orders",
        "order_status_history",
        "order_current_status",
        "process_failures",
        "api_calls",
        "acceptance_runs",
    ] {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM {table} t" // table names from this list only
        )))
        .fetch_one(pool)
        .await
        .expect("dump table");
        dump.push_str(&rows.unwrap_or_default());
    }
    dump
}

#[sqlx::test]
async fn once_accepts_exits_0_and_never_shows_the_key(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 5, &[]).await;
    let output = worker(&app, API_KEY, &[])
        .arg("--once")
        .output()
        .await
        .expect("run the binary");
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("accepted"),
        "{all}"
    );
    assert_eq!(app.sim.stats().or21_accepted, 5);
    assert!(
        all.contains("\"level\":\"DEBUG\""),
        "debug logs were on: {all}"
    );

    assert!(!all.contains(API_KEY), "the key is in the logs");
    let dump = whole_database(&app.pool).await;
    assert!(dump.contains("SIM-000001-A"), "the dump has the data");
    assert!(!dump.contains(API_KEY), "the key is in the database");
}

#[sqlx::test]
async fn once_exits_non_zero_when_the_key_is_refused(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 2, &[]).await;
    let wrong_key = "wrong-key-4c1a9e";
    let output = worker(&app, wrong_key, &[])
        .arg("--once")
        .output()
        .await
        .expect("run the binary");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Check marketplace.api_key"), "{stderr}");
    assert!(!all.contains(wrong_key), "{all}");
    assert!(!whole_database(&app.pool).await.contains(wrong_key));
}

#[sqlx::test]
async fn once_exits_3_when_the_import_failed_and_status_says_degraded(pool: PgPool) {
    // Every OR11 answer is a proxy's HTML page: the import reads nothing.
    let app = spawn_app(
        pool,
        |sim| {
            sim.orders = 3;
            sim.faults.html_rate = 1.0;
        },
        &[],
    )
    .await;
    let output = worker(&app, API_KEY, &[])
        .arg("--once")
        .output()
        .await
        .expect("run the binary");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(3), "{all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("degraded"), "{stdout}");
    assert!(stdout.contains("import failed"), "{stdout}");
    assert!(stdout.contains("not the JSON expected"), "{stdout}");

    let status = worker(&app, API_KEY, &[])
        .arg("status")
        .output()
        .await
        .expect("run status");
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", text(&status));
    assert!(shown.contains(": degraded, started"), "{shown}");
    assert!(shown.contains("error: the import failed"), "{shown}");
}

/// A mistyped flag is clap's usage error, 2: a script can tell it from a degraded run (3) and
/// from a fatal error (1).
#[tokio::test]
async fn a_usage_error_exits_2_and_nothing_else_does() {
    let output = Command::new(env!("CARGO_BIN_EXE_order-acceptance"))
        .arg("--oncee")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--oncee"), "{}", text(&output));
}

#[sqlx::test]
async fn bad_configuration_is_a_message_and_a_non_zero_exit(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let output = worker(
        &app,
        API_KEY,
        &[("ORDER_ACCEPTANCE__VALIDATION__INTERVAL", "soon")],
    )
    .arg("--once")
    .output()
    .await
    .expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"validation.interval: "soon" is not a duration"#),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[sqlx::test]
async fn sigterm_lets_the_scheduled_worker_finish_and_exit_0(pool: PgPool) {
    let app = spawn_app(pool, |sim| sim.orders = 4, &[]).await;
    let child = worker(
        &app,
        API_KEY,
        &[("ORDER_ACCEPTANCE__SCHEDULE__CRON", "* * * * * *")],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start the worker");

    // Wait, bounded, for a scheduled run to have done the work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM acceptance_runs WHERE result = 'completed' AND accepted > 0",
        )
        .fetch_one(&app.pool)
        .await
        .expect("runs");
        if done > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled run within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = child.id().expect("running").to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(kill.success());
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits within the grace period")
        .expect("wait");
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("SIGTERM received"), "{all}");
    assert!(all.contains("stopped cleanly"), "{all}");
    let accepted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_current_status WHERE status = 'accepted'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(accepted, 4);
}
