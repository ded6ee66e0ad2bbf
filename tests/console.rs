//! The operator console over real HTTP against a real PostgreSQL (`#[sqlx::test]`): every route,
//! role and refusal the issue names, with the rows each action must (or must not) write.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use common::console::{
    Client, PASSWORD, add_user, hours_before, seed_failed, seed_failure, seed_in_review,
    spawn_console,
};
use order_acceptance::console::accounts::Role;
use reqwest::StatusCode;
use reqwest::header;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_order-acceptance");

async fn audit_rows(pool: &PgPool) -> Vec<(String, String, Option<String>, String)> {
    sqlx::query_as("SELECT actor, action, subject, outcome FROM console_audit ORDER BY audit_id")
        .fetch_all(pool)
        .await
        .expect("audit")
}

async fn review_rows(
    pool: &PgPool,
    order_id: &str,
) -> Vec<(String, Option<Vec<String>>, Option<String>, String)> {
    sqlx::query_as(
        "SELECT action, lines, note, decided_by FROM review_decisions WHERE order_id = $1 ORDER BY review_id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .expect("review decisions")
}

async fn failure_state(pool: &PgPool, failure_id: i64) -> (Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT resolved_by, resolution_note FROM process_failures WHERE failure_id = $1",
    )
    .bind(failure_id)
    .fetch_one(pool)
    .await
    .expect("failure")
}

async fn current_status(pool: &PgPool, order_id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM order_current_status WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .expect("status")
}

// Accounts and sessions ----------------------------------------------------------------------------

#[sqlx::test]
async fn a_login_opens_every_page_with_strict_cookies_and_security_headers(pool: PgPool) {
    let now = Utc::now();
    seed_in_review(&pool, "R-1", hours_before(now, 3), 2).await;
    let failure = seed_failed(&pool, "F-1", "OR21").await;
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);

    let anonymous = client.get("/").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), Some("/login"));

    let answer = client.login("vera", PASSWORD).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let session = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("oa_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "plain http without public_url: {session}"
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM console_sessions")
        .fetch_one(&pool)
        .await
        .expect("session row");
    let token = client.cookies["oa_session"].clone();
    assert_ne!(stored, token.as_bytes(), "the token is stored hashed");
    assert_eq!(stored.len(), 32);

    for (path, expect) in [
        ("/".to_string(), "in review"),
        ("/review".to_string(), "R-1-1"),
        ("/failures".to_string(), "F-1"),
        (
            format!("/failure?id={failure}"),
            "OR21 answered 400 for F-1",
        ),
        (
            "/order?id=R-1".to_string(),
            "In review: line 1 short of stock.",
        ),
        ("/audit".to_string(), "login"),
    ] {
        let page = client.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains(expect), "{path} shows {expect}");
        let csp = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp");
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(!page.body.contains("<script>"), "{path}: no inline script");
    }
    let search = client.get("/search?order_id=R-1").await;
    assert_eq!(search.status, StatusCode::SEE_OTHER);
    assert_eq!(search.location(), Some("/order?id=R-1&shop=default"));
    let missing = client.get("/search?order_id=NOPE").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("There is no order"),
        "{}",
        missing.body
    );
    assert_eq!(
        client.get("/order?id=NOPE").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client.get("/failure?id=999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client.get("/no/such/page").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client.get("/users").await.status,
        StatusCode::FORBIDDEN,
        "viewers manage no users"
    );

    let css = client.get("/static/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/css")
    );
    let js = client.get("/static/console.js").await;
    assert!(
        js.body.contains("visibilityState"),
        "the refresh pauses in a hidden tab"
    );
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
}

#[sqlx::test]
async fn the_session_cookie_is_secure_behind_an_https_public_url(pool: PgPool) {
    add_user(&pool, "ada", Role::Admin).await;
    let app = spawn_console(
        pool.clone(),
        &[(
            "ORDER_ACCEPTANCE__CONSOLE__PUBLIC_URL",
            "https://orders.example.com",
        )],
    )
    .await;
    let mut client = Client::new(&app);
    client.origin = Some("https://orders.example.com".to_string());
    let answer = client.login("ada", PASSWORD).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert!(
        answer
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("oa_session=") && c.contains("; Secure"))
    );

    // Behind the proxy, the console's own address is not the origin forms must come from.
    let mut direct = Client::new(&app);
    assert_eq!(
        direct.login("ada", PASSWORD).await.status,
        StatusCode::FORBIDDEN
    );
}

