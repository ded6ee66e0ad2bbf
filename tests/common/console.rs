//! The console over real HTTP on a loopback port, a client that keeps its cookies and sends the
//! console's Origin like a browser, and the seeding the console tests share.

use std::collections::HashMap;
use std::net::SocketAddr;

use chrono::{DateTime, TimeDelta, Utc};
use order_acceptance::config::{Needs, Settings};
use order_acceptance::console::{self, ConsoleState, accounts};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "a long enough password";

pub struct ConsoleApp {
    pub url: String,
    pub pool: PgPool,
    stop: CancellationToken,
}

impl Drop for ConsoleApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Console settings as `order-acceptance console` loads them, with `overrides` applied.
pub fn console_settings(overrides: &[(&str, &str)]) -> Settings {
    let mut env = vec![(
        "DATABASE_URL".to_string(),
        "postgres://unused@127.0.0.1:1/unused".to_string(),
    )];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load_from(None, Needs::DatabaseOnly, env).expect("console settings")
}

/// Serves the console on a free loopback port over `pool`.
pub async fn spawn_console(pool: PgPool, overrides: &[(&str, &str)]) -> ConsoleApp {
    let settings = console_settings(overrides);
    let listener = console::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let state = ConsoleState::new(pool.clone(), settings.console, settings.schedule);
    let stopped = stop.clone();
    tokio::spawn(console::serve(listener, state, async move {
        stopped.cancelled().await
    }));
    ConsoleApp {
        url: format!("http://{addr}"),
        pool,
        stop,
    }
}

pub async fn add_user(pool: &PgPool, name: &str, role: accounts::Role) {
    accounts::add_user(pool, name, role, &SecretString::from(PASSWORD.to_string()))
        .await
        .expect("add user");
}

/// A page as the client saw it.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
    }

    /// The CSRF token of the first form on the page.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').expect("end of the token") + start;
        self.body[start..end].to_string()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// A person at a browser: keeps cookies, follows no redirects (tests look at them), and sends
/// the console's own Origin with every form unless told otherwise.
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
    pub origin: Option<String>,
}

impl Client {
    pub fn new(app: &ConsoleApp) -> Self {
        Client {
            base: app.url.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            cookies: HashMap::new(),
            origin: Some(app.url.clone()),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        for cookie in headers.get_all(header::SET_COOKIE) {
            let text = cookie.to_str().expect("cookie text");
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                match value.is_empty() {
                    true => self.cookies.remove(name),
                    false => self.cookies.insert(name.to_string(), value.to_string()),
                };
            }
        }
        let body = response.text().await.expect("body");
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.keep(response).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = &self.origin {
            request = request.header(header::ORIGIN, origin);
        }
        let response = request.send().await.expect("POST");
        self.keep(response).await
    }

    /// Logs in through the login form; returns the answer to the form.
    pub async fn login(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        let csrf = form.csrf();
        self.post(
            "/login",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }

    /// Logs in and returns the session's CSRF token, read from the overview's forms.
    pub async fn logged_in(&mut self, name: &str) -> String {
        let answer = self.login(name, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let overview = self.get("/").await;
        assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
        overview.csrf()
    }
}

// Seeding ---------------------------------------------------------------------------------------

pub fn hours_before(now: DateTime<Utc>, hours: i64) -> DateTime<Utc> {
    now - TimeDelta::hours(hours)
}

/// An order in review since its first claim, with `lines` lines: line 1 sent to review for its
/// stock, the others accepted by the rules.
pub async fn seed_in_review(pool: &PgPool, order_id: &str, placed_at: DateTime<Utc>, lines: usize) {
    let order_lines: Vec<Value> = (1..=lines)
        .map(|n| json!({"order_line_id": format!("{order_id}-{n}"), "offer_sku": format!("SKU-{n}"), "quantity": 1}))
        .collect();
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data, placed_at, created_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(order_id)
    .bind(json!({"order_id": order_id, "order_lines": order_lines}))
    .bind(placed_at)
    .execute(pool)
    .await
    .expect("insert order");
    let claimed_at = placed_at + TimeDelta::minutes(5);
    for (status, at, note) in [
        ("pending_acceptance", placed_at, "imported"),
        ("accepting", claimed_at, "Claimed by test (attempt 1)."),
        (
            "in_review",
            claimed_at + TimeDelta::seconds(1),
            "In review: line 1 short of stock.",
        ),
    ] {
        sqlx::query(
            r#"INSERT INTO order_status_history (order_id, status, notes, "timestamp", attempt)
               VALUES ($1, $2, $3, $4, 1)"#,
        )
        .bind(order_id)
        .bind(status)
        .bind(note)
        .bind(at)
        .execute(pool)
        .await
        .expect("insert history");
    }
    for n in 1..=lines {
        let (action, rule) = match n {
            1 => ("review", "insufficient_stock"),
            _ => ("accept", "in_stock"),
        };
        sqlx::query(
            "INSERT INTO acceptance_decisions
                 (order_id, order_line_id, attempt, action, rule, sku, quantity, available, reserved,
                  unit_price, floor_price, reason, decided_at)
             VALUES ($1, $2, 1, $3, $4, $5, 1, 0, 2, 19.99, 15.00, $4 || ' for ' || $5, $6)",
        )
        .bind(order_id)
        .bind(format!("{order_id}-{n}"))
        .bind(action)
        .bind(rule)
        .bind(format!("SKU-{n}"))
        .bind(claimed_at)
        .execute(pool)
        .await
        .expect("insert decision");
    }
}

/// An order whose acceptance failed for good, with an open failure a person must work; returns
/// the failure's id.
pub async fn seed_failed(pool: &PgPool, order_id: &str, stage: &str) -> i64 {
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data, placed_at) VALUES ($1, $2, now() - interval '3 hours')",
    )
    .bind(order_id)
    .bind(json!({"order_id": order_id}))
    .execute(pool)
    .await
    .expect("insert order");
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status, notes, attempt)
         VALUES ($1, 'acceptance_failed', 'OR21 answered 400', 1)",
    )
    .bind(order_id)
    .execute(pool)
    .await
    .expect("insert history");
    seed_failure(pool, order_id, stage).await
}

pub async fn seed_failure(pool: &PgPool, order_id: &str, stage: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO process_failures (related_id, process_name, details, payload, retryable)
         VALUES ($1, 'OrderAcceptance', 'OR21 answered 400 for ' || $1, jsonb_build_object('stage', $2::text), false)
         RETURNING failure_id",
    )
    .bind(order_id)
    .bind(stage)
    .fetch_one(pool)
    .await
    .expect("insert failure")
}
