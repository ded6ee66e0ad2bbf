//! A hostile marketplace, hostile ids and hostile settings: one case per finding of the attack
//! pass (issue 15), each against a fake Mirakl over real HTTP (wiremock), a real PostgreSQL and,
//! where an operator would see it, the release binary.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{database_url, test_env};
use order_acceptance::acceptance::{self, Context, RunResult, RunSummary};
use order_acceptance::config::{Needs, Settings, next_runs};
use order_acceptance::marketplace::MarketplaceClient;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "hostile-key-5b8e2f0a91c4-do-not-print";

// The fake marketplace ---------------------------------------------------------------------------

/// The state the fake reads its answers from, and what it was asked.
#[derive(Default)]
struct Marketplace {
    /// The state each order reads in a by-id read; WAITING_ACCEPTANCE if absent.
    states: Mutex<HashMap<String, String>>,
    /// The state an order takes when OR21 is answered 204; WAITING_DEBIT if absent.
    after_accept: Mutex<HashMap<String, String>>,
    /// Query strings of the by-id reads, and raw paths of the OR21 calls.
    by_id_reads: Mutex<Vec<String>>,
    or21_paths: Mutex<Vec<String>>,
    listing_reads: Mutex<Vec<u64>>,
}

fn order(id: &str, state: &str) -> Value {
    json!({
        "order_id": id,
        "order_state": state,
        "created_date": "2026-01-05T10:00:00Z",
        "order_lines": [{"order_line_id": format!("{id}-1"), "order_line_state": state, "quantity": 1}]
    })
}

fn query(request: &Request, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A fake Mirakl: `listing(offset)` answers the import's pages; by-id reads answer each id (split
/// on commas, as Mirakl does, at most `max`) in its state; OR21 answers 204 and moves the order
/// on, or answers `refusal` and changes nothing.
async fn fake(
    listing: impl Fn(u64) -> Value + Send + Sync + 'static,
    refusal: Option<ResponseTemplate>,
) -> (MockServer, Arc<Marketplace>) {
    let server = MockServer::start().await;
    let market = Arc::new(Marketplace::default());
    let seen = market.clone();
    Mock::given(method("GET"))
        .and(path_regex("^/api/orders$"))
        .respond_with(move |request: &Request| {
            if let Some(ids) = query(request, "order_ids") {
                seen.by_id_reads
                    .lock()
                    .unwrap()
                    .push(request.url.query().unwrap_or("").to_owned());
                let max: usize = query(request, "max")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(10);
                let states = seen.states.lock().unwrap();
                let orders: Vec<Value> = ids
                    .split(',')
                    .take(max)
                    .map(|id| {
                        let state = states.get(id).map_or("WAITING_ACCEPTANCE", String::as_str);
                        order(id, state)
                    })
                    .collect();
                let total = orders.len();
                return ResponseTemplate::new(200)
                    .set_body_json(json!({"orders": orders, "total_count": total}));
            }
            let offset = query(request, "offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            seen.listing_reads.lock().unwrap().push(offset);
            ResponseTemplate::new(200).set_body_json(listing(offset))
        })
        .mount(&server)
        .await;
    let seen = market.clone();
    Mock::given(method("PUT"))
        .and(path_regex("^/api/orders/.*/accept$"))
        .respond_with(move |request: &Request| {
            let path = request.url.path().to_owned();
            seen.or21_paths.lock().unwrap().push(path.clone());
            if let Some(refusal) = &refusal {
                return refusal.clone();
            }
            if let Some(id) = path
                .strip_prefix("/api/orders/")
                .and_then(|p| p.strip_suffix("/accept"))
            {
                let id = percent_decode(id);
                let state = seen.after_accept.lock().unwrap().get(&id).cloned();
                let state = state.unwrap_or_else(|| "WAITING_DEBIT".into());
                seen.states.lock().unwrap().insert(id, state);
            }
            ResponseTemplate::new(204)
        })
        .mount(&server)
        .await;
    (server, market)
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn settings(url: &str, overrides: &[(&str, &str)]) -> Arc<Settings> {
    let mut env = test_env(url, KEY);
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Arc::new(Settings::load_from(None, Needs::Everything, env).expect("settings"))
}

fn worker(pool: &PgPool, settings: &Arc<Settings>) -> Context {
    let client = MarketplaceClient::new(&settings.marketplace, &settings.api_calls, pool.clone())
        .expect("client");
    Context::new(pool.clone(), client, settings.clone())
}

async fn run(ctx: &Context) -> RunSummary {
    acceptance::run(ctx, &CancellationToken::new())
        .await
        .expect("run completes")
}

fn page(orders: Vec<Value>, total: u64) -> Value {
    json!({"orders": orders, "total_count": total})
}

async fn status(pool: &PgPool, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM order_current_status WHERE order_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("status")
}

async fn open_failures(pool: &PgPool, stage: &str) -> Vec<(Option<String>, String, Value)> {
    sqlx::query_as(
        "SELECT related_id, details, payload FROM process_failures WHERE resolved_at IS NULL AND payload ->> 'stage' = $1 ORDER BY failure_id",
    )
    .bind(stage)
    .fetch_all(pool)
    .await
    .expect("failures")
}

async fn insert_pending(pool: &PgPool, id: &str) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO orders (order_id, raw_order_data) VALUES ($1, $2)")
        .bind(id)
        .bind(order(id, "WAITING_ACCEPTANCE"))
        .execute(&mut *tx)
        .await
        .expect("order");
    sqlx::query("INSERT INTO order_status_history (order_id, status, notes) VALUES ($1, 'pending_acceptance', 'from upstream')")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("history");
    tx.commit().await.expect("commit");
}

/// Every row of the tables a secret could reach, as text.
async fn whole_database(pool: &PgPool) -> String {
    let mut dump = String::new();
    for table in [
        "orders",
        "order_status_history",
        "process_failures",
        "api_calls",
        "acceptance_runs",
    ] {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM {table} t" // names from this list only
        )))
        .fetch_one(pool)
        .await
        .expect("dump");
        dump.push_str(&rows.unwrap_or_default());
    }
    dump
}

