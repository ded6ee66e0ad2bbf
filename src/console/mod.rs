//! The operator console (`order-acceptance console`): the overview, the review queue, the
//! failure inbox, one order's story and the audit, as server-rendered pages that work without
//! JavaScript, for the people at an order desk.
//!
//! Rooms: [`accounts`] (roles, password hashes, the `console user` commands), [`session`] (the
//! cookie, timeouts, who is asking, Origin and CSRF checks), [`pages`] (what is read), [`actions`]
//! (what is done: each through the same function as the CLI, then written to the audit),
//! [`audit`], [`templates`] (the frame and escaping), [`chart`] (the 14-day SVG), [`forms`] and
//! [`assets`]. Queries live in `crate::db::console`.

pub mod accounts;
mod actions;
mod assets;
mod audit;
mod chart;
mod error;
mod forms;
mod pages;
pub mod session;
mod templates;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::{ConsoleSettings, ScheduleSettings};

pub use error::ConsoleError;

/// Forms carry at most a note of a few thousand characters; anything much larger is refused
/// before it is read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct ConsoleState {
    pub pool: PgPool,
    pub config: Arc<ConsoleSettings>,
    /// The worker's schedule, to say when the next run carries a queued decision out.
    pub schedule: Arc<ScheduleSettings>,
    chart: Arc<chart::ChartCache>,
}

impl ConsoleState {
    pub fn new(pool: PgPool, config: ConsoleSettings, schedule: ScheduleSettings) -> Self {
        Self {
            pool,
            config: Arc::new(config),
            schedule: Arc::new(schedule),
            chart: Arc::default(),
        }
    }

    /// Session cookies are `Secure` when people reach the console over https.
    fn secure_cookies(&self) -> bool {
        self.config
            .public_url
            .as_ref()
            .is_some_and(|url| url.scheme() == "https")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr} (console.listen): {cause}. Choose a free address with ORDER_ACCEPTANCE__CONSOLE__LISTEN"
    )]
    // Not a `source`: the message already carries it.
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the console stopped serving: {0}")]
    Serve(std::io::Error),
}

/// Every route of the console.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/review", get(pages::review_queue))
        .route("/review/decide", post(actions::decide))
        .route("/failures", get(pages::failure_inbox))
        .route("/failure", get(pages::failure_detail))
        .route("/failures/resolve", post(actions::resolve))
        .route("/failures/retry", post(actions::retry))
        .route(
            "/failures/bulk",
            get(pages::bulk_confirm).post(actions::bulk),
        )
        .route("/order", get(pages::order))
        .route("/search", get(pages::search))
        .route("/audit", get(pages::audit))
        .route("/users", get(pages::users))
        .route("/users/add", post(actions::add_user))
        .route("/users/disable", post(actions::disable_user))
        .route("/users/password", post(actions::set_password))
        .route("/healthz", get(healthz))
        .route("/static/console.css", get(assets::stylesheet))
        .route("/static/console.js", get(assets::script))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: ConsoleState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(ServeError::Serve)
}

/// `order-acceptance console`: binds `console.listen` and serves until `stop` is cancelled.
pub async fn run(
    settings: crate::config::Settings,
    pool: PgPool,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), ServeError> {
    let listener = bind(settings.console.listen).await?;
    let shown = settings.console.public_url.as_ref().map_or_else(
        || format!("http://{}", settings.console.listen),
        |url| url.to_string(),
    );
    tracing::info!(listen = %settings.console.listen, url = %shown, "console serving");
    let state = ConsoleState::new(pool, settings.console, settings.schedule);
    serve(listener, state, async move { stop.cancelled().await }).await
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| ServeError::Bind { addr, cause })
}

/// No script but the console's own file, no inline script or style, no framing; pages that show
/// orders are not kept in any cache.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// 200 while the database answers; for the container's health check.
async fn healthz(State(state): State<ConsoleState>) -> Response {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database not answering: {err}\n"),
        )
            .into_response(),
    }
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("There is no such page in the console.".to_string())
}