#[sqlx::test]
async fn wrong_passwords_unknown_and_disabled_users_are_refused_and_audited(pool: PgPool) {
    add_user(&pool, "olga", Role::Operator).await;
    add_user(&pool, "gone", Role::Operator).await;
    order_acceptance::console::accounts::disable_user(&pool, "gone")
        .await
        .expect("disable");
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);

    let wrong = client.login("olga", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("Wrong name or password."),
        "{}",
        wrong.body
    );
    let unknown = client.login("nobody", PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(
        unknown.body.contains("Wrong name or password."),
        "the same words: names stay secret"
    );
    let disabled = client.login("gone", PASSWORD).await;
    assert_eq!(disabled.status, StatusCode::FORBIDDEN);
    assert!(disabled.body.contains("disabled"), "{}", disabled.body);
    assert!(!client.cookies.contains_key("oa_session"));
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(sessions, 0);

    let audit = audit_rows(&pool).await;
    let actions: Vec<(&str, &str)> = audit.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        actions,
        [
            ("olga", "login_failed"),
            ("nobody", "login_failed"),
            ("gone", "login_failed")
        ]
    );
    assert!(
        audit.iter().all(|r| !r.3.contains(PASSWORD)),
        "no password in the audit"
    );

    let login_form = client.get("/login").await;
    let missing_csrf = client
        .post("/login", &[("name", "olga"), ("password", PASSWORD)])
        .await;
    assert_eq!(
        missing_csrf.status,
        StatusCode::FORBIDDEN,
        "{}",
        login_form.status
    );
}

#[sqlx::test]
async fn repeated_failures_lock_the_name_even_for_the_right_password(pool: PgPool) {
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    for _ in 0..5 {
        assert_eq!(
            client.login("olga", "guessing wrongly").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = client.login("olga", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        locked.body.contains("Too many failed logins"),
        "{}",
        locked.body
    );

    // The window passes (the failures age), and the right password works again.
    sqlx::query("UPDATE console_login_failures SET at = at - interval '16 minutes'")
        .execute(&pool)
        .await
        .expect("age failures");
    assert_eq!(
        client.login("olga", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
}

#[sqlx::test]
async fn many_failures_from_one_address_lock_it_for_every_name(pool: PgPool) {
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    sqlx::query(
        "INSERT INTO console_login_failures (user_name, address)
         SELECT 'guess-' || n, '127.0.0.1' FROM generate_series(1, 20) AS n",
    )
    .execute(&pool)
    .await
    .expect("seed failures");
    assert_eq!(
        client.login("olga", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test]
async fn an_idle_or_old_session_sends_back_to_the_login(pool: PgPool) {
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("vera").await;

    sqlx::query("UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes'")
        .execute(&pool)
        .await
        .expect("idle");
    let idle = client.get("/").await;
    assert_eq!(idle.status, StatusCode::SEE_OTHER);
    assert_eq!(idle.location(), Some("/login"));

    client.logged_in("vera").await;
    // Used a moment ago, but logged in longer ago than the absolute timeout.
    sqlx::query("UPDATE console_sessions SET created_at = now() - interval '13 hours'")
        .execute(&pool)
        .await
        .expect("old");
    assert_eq!(client.get("/review").await.location(), Some("/login"));
}

#[sqlx::test]
async fn logout_ends_the_session(pool: PgPool) {
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    let csrf = client.logged_in("vera").await;
    let stolen = client.cookies["oa_session"].clone();
    let out = client.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), Some("/login"));
    client.cookies.insert("oa_session".to_string(), stolen);
    assert_eq!(
        client.get("/").await.location(),
        Some("/login"),
        "the old token opens nothing"
    );
}

// Forms: CSRF, Origin, roles --------------------------------------------------------------------

#[sqlx::test]
async fn forms_without_the_sessions_csrf_token_or_from_another_origin_change_nothing(pool: PgPool) {
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 3), 1).await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    let csrf = client.logged_in("olga").await;
    let accept = |token: &str| {
        vec![
            ("csrf".to_string(), token.to_string()),
            ("order_id".to_string(), "R-1".to_string()),
            ("action".to_string(), "accept".to_string()),
        ]
    };
    let as_refs = |fields: &[(String, String)]| -> Vec<(String, String)> { fields.to_vec() };

    let no_token: Vec<(&str, &str)> = vec![("order_id", "R-1"), ("action", "accept")];
    let missing = client.post("/review/decide", &no_token).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("security token"), "{}", missing.body);

    let wrong_fields = as_refs(&accept("0".repeat(64).as_str()));
    let wrong: Vec<(&str, &str)> = wrong_fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        client.post("/review/decide", &wrong).await.status,
        StatusCode::FORBIDDEN
    );

    let good_fields = accept(&csrf);
    let good: Vec<(&str, &str)> = good_fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    client.origin = Some("http://evil.example".to_string());
    let elsewhere = client.post("/review/decide", &good).await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert!(elsewhere.body.contains("Origin"), "{}", elsewhere.body);
    client.origin = None;
    assert_eq!(
        client.post("/review/decide", &good).await.status,
        StatusCode::FORBIDDEN
    );

    assert!(
        review_rows(&pool, "R-1").await.is_empty(),
        "nothing was decided"
    );
    assert_eq!(current_status(&pool, "R-1").await, "in_review");
    let refused: Vec<String> = audit_rows(&pool)
        .await
        .into_iter()
        .filter(|r| r.1 == "review_accept")
        .map(|r| r.3)
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "every refused form is audited: {refused:?}"
    );
    assert!(refused.iter().all(|outcome| outcome != "ok"));
}