// 1. One malformed order must not block the import ----------------------------------------------

#[sqlx::test]
async fn one_malformed_order_does_not_block_the_others_and_is_reported_once(pool: PgPool) {
    let mut null_lines = order("BAD-LINES", "WAITING_ACCEPTANCE");
    null_lines["order_lines"] = Value::Null;
    let listing = page(
        vec![
            order("GOOD-1", "WAITING_ACCEPTANCE"),
            null_lines,
            order("GOOD-2", "WAITING_ACCEPTANCE"),
            json!({"order_id": 42, "order_state": "WAITING_ACCEPTANCE", "order_lines": []}),
            order("GOOD-3", "WAITING_ACCEPTANCE"),
        ],
        5,
    );
    let (server, _) = fake(move |_| listing.clone(), None).await;
    let ctx = worker(&pool, &settings(&server.uri(), &[]));

    let summary = run(&ctx).await;
    assert_eq!(summary.result, RunResult::Completed, "{summary:?}");
    assert_eq!(
        (summary.imported, summary.accepted, summary.unreadable),
        (3, 3, 2)
    );
    for id in ["GOOD-1", "GOOD-2", "GOOD-3"] {
        assert_eq!(status(&pool, id).await.as_deref(), Some("accepted"));
    }
    let reported = open_failures(&pool, "import").await;
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert_eq!(reported[0].0.as_deref(), Some("BAD-LINES"));
    assert!(reported[0].1.contains("order_lines"), "{}", reported[0].1);
    assert_eq!(reported[1].0, None, "a numeric id names no order");
    assert_eq!(
        reported[1].2["order"]["order_id"],
        json!(42),
        "the raw JSON is kept"
    );

    // Every later import lists them again: still one row each.
    run(&ctx).await;
    run(&ctx).await;
    assert_eq!(open_failures(&pool, "import").await.len(), 2);
}

