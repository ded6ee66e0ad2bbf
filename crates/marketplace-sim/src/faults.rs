//! Fault injection: what can go wrong, the seeded dice that decide when, and the responses a
//! misbehaving marketplace sends.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Scripted;
use super::routes::ApiError;

/// Faults injected at random. Rates are probabilities per request (or per order for
/// `cancel_rate` and `stuck_rate`), 0 to 1; values outside that range act as 0 or 1.
/// The default injects nothing.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Delay added to every `/api` request: fixed when both ends are equal, else uniform in the
    /// range.
    pub latency: Option<(Duration, Duration)>,
    /// 5xx answers, an even mix of 500 (Mirakl's JSON error) and 502/503 (a gateway's HTML page).
    pub error_rate: f64,
    /// 429 answers with `Retry-After`.
    pub throttle_rate: f64,
    /// `Retry-After` on every 429, in whole seconds rounded up.
    pub retry_after: Duration,
    /// Sends `Retry-After` as an HTTP-date (`now + retry_after`, rounded up to the second)
    /// instead of seconds.
    pub retry_after_http_date: bool,
    /// Requests per second for each endpoint (OR11, OR21, A01 and the rest, each its own token
    /// bucket, bursts up to one second's worth) over which the answer is 429; `Some(0)`
    /// throttles everything.
    pub rate_limit: Option<u32>,
    /// OR21 calls whose acceptance is applied but whose answer is delayed by `slow_delay`,
    /// past the client's timeout.
    pub slow_rate: f64,
    pub slow_delay: Duration,
    /// Orders that go CANCELED instead of moving on after acceptance.
    pub cancel_rate: f64,
    /// Orders that stay WAITING_ACCEPTANCE forever after a 204.
    pub stuck_rate: f64,
    /// OR11 answers that are 200 with an HTML page instead of JSON (a proxy's "access denied").
    pub html_rate: f64,
}

impl Default for Faults {
    /// Written by hand so `Faults { throttle_rate: 1.0, ..Faults::default() }` gets the
    /// documented 1 s `Retry-After` and 30 s slow delay rather than zeros.
    fn default() -> Faults {
        Faults {
            latency: None,
            error_rate: 0.0,
            throttle_rate: 0.0,
            retry_after: Duration::from_secs(1),
            retry_after_http_date: false,
            rate_limit: None,
            slow_rate: 0.0,
            slow_delay: Duration::from_secs(30),
            cancel_rate: 0.0,
            stuck_rate: 0.0,
            html_rate: 0.0,
        }
    }
}

/// The endpoints, as counted in the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Or11,
    Or21,
    A01,
    Other,
}

impl Endpoint {
    pub fn key(self) -> &'static str {
        match self {
            Endpoint::Or11 => "OR11",
            Endpoint::Or21 => "OR21",
            Endpoint::A01 => "A01",
            Endpoint::Other => "other",
        }
    }
}

/// A response sent instead of the real one; the request has no effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Status(StatusCode),
    Throttle,
    Html,
}

/// What the dice or a script decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    Fail(Failure),
    /// Handle the request normally, then hold the answer back for `slow_delay`.
    Slow,
}