#[sqlx::test]
async fn a_viewer_reads_but_every_action_is_forbidden(pool: PgPool) {
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 3), 1).await;
    let failure = seed_failed(&pool, "F-1", "OR21").await;
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    let csrf = client.logged_in("vera").await;

    let queue = client.get("/review").await;
    assert!(queue.body.contains("R-1-1"));
    assert!(
        !queue.body.contains("/review/decide"),
        "no decision form for a viewer"
    );
    let id = failure.to_string();
    for (path, fields) in [
        (
            "/review/decide",
            vec![
                ("csrf", csrf.as_str()),
                ("order_id", "R-1"),
                ("action", "accept"),
            ],
        ),
        (
            "/failures/resolve",
            vec![
                ("csrf", csrf.as_str()),
                ("id", id.as_str()),
                ("note", "done"),
            ],
        ),
        (
            "/failures/retry",
            vec![("csrf", csrf.as_str()), ("id", id.as_str())],
        ),
        (
            "/failures/bulk",
            vec![
                ("csrf", csrf.as_str()),
                ("action", "resolve"),
                ("up_to_id", id.as_str()),
                ("note", "x"),
            ],
        ),
        (
            "/users/add",
            vec![
                ("csrf", csrf.as_str()),
                ("name", "eve"),
                ("role", "admin"),
                ("password", PASSWORD),
            ],
        ),
    ] {
        let page = client.post(path, &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
    }
    assert_eq!(
        client.get("/failures/bulk?action=resolve").await.status,
        StatusCode::FORBIDDEN
    );
    assert!(review_rows(&pool, "R-1").await.is_empty());
    assert_eq!(failure_state(&pool, failure).await, (None, None));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM console_users")
        .fetch_one(&pool)
        .await
        .expect("users");
    assert_eq!(users, 1);
}

// The review queue ------------------------------------------------------------------------------