// 2. An import must end --------------------------------------------------------------------------

#[sqlx::test]
async fn an_import_announcing_a_million_orders_stops_at_the_first_empty_page(pool: PgPool) {
    let listing = move |offset: u64| match offset {
        0 => page(vec![order("REAL-1", "WAITING_ACCEPTANCE")], 1_000_000),
        _ => page(vec![], 1_000_000),
    };
    let (server, market) = fake(listing, None).await;
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = run(&ctx).await;
    assert_eq!((summary.imported, summary.accepted), (1, 1));
    assert_eq!(*market.listing_reads.lock().unwrap(), vec![0, 100]);
    let why = summary
        .import_ended_early
        .clone()
        .expect("the summary says why");
    assert!(
        why.contains("offset 100") && why.contains("no order"),
        "{why}"
    );
    let table = acceptance::summary_table("run", &summary, Default::default()).to_string();
    assert!(table.contains("import ended early"), "{table}");
}

#[sqlx::test]
async fn an_import_stops_at_a_page_that_brings_nothing_new(pool: PgPool) {
    let same = page(
        vec![
            order("R-1", "WAITING_ACCEPTANCE"),
            order("R-2", "WAITING_ACCEPTANCE"),
        ],
        1_000_000,
    );
    let (server, market) = fake(move |_| same.clone(), None).await;
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = run(&ctx).await;
    assert_eq!((summary.imported, summary.accepted), (2, 2));
    assert_eq!(market.listing_reads.lock().unwrap().len(), 2);
    assert!(summary.import_ended_early.unwrap().contains("already read"));
}

#[sqlx::test]
async fn an_import_of_endless_new_orders_stops_at_the_page_cap(pool: PgPool) {
    let listing = |offset: u64| {
        let orders = (0..100)
            .map(|i| order(&format!("N-{}", offset + i), "WAITING_ACCEPTANCE"))
            .collect();
        page(orders, 1_000_000)
    };
    let (server, market) = fake(listing, None).await;
    let ctx = worker(
        &pool,
        &settings(
            &server.uri(),
            &[
                ("ORDER_ACCEPTANCE__IMPORT__MAX_ORDERS", "200"),
                ("ORDER_ACCEPTANCE__ACCEPTANCE__BATCH_SIZE", "100"),
                ("ORDER_ACCEPTANCE__ACCEPTANCE__CONCURRENCY", "50"),
            ],
        ),
    );
    let summary = run(&ctx).await;
    assert_eq!(market.listing_reads.lock().unwrap().len(), 2);
    assert_eq!((summary.imported, summary.claimed), (200, 200));
    assert!(
        summary
            .import_ended_early
            .unwrap()
            .contains("import.max_orders")
    );
}

#[sqlx::test]
async fn a_stop_signal_ends_the_import_between_pages(pool: PgPool) {
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let listing = move |offset: u64| {
        // The signal comes while the first page is on its way.
        signal.cancel();
        page(
            vec![order(&format!("S-{offset}"), "WAITING_ACCEPTANCE")],
            1_000_000,
        )
    };
    let (server, market) = fake(listing, None).await;
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = acceptance::run(&ctx, &stop).await.expect("run");
    assert_eq!(*market.listing_reads.lock().unwrap(), vec![0]);
    assert_eq!(summary.imported, 1);
    assert!(summary.import_ended_early.unwrap().contains("stop signal"));
}

// 3. Ids must not steer the URL ------------------------------------------------------------------