impl Injected {
    /// `None` for `Scripted::Ok`: the script asks for normal handling.
    pub fn scripted(script: &Scripted) -> Option<Injected> {
        Some(match script {
            Scripted::Ok => return None,
            Scripted::Status500 => {
                Injected::Fail(Failure::Status(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Scripted::Status502 => Injected::Fail(Failure::Status(StatusCode::BAD_GATEWAY)),
            Scripted::Status503 => Injected::Fail(Failure::Status(StatusCode::SERVICE_UNAVAILABLE)),
            Scripted::Throttle => Injected::Fail(Failure::Throttle),
            Scripted::SlowApplied => Injected::Slow,
            Scripted::Html => Injected::Fail(Failure::Html),
        })
    }

    /// The key in `SimStats::faults_injected`.
    pub fn key(self) -> &'static str {
        match self {
            Injected::Fail(Failure::Status(status)) => match status.as_u16() {
                502 => "status_502",
                503 => "status_503",
                _ => "status_500",
            },
            Injected::Fail(Failure::Throttle) => "throttle",
            Injected::Fail(Failure::Html) => "html",
            Injected::Slow => "slow",
        }
    }
}

const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Access Denied</title></head>\
<body><h1>Access Denied</h1><p>You don't have permission to access this server.</p></body></html>\n";

const GATEWAY_PAGE: &str = "<html><head><title>Bad Gateway</title></head>\
<body><center><h1>Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n";

fn html(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `Retry-After` in whole seconds rounded up, or as the HTTP-date that many seconds from now.
fn retry_after(faults: &Faults) -> HeaderValue {
    let wait = faults.retry_after;
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if !faults.retry_after_http_date {
        return HeaderValue::from(seconds);
    }
    // Rounded up to the next whole second, so the date never asks for less than the wait.
    let now = SystemTime::now();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 1);
    let at = whole + Duration::from_secs(seconds);
    HeaderValue::from_str(&httpdate::fmt_http_date(at))
        .unwrap_or_else(|_| HeaderValue::from(seconds))
}

/// A 429 with `Retry-After` as `--retry-after-format` says.
pub(crate) fn throttled(faults: &Faults) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "Too many requests, retry later",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after(faults));
    response
}

impl Failure {
    pub fn respond(self, faults: &Faults) -> Response {
        match self {
            Failure::Status(StatusCode::INTERNAL_SERVER_ERROR) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "An unexpected error occurred",
            )
            .into_response(),
            Failure::Status(status) => html(status, GATEWAY_PAGE),
            Failure::Throttle => throttled(faults),
            Failure::Html => html(StatusCode::OK, HTML_PAGE),
        }
    }
}

/// True with probability `p`; NaN and non-positive rates never fire.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// The seeded random source for per-request faults, so a run with the same seed and the same
/// request sequence injects the same faults.
#[derive(Debug)]
pub(crate) struct Dice {
    rng: StdRng,
}

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn latency(&mut self, faults: &Faults) -> Option<Duration> {
        let (low, high) = faults.latency?;
        if high <= low {
            return Some(low);
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(
            self.rng.random_range(nanos(low)..=nanos(high)),
        ))
    }

    /// A random fault for one request, or `None` to handle it normally.
    pub fn fault(&mut self, faults: &Faults, endpoint: Endpoint) -> Option<Injected> {
        if chance(&mut self.rng, faults.error_rate) {
            let status = match self.rng.random_range(0..3) {
                0 => StatusCode::INTERNAL_SERVER_ERROR,
                1 => StatusCode::BAD_GATEWAY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return Some(Injected::Fail(Failure::Status(status)));
        }
        if chance(&mut self.rng, faults.throttle_rate) {
            return Some(Injected::Fail(Failure::Throttle));
        }
        match endpoint {
            Endpoint::Or21 if chance(&mut self.rng, faults.slow_rate) => Some(Injected::Slow),
            Endpoint::Or11 if chance(&mut self.rng, faults.html_rate) => {
                Some(Injected::Fail(Failure::Html))
            }
            _ => None,
        }
    }

    /// Decides an order's fate at creation: one draw, cancel in `[0, cancel_rate)`, stuck in
    /// the next `stuck_rate`. Always drawn, so the fates of later orders do not depend on
    /// scripted ones.
    pub fn fate_draw(&mut self) -> f64 {
        self.rng.random()
    }
}

/// `--rate-limit`: a token bucket holding at most one second's worth of requests.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Takes a token if one is left; false means the request is over the limit.
    pub fn take(&mut self, rate: u32, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * f64::from(rate);
        self.tokens = (self.tokens + refill).min(f64::from(rate));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