#[sqlx::test]
async fn an_operator_refuses_one_line_with_a_note_and_sees_it_queued(pool: PgPool) {
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 23), 2).await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    let csrf = client.logged_in("olga").await;

    let queue = client.get("/review").await;
    assert!(
        queue.body.contains(r#"class="left urgent""#),
        "under 2 h left is red: {}",
        queue.body
    );
    let done = client
        .post(
            "/review/decide",
            &[
                ("csrf", &csrf),
                ("order_id", "R-1"),
                ("lines", "R-1-1"),
                ("note", "discontinued"),
                ("action", "refuse"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body.contains("Decision queued") && done.body.contains("next scheduled run"),
        "{}",
        done.body
    );
    assert_eq!(
        review_rows(&pool, "R-1").await,
        [(
            "refuse".to_string(),
            Some(vec!["R-1-1".to_string()]),
            Some("discontinued".to_string()),
            "olga".to_string()
        )]
    );
    assert_eq!(
        current_status(&pool, "R-1").await,
        "pending_acceptance",
        "the next run claims it"
    );
    let audit = audit_rows(&pool).await;
    let last = audit.last().expect("audit");
    assert_eq!(
        (
            last.0.as_str(),
            last.1.as_str(),
            last.2.as_deref(),
            last.3.as_str()
        ),
        ("olga", "review_refuse", Some("R-1"), "ok")
    );

    let order = client.get("/order?id=R-1").await;
    assert!(
        order.body.contains("queued for the next run"),
        "{}",
        order.body
    );
    let audit_page = client.get("/audit").await;
    assert!(audit_page.body.contains("review_refuse") && audit_page.body.contains("127.0.0.1"));
}

#[sqlx::test]
async fn a_refusal_needs_a_note_and_a_note_has_a_limit(pool: PgPool) {
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 3), 2).await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    let csrf = client.logged_in("olga").await;

    let bare = client
        .post(
            "/review/decide",
            &[
                ("csrf", &csrf),
                ("order_id", "R-1"),
                ("action", "refuse"),
                ("note", "  "),
            ],
        )
        .await;
    assert_eq!(bare.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bare.body.contains("needs a note"), "{}", bare.body);
    let long = "x".repeat(10_000);
    let too_long = client
        .post(
            "/review/decide",
            &[
                ("csrf", &csrf),
                ("order_id", "R-1"),
                ("action", "accept"),
                ("note", &long),
            ],
        )
        .await;
    assert_eq!(too_long.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        too_long.body.contains("10000 characters"),
        "{}",
        too_long.body
    );
    let unknown_line = client
        .post(
            "/review/decide",
            &[
                ("csrf", &csrf),
                ("order_id", "R-1"),
                ("action", "accept"),
                ("lines", "<b>L9</b>"),
            ],
        )
        .await;
    assert_eq!(unknown_line.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown_line.body.contains("&lt;b&gt;L9&lt;/b&gt;"),
        "escaped: {}",
        unknown_line.body
    );
    assert!(review_rows(&pool, "R-1").await.is_empty());
    let huge = "y".repeat(100_000);
    let over_limit = client
        .post(
            "/review/decide",
            &[
                ("csrf", &csrf),
                ("order_id", "R-1"),
                ("action", "accept"),
                ("note", &huge),
            ],
        )
        .await;
    assert!(over_limit.status.is_client_error(), "{}", over_limit.status);
    assert!(review_rows(&pool, "R-1").await.is_empty());
}