#[sqlx::test]
async fn ids_are_sent_as_themselves_or_not_at_all(pool: PgPool) {
    let (server, market) = fake(|_| page(vec![], 0), None).await;
    for id in [".", "..", "tab\there", "new\nline", "a/b", "A-1"] {
        insert_pending(&pool, id).await;
    }
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = run(&ctx).await;

    let mut paths = market.or21_paths.lock().unwrap().clone();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/orders/A-1/accept",
            "/api/orders/a%2Fb/accept",
            "/api/orders/new%0Aline/accept",
            "/api/orders/tab%09here/accept",
        ]
    );
    assert_eq!(summary.accepted, 4);
    for id in [".", ".."] {
        assert_eq!(
            status(&pool, id).await.as_deref(),
            Some("acceptance_failed")
        );
    }
    let failures = open_failures(&pool, "preflight").await;
    assert!(
        failures
            .iter()
            .all(|(_, details, _)| details.contains("cannot be sent in a URL path")),
        "{failures:?}"
    );
}

#[sqlx::test]
async fn an_id_with_a_comma_is_read_alone(pool: PgPool) {
    let (server, market) = fake(|_| page(vec![], 0), None).await;
    for id in ["A-1", "x,y", "A-2"] {
        insert_pending(&pool, id).await;
    }
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    run(&ctx).await;
    for id in ["A-1", "A-2"] {
        assert_eq!(status(&pool, id).await.as_deref(), Some("accepted"), "{id}");
    }
    let reads = market.by_id_reads.lock().unwrap().clone();
    let with_comma: Vec<&String> = reads.iter().filter(|q| q.contains("x%2Cy")).collect();
    assert!(!with_comma.is_empty(), "{reads:?}");
    assert!(
        with_comma
            .iter()
            .all(|q| !q.contains("A-1") && !q.contains("A-2")),
        "{reads:?}"
    );
}

// 4. Terminal escape codes -----------------------------------------------------------------------

async fn binary(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_order-acceptance"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[sqlx::test]
async fn escape_codes_in_ids_and_texts_never_reach_the_terminal(pool: PgPool) {
    let evil = "X-1\u{1b}]0;owned\u{7}\u{1b}[2J\r";
    insert_pending(&pool, evil).await;
    sqlx::query("INSERT INTO process_failures (related_id, process_name, details, payload) VALUES ($1, 'OrderAcceptance', $2, $3)")
        .bind(evil)
        .bind("details \u{1b}[31mred\u{1b}[0m \u{202e}txet")
        .bind(json!({"stage": "test", "note": "\u{1b}[2J"}))
        .execute(&pool)
        .await
        .expect("failure");
    let db = database_url(&pool);
    let env = [("DATABASE_URL", db.as_str())];
    for args in [
        vec!["failures", "list"],
        vec!["failures", "show", "1"],
        vec!["order", evil],
        vec!["status"],
    ] {
        let (ok, stdout, stderr) = binary(&env, &args).await;
        assert!(ok, "{args:?}: {stderr}");
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
            "{args:?}: {stdout:?}"
        );
        assert!(
            !stdout.contains('\r') && !stdout.contains('\u{202e}'),
            "{args:?}: {stdout:?}"
        );
    }
    let (_, listed, _) = binary(&env, &["failures", "list", "--wide"]).await;
    assert!(listed.contains("X-1\\x1b]0;owned\\x07"), "{listed}");
    // Machines get the exact value.
    let (_, json, _) = binary(&env, &["failures", "list", "--json"]).await;
    let parsed: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(parsed["failures"][0]["related_id"], json!(evil));
}

// Issue 13, item 6: tables fit 120 columns ------------------------------------------------------

#[sqlx::test]
async fn tables_fit_120_columns_unless_wide(pool: PgPool) {
    insert_pending(&pool, "W-1").await;
    let long = "a note that goes on and on ".repeat(20);
    sqlx::query("INSERT INTO order_status_history (order_id, status, notes) VALUES ('W-1', 'acceptance_failed', $1)")
        .bind(&long)
        .execute(&pool)
        .await
        .expect("history");
    let db = database_url(&pool);
    let env = [("DATABASE_URL", db.as_str())];
    let (ok, fit, err) = binary(&env, &["order", "W-1"]).await;
    assert!(ok, "{err}");
    let widest = fit.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 120, "{widest} columns:\n{fit}");
    let (_, wide, _) = binary(&env, &["order", "W-1", "--wide"]).await;
    assert!(wide.contains(long.trim_end()), "--wide shows everything");
    assert!(wide.lines().any(|l| l.chars().count() > 120));
}

// 5. Secrets -------------------------------------------------------------------------------------

#[sqlx::test]
async fn database_passwords_are_redacted_in_every_form(pool: PgPool) {
    let password = "pw-in-query-9f3e1c";
    let db = format!("{}?password={password}", database_url(&pool));
    let (server, _) = fake(|_| page(vec![], 0), None).await;
    let uri = server.uri();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("MARKETPLACE_URL", uri.as_str()),
        ("MARKETPLACE_API_KEY", KEY),
        ("ORDER_ACCEPTANCE__LOG__FORMAT", "json"),
    ];
    let (ok, out, err) = binary(&env, &["migrate"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("migrations applied") && out.contains("password=***"),
        "{out}"
    );
    let (_, out, err) = binary(&env, &["check"]).await;
    assert!(out.contains("password=***"), "{out}");
    for text in [&out, &err] {
        assert!(!text.contains(password), "{text}");
    }

    // A server that is not there: the fatal errors of --once, status and migrate.
    let gone = format!("postgres://u:userinfo-pw-77aa@127.0.0.1:1/db?password={password}");
    let env = [
        ("DATABASE_URL", gone.as_str()),
        ("MARKETPLACE_URL", uri.as_str()),
        ("MARKETPLACE_API_KEY", KEY),
        ("ORDER_ACCEPTANCE__DATABASE__CONNECT_TIMEOUT", "300ms"),
    ];
    for args in [vec!["--once"], vec!["status"], vec!["migrate"]] {
        let (ok, out, err) = binary(&env, &args).await;
        assert!(!ok, "{args:?}");
        let all = format!("{out}{err}");
        assert!(all.contains("cannot connect"), "{args:?}: {all}");
        assert!(
            !all.contains(password) && !all.contains("userinfo-pw-77aa"),
            "{args:?}: {all}"
        );
    }
}

#[test]
fn credentials_in_the_marketplace_url_are_refused_with_the_key_named() {
    let env = test_env("http://shop:url-pw-31c@127.0.0.1:9/", KEY);
    let err = Settings::load_from(None, Needs::Everything, env)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("marketplace.url") && err.contains("marketplace.api_key"),
        "{err}"
    );
    assert!(!err.contains("url-pw-31c"), "{err}");
}

#[sqlx::test]
async fn a_marketplace_echoing_the_key_gets_it_stored_nowhere(pool: PgPool) {
    let echo = ResponseTemplate::new(400).set_body_json(json!({
        "message": format!("invalid request, Authorization: {KEY}"), "status": 400
    }));
    let (server, _) = fake(
        |_| page(vec![order("E-1", "WAITING_ACCEPTANCE")], 1),
        Some(echo),
    )
    .await;
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = run(&ctx).await;
    assert_eq!(summary.failed, 1);
    let dump = whole_database(&pool).await;
    assert!(
        dump.contains("Authorization: ***"),
        "the echo is kept, masked"
    );
    assert!(!dump.contains(KEY), "{dump}");
}

// 6. Absurd durations ----------------------------------------------------------------------------

#[test]
fn an_absurd_duration_is_refused_with_its_key_named() {
    let mut env = test_env("http://127.0.0.1:9/", KEY);
    env.push((
        "ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT".into(),
        "99999999999999d".into(),
    ));
    env.push((
        "ORDER_ACCEPTANCE__VALIDATION__MAX_ATTEMPTS".into(),
        u32::MAX.to_string(),
    ));
    let err = Settings::load_from(None, Needs::Everything, env)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("marketplace.timeout") && err.contains("longer than"),
        "{err}"
    );
}

// 7. Every HTTP call has its api_calls row --------------------------------------------------------