#[sqlx::test]
async fn two_operators_deciding_one_order_at_once_one_wins_and_the_other_is_told(pool: PgPool) {
    seed_in_review(&pool, "C-1", hours_before(Utc::now(), 4), 2).await;
    add_user(&pool, "olga", Role::Operator).await;
    add_user(&pool, "otto", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut olga = Client::new(&app);
    let mut otto = Client::new(&app);
    let olga_csrf = olga.logged_in("olga").await;
    let otto_csrf = otto.logged_in("otto").await;

    let olga_fields = [
        ("csrf", olga_csrf.as_str()),
        ("order_id", "C-1"),
        ("action", "accept"),
    ];
    let otto_fields = [
        ("csrf", otto_csrf.as_str()),
        ("order_id", "C-1"),
        ("action", "refuse"),
        ("note", "fraud"),
    ];
    let (a, b) = tokio::join!(
        olga.post("/review/decide", &olga_fields),
        otto.post("/review/decide", &otto_fields)
    );
    let (won, lost, winner) = match (a.status, b.status) {
        (StatusCode::OK, StatusCode::CONFLICT) => (a, b, "olga"),
        (StatusCode::CONFLICT, StatusCode::OK) => (b, a, "otto"),
        other => panic!("exactly one must win: {other:?}\n{}\n{}", a.body, b.body),
    };
    assert!(won.body.contains("Decision queued"));
    assert!(
        lost.body.contains("already decided") && lost.body.contains(&format!("by {winner}")),
        "{}",
        lost.body
    );
    let rows = review_rows(&pool, "C-1").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].3, winner);
}

#[sqlx::test]
async fn html_in_an_order_id_is_shown_as_text_everywhere(pool: PgPool) {
    let evil = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;
    seed_in_review(&pool, evil, hours_before(Utc::now(), 3), 1).await;
    seed_failure(&pool, evil, "OR21").await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("olga").await;
    let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    for path in [
        "/".to_string(),
        "/review".to_string(),
        "/failures".to_string(),
        format!("/order?id={encoded}"),
    ] {
        let page = client.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            !page.body.contains("<script>alert"),
            "{path} must escape: {}",
            page.body
        );
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(
            page.body.contains("&lt;script&gt;alert"),
            "{path} shows the id as text"
        );
    }
    let search = client.get(&format!("/search?order_id={encoded}")).await;
    assert_eq!(
        search.location(),
        Some(format!("/order?id={encoded}&shop=default").as_str())
    );
}

#[sqlx::test]
async fn the_review_queue_pages_oldest_first_by_keyset(pool: PgPool) {
    let now = Utc::now();
    for n in 0..30 {
        seed_in_review(
            &pool,
            &format!("P-{n:02}"),
            hours_before(now, 23) + chrono::TimeDelta::minutes(n),
            1,
        )
        .await;
    }
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("vera").await;
    let first = client.get("/review").await;
    assert!(first.body.contains("30 orders in review"));
    assert!(
        first.body.contains("P-00") && first.body.contains("P-24") && !first.body.contains("P-25")
    );
    let start = first
        .body
        .find("/review?after_at=")
        .expect("next page link");
    let end = first.body[start..].find('"').expect("end") + start;
    let next = first.body[start..end].replace("&amp;", "&");
    let second = client.get(&next).await;
    assert!(
        second.body.contains("P-25")
            && second.body.contains("P-29")
            && !second.body.contains("P-24"),
        "{next}"
    );
    assert!(
        !second.body.contains("after_at="),
        "the last page links nowhere"
    );
}

// The failure inbox -----------------------------------------------------------------------------