#[sqlx::test]
async fn an_or21_in_flight_at_the_end_of_the_grace_keeps_its_api_calls_row(pool: PgPool) {
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![order("F-1", "WAITING_ACCEPTANCE")], 1)),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(move |_: &Request| {
            // The stop signal comes while OR21 is on its way; the answer never comes in time.
            signal.cancel();
            ResponseTemplate::new(204).set_delay(Duration::from_secs(5))
        })
        .mount(&server)
        .await;
    let ctx = worker(
        &pool,
        &settings(
            &server.uri(),
            &[
                ("ORDER_ACCEPTANCE__SHUTDOWN__GRACE", "200ms"),
                ("ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT", "10s"),
            ],
        ),
    );
    let summary = acceptance::run(&ctx, &stop).await.expect("run");
    assert_eq!(summary.result, RunResult::Interrupted);
    let rows: Vec<(Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT status_code, error FROM api_calls WHERE endpoint = 'OR21' AND related_id = 'F-1'",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, None);
    assert!(
        rows[0]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("no answer was recorded")
    );
}

#[sqlx::test]
async fn an_or21_whose_row_cannot_be_written_is_not_sent(pool: PgPool) {
    let (server, market) = fake(|_| page(vec![], 0), None).await;
    insert_pending(&pool, "D-1").await;
    // The audit table refuses writes; everything else works.
    sqlx::query("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$")
        .execute(&pool)
        .await
        .expect("function");
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON api_calls FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = run(&ctx).await;
    assert!(
        market.or21_paths.lock().unwrap().is_empty(),
        "no OR21 without its row"
    );
    assert_eq!(summary.accepted, 0);
    assert_eq!(
        status(&pool, "D-1").await.as_deref(),
        Some("acceptance_failed")
    );
}

// Unclear items, decided ---------------------------------------------------------------------------

#[sqlx::test]
async fn an_order_accepted_in_full_that_reads_refused_gets_an_inbox_row(pool: PgPool) {
    let (server, market) = fake(|_| page(vec![], 0), None).await;
    // The marketplace refuses it once our 204 is out.
    market
        .after_accept
        .lock()
        .unwrap()
        .insert("R-1".into(), "REFUSED".into());
    insert_pending(&pool, "R-1").await;
    let ctx = worker(&pool, &settings(&server.uri(), &[]));
    let summary = run(&ctx).await;
    assert_eq!(summary.refused, 1, "{summary:?}");
    assert_eq!(status(&pool, "R-1").await.as_deref(), Some("refused"));
    let failures = open_failures(&pool, "validate").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].1.contains("REFUSED") && failures[0].1.contains("204"));
}

#[test]
fn a_schedule_that_never_fires_is_refused_and_a_real_one_shows_its_next_runs() {
    let mut env = test_env("http://127.0.0.1:9/", KEY);
    env.push((
        "ORDER_ACCEPTANCE__SCHEDULE__CRON".into(),
        "0 0 31 2 *".into(),
    ));
    let err = Settings::load_from(None, Needs::Everything, env)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("schedule.cron") && err.contains("never fires"),
        "{err}"
    );

    let now = chrono::Utc::now();
    let runs = next_runs("*/5 * * * *", chrono_tz::UTC, now, 3).expect("parses");
    assert_eq!(runs.len(), 3);
    assert!(
        runs.windows(2)
            .all(|w| w[1] - w[0] == chrono::TimeDelta::minutes(5))
    );
}

#[sqlx::test(migrations = false)]
async fn once_against_a_database_without_the_schema_asks_for_migrate(pool: PgPool) {
    let db = database_url(&pool);
    let (server, _) = fake(|_| page(vec![], 0), None).await;
    let uri = server.uri();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("MARKETPLACE_URL", uri.as_str()),
        ("MARKETPLACE_API_KEY", KEY),
    ];
    let (ok, _, err) = binary(&env, &["--once"]).await;
    assert!(!ok);
    assert!(err.contains("run `order-acceptance migrate`"), "{err}");
}