#[sqlx::test]
async fn an_operator_resolves_and_retries_failures_in_their_name(pool: PgPool) {
    let first = seed_failed(&pool, "F-1", "OR21").await;
    let second = seed_failed(&pool, "F-2", "OR21").await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    let csrf = client.logged_in("olga").await;

    let page = client.get(&format!("/failure?id={first}")).await;
    assert!(
        page.body.contains("&quot;stage&quot;: &quot;OR21&quot;"),
        "the payload: {}",
        page.body
    );
    let id = first.to_string();
    let no_note = client
        .post("/failures/resolve", &[("csrf", &csrf), ("id", &id)])
        .await;
    assert_eq!(no_note.status, StatusCode::UNPROCESSABLE_ENTITY);
    let resolved = client
        .post(
            "/failures/resolve",
            &[("csrf", &csrf), ("id", &id), ("note", "called the shop")],
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.body);
    assert_eq!(
        failure_state(&pool, first).await,
        (
            Some("olga".to_string()),
            Some("called the shop".to_string())
        )
    );
    let again = client
        .post(
            "/failures/resolve",
            &[("csrf", &csrf), ("id", &id), ("note", "twice")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already resolved"), "{}", again.body);

    let id = second.to_string();
    let retried = client
        .post("/failures/retry", &[("csrf", &csrf), ("id", &id)])
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert!(retried.body.contains("back in the queue"));
    assert_eq!(current_status(&pool, "F-2").await, "pending_acceptance");
    assert_eq!(
        failure_state(&pool, second).await.0.as_deref(),
        Some("olga")
    );
}

#[sqlx::test]
async fn the_inbox_filters_and_pages_by_keyset(pool: PgPool) {
    for n in 0..55 {
        seed_failure(&pool, &format!("V-{n:02}"), "validate").await;
    }
    seed_failure(&pool, "D-1", "deadline").await;
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("vera").await;

    let all = client.get("/failures").await;
    assert!(
        all.body.contains("<strong>56</strong> every open failure"),
        "{}",
        all.body
    );
    let deadline = client.get("/failures?stage=deadline").await;
    assert!(
        deadline.body.contains("<strong>1</strong>")
            && deadline.body.contains("D-1")
            && !deadline.body.contains("V-00")
    );
    let by_order = client
        .get("/failures?order_id=V-07&since=1h&process=OrderAcceptance")
        .await;
    assert!(by_order.body.contains("<strong>1</strong>") && by_order.body.contains("V-07"));
    let bad_since = client.get("/failures?since=yesterday-ish").await;
    assert_eq!(bad_since.status, StatusCode::UNPROCESSABLE_ENTITY);

    let first = client.get("/failures?stage=validate").await;
    assert!(
        first.body.contains("V-54") && !first.body.contains("V-04"),
        "newest first"
    );
    let start = first
        .body
        .find("/failures?stage=validate&amp;before_at=")
        .expect("older link");
    let end = first.body[start..].find('"').expect("end") + start;
    let second = client
        .get(&first.body[start..end].replace("&amp;", "&"))
        .await;
    assert!(
        second.body.contains("V-04")
            && second.body.contains("V-00")
            && !second.body.contains("V-05")
    );
}

#[sqlx::test]
async fn bulk_resolve_covers_exactly_what_was_confirmed(pool: PgPool) {
    let mut matching = Vec::new();
    for n in 0..3 {
        matching.push(seed_failure(&pool, &format!("V-{n}"), "validate").await);
    }
    let other = seed_failure(&pool, "D-1", "deadline").await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("olga").await;

    let confirm = client
        .get("/failures/bulk?action=resolve&stage=validate")
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm.body.contains("<strong>3</strong> failures"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("Resolve 3 failures"));
    let csrf = confirm.csrf();
    let up_to = matching[2].to_string();
    // Recorded after the confirmation was shown: not covered.
    let late = seed_failure(&pool, "V-late", "validate").await;
    let done = client
        .post(
            "/failures/bulk",
            &[
                ("csrf", &csrf),
                ("action", "resolve"),
                ("stage", "validate"),
                ("up_to_id", &up_to),
                ("expected", "3"),
                ("note", "the marketplace was down"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body
            .contains("3 of the 3 failures confirmed were resolved"),
        "{}",
        done.body
    );
    for id in matching {
        assert_eq!(failure_state(&pool, id).await.0.as_deref(), Some("olga"));
    }
    assert_eq!(failure_state(&pool, other).await, (None, None));
    assert_eq!(failure_state(&pool, late).await, (None, None));
    let audit = audit_rows(&pool).await;
    assert!(
        audit
            .iter()
            .any(|r| r.1 == "failures_bulk_resolve" && r.3 == "ok")
    );
}

#[sqlx::test]
async fn bulk_retry_puts_orders_back_and_names_those_it_could_not(pool: PgPool) {
    let retryable = seed_failed(&pool, "F-1", "OR21").await;
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 3), 1).await;
    let in_review = seed_failure(&pool, "R-1", "OR21").await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("olga").await;
    let confirm = client.get("/failures/bulk?action=retry&stage=OR21").await;
    assert!(
        confirm.body.contains("Retry 2 failures"),
        "{}",
        confirm.body
    );
    let csrf = confirm.csrf();
    let up_to = in_review.to_string();
    let done = client
        .post(
            "/failures/bulk",
            &[
                ("csrf", &csrf),
                ("action", "retry"),
                ("stage", "OR21"),
                ("up_to_id", &up_to),
                ("expected", "2"),
            ],
        )
        .await;
    assert!(
        done.body
            .contains("1 of the 2 failures confirmed were retried"),
        "{}",
        done.body
    );
    assert!(
        done.body.contains("1 left as they were") && done.body.contains("in_review"),
        "{}",
        done.body
    );
    assert_eq!(current_status(&pool, "F-1").await, "pending_acceptance");
    assert_eq!(
        failure_state(&pool, retryable).await.0.as_deref(),
        Some("olga")
    );
    assert_eq!(failure_state(&pool, in_review).await, (None, None));
}

// The overview ----------------------------------------------------------------------------------

#[sqlx::test]
async fn the_overview_shows_counts_deadlines_runs_and_the_chart(pool: PgPool) {
    seed_in_review(&pool, "R-1", hours_before(Utc::now(), 23), 1).await;
    seed_failed(&pool, "F-1", "OR21").await;
    sqlx::query(
        "INSERT INTO acceptance_runs (worker_id, finished_at, result, claimed, accepted)
         VALUES ('host-1', now(), 'completed', 4, 3), ('host-2', NULL, 'running', 0, 0)",
    )
    .execute(&pool)
    .await
    .expect("runs");
    add_user(&pool, "vera", Role::Viewer).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("vera").await;
    let page = client.get("/").await;
    assert!(
        page.body.contains(r#"data-refresh="15""#),
        "refreshes itself"
    );
    assert!(page.body.contains("acceptance_failed") && page.body.contains("in_review"));
    assert!(
        page.body.contains("host-1")
            && page.body.contains("host-2")
            && page.body.contains("so far")
    );
    assert!(
        page.body.contains("<svg") && page.body.contains("1 sent to review"),
        "{}",
        page.body
    );
    assert!(page.body.contains("R-1") && page.body.contains("left urgent"));
}

// Users -----------------------------------------------------------------------------------------

#[sqlx::test]
async fn an_admin_adds_disables_and_resets_users_in_the_page(pool: PgPool) {
    add_user(&pool, "ada", Role::Admin).await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let mut admin = Client::new(&app);
    let csrf = admin.logged_in("ada").await;
    let mut olga = Client::new(&app);
    olga.logged_in("olga").await;

    assert!(admin.get("/users").await.body.contains("olga"));
    let short = admin
        .post(
            "/users/add",
            &[
                ("csrf", &csrf),
                ("name", "vic"),
                ("role", "viewer"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let added = admin
        .post(
            "/users/add",
            &[
                ("csrf", &csrf),
                ("name", "vic"),
                ("role", "viewer"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    let twice = admin
        .post(
            "/users/add",
            &[
                ("csrf", &csrf),
                ("name", "vic"),
                ("role", "viewer"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    let mut vic = Client::new(&app);
    vic.logged_in("vic").await;

    let disabled = admin
        .post("/users/disable", &[("csrf", &csrf), ("name", "olga")])
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
    assert_eq!(
        olga.get("/").await.location(),
        Some("/login"),
        "her session ended"
    );
    let myself = admin
        .post("/users/disable", &[("csrf", &csrf), ("name", "ada")])
        .await;
    assert_eq!(myself.status, StatusCode::UNPROCESSABLE_ENTITY);

    let new_password = "another long password";
    let reset = admin
        .post(
            "/users/password",
            &[("csrf", &csrf), ("name", "vic"), ("password", new_password)],
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(vic.get("/").await.location(), Some("/login"));
    assert_eq!(
        vic.login("vic", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        vic.login("vic", new_password).await.status,
        StatusCode::SEE_OTHER
    );
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM console_users")
        .fetch_all(&pool)
        .await
        .expect("hashes");
    assert!(
        hashes
            .iter()
            .all(|h| h.starts_with("$argon2id$") && !h.contains(PASSWORD))
    );
}

// Faults ----------------------------------------------------------------------------------------

/// A TCP forwarder in front of PostgreSQL that can be switched off (open connections cut, new
/// ones refused) and on again: the database going away and coming back, for real.
struct Switch {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Switch {
    async fn start(target: std::net::SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (up_flag, cuts) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up_flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let token = cuts.lock().expect("cut").clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Switch { addr, up, cut }
    }

    fn off(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().expect("cut");
        cut.cancel();
        *cut = CancellationToken::new();
    }

    fn on(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[sqlx::test]
async fn the_database_going_away_is_an_error_page_and_the_console_recovers(pool: PgPool) {
    add_user(&pool, "vera", Role::Viewer).await;
    let options = pool.connect_options();
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let target = tokio::net::lookup_host(target)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let switch = Switch::start(target).await;
    let through_switch = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_with(
            (*options)
                .clone()
                .host("127.0.0.1")
                .port(switch.addr.port()),
        )
        .await
        .expect("pool through the switch");
    let app = spawn_console(through_switch, &[]).await;
    let mut client = Client::new(&app);
    client.logged_in("vera").await;

    switch.off();
    for path in ["/", "/review", "/failures", "/login"] {
        let page = client.get(path).await;
        if path == "/login" {
            assert_eq!(
                page.status,
                StatusCode::OK,
                "the login form needs no database"
            );
            continue;
        }
        assert_eq!(
            page.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            page.body
        );
        assert!(
            page.body.contains("The database is not answering"),
            "{}",
            page.body
        );
        assert!(!page.body.contains("postgres://"), "no URL on the page");
    }
    assert_eq!(
        client.get("/healthz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    switch.on();
    let back = client.get("/").await;
    assert_eq!(
        back.status,
        StatusCode::OK,
        "the same session works again: {}",
        back.body
    );
}

// The CLI ---------------------------------------------------------------------------------------

fn cli(pool: &PgPool, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", common::database_url(pool))
        .env("ORDER_ACCEPTANCE__LOG__FORMAT", "text")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("output")
}

#[sqlx::test]
async fn console_user_commands_add_list_disable_and_change_passwords(pool: PgPool) {
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let added = cli(
        &pool,
        &["console", "user", "add", "ada", "--role", "admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", text(&added));
    assert!(text(&added).contains("added ada (admin)"));
    let short = cli(
        &pool,
        &["console", "user", "add", "bob", "--role", "viewer"],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(text(&short).contains("too short"), "{}", text(&short));
    let twice = cli(
        &pool,
        &["console", "user", "add", "ada", "--role", "viewer"],
        &format!("{PASSWORD}\n"),
    );
    assert!(text(&twice).contains("already exists"), "{}", text(&twice));
    let bad_role = cli(
        &pool,
        &["console", "user", "add", "eve", "--role", "root"],
        "",
    );
    assert!(!bad_role.status.success());

    let list = cli(&pool, &["console", "user", "list"], "");
    assert!(
        text(&list).contains("ada") && text(&list).contains("active"),
        "{}",
        text(&list)
    );
    let json = cli(&pool, &["console", "user", "list", "--json"], "");
    let users: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(users[0]["role"], "admin");
    assert!(
        !String::from_utf8_lossy(&json.stdout).contains("argon2"),
        "no hash printed"
    );

    let changed = cli(
        &pool,
        &["console", "user", "password", "ada"],
        "a brand new password\n",
    );
    assert!(changed.status.success(), "{}", text(&changed));
    let disabled = cli(&pool, &["console", "user", "disable", "ada"], "");
    assert!(disabled.status.success(), "{}", text(&disabled));
    let missing = cli(&pool, &["console", "user", "disable", "nobody"], "");
    assert!(
        text(&missing).contains("there is no user nobody"),
        "{}",
        text(&missing)
    );

    let app = spawn_console(pool.clone(), &[]).await;
    let mut client = Client::new(&app);
    assert_eq!(
        client.login("ada", "a brand new password").await.status,
        StatusCode::FORBIDDEN,
        "disabled"
    );
}
