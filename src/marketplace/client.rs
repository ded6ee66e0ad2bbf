//! The one client everything talks to the marketplace through.
//!
//! Every call goes the same way: build the URL, then up to `retry.attempts` attempts, each of
//! which waits at its endpoint group's rate gate, sends one request, reads the body within its
//! size cap, decides what the answer means, and writes its `api_calls` row before anything is
//! returned. Only transient errors that cannot have changed anything are retried; everything
//! else goes back to the caller at once. A throttled answer closes the gate for every call of
//! the group (see `gate.rs`).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use mirakl_wire::{AcceptBody, AcceptLine};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, redirect};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::PgPool;
use url::Url;

use super::error::{Endpoint, MarketplaceError};
use super::gate::{Gate, Refused};
use super::path::{encode_segment, sendable_id};
use super::retry::{RetryPolicy, RetrySchedule, retry_after};
use super::shared;
use super::types::{Account, LineDecision, Order, OrderState, OrdersPage, OrdersRead};
use crate::config::{ApiCallsSettings, MarketplaceSettings};
use crate::db::api_calls::{self, NewApiCall};
use crate::redact;

/// OR11 returns at most 100 orders per call and accepts at most 100 `order_ids`.
const OR11_MAX: usize = 100;
/// How much of an unexpected body an error keeps: enough to recognise an HTML error page.
const ERROR_BODY_BYTES: usize = 4 * 1024;

#[derive(Clone)]
pub struct MarketplaceClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    shop_id: Option<String>,
    /// Written to `api_calls.service`.
    service: String,
    /// The shop whose key this client holds: its name on every `api_calls` and `rate_gates` row.
    shop: String,
    retry: RetryPolicy,
    gate: Gate,
    timeout: Duration,
    pool: PgPool,
    max_response_bytes: usize,
    max_stored_body_bytes: usize,
    calls: AtomicU64,
    /// Written to `rate_gates.updated_by`: which process shared a gate's state.
    replica: String,
}

/// Shows where the client points, never the key.
impl fmt::Debug for MarketplaceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarketplaceClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("shop_id", &self.inner.shop_id)
            .field("service", &self.inner.service)
            .field("shop", &self.inner.shop)
            .field("calls_made", &self.calls_made())
            .finish_non_exhaustive()
    }
}

/// One logical call; its attempts share it.
struct Call<'a> {
    endpoint: Endpoint,
    method: Method,
    url: Url,
    /// The order the call is about: named in errors and stored as `api_calls.related_id`.
    order_id: Option<&'a str>,
    /// `api_calls.request_payload`: the JSON body, or the query parameters of a GET.
    payload: Value,
    body: Option<Vec<u8>>,
    /// Asked right before each attempt goes out, after the rate gate: an `Err` stops the call
    /// unsent. How OR21 is fenced to the run that holds the order.
    fence: Option<&'a Fence<'a>>,
}

/// Whether the caller may still send; the reason when not.
pub type Fence<'a> = dyn Fn() -> Result<(), String> + Sync + 'a;

impl Call<'_> {
    /// A GET about no single order; its query parameters are what `api_calls` keeps.
    fn get(endpoint: Endpoint, url: Url) -> Self {
        Call {
            endpoint,
            method: Method::GET,
            payload: query_payload(&url),
            url,
            order_id: None,
            body: None,
            fence: None,
        }
    }
}

/// What one attempt got back before anything is decided.
enum Exchange {
    /// No response at all: connect error, timeout before the headers, broken connection.
    NoResponse(reqwest::Error),
    Response {
        status: StatusCode,
        headers: HeaderMap,
        /// As much of the body as was read (never more than the cap).
        body: Vec<u8>,
        over_cap: bool,
        read_error: Option<reqwest::Error>,
    },
}

/// A failed attempt, with the wait the marketplace asked for if it did.
struct Failure {
    error: MarketplaceError,
    retry_after: Option<Duration>,
    /// A 429, or a 503 with `Retry-After`: the marketplace asks every call to hold back.
    throttled: bool,
}

impl From<MarketplaceError> for Failure {
    fn from(error: MarketplaceError) -> Self {
        Failure {
            error,
            retry_after: None,
            throttled: false,
        }
    }
}

/// What a call does after a failed attempt.
enum Next {
    Retry,
    GiveUp(MarketplaceError),
}

impl MarketplaceClient {
    /// The default shop's client (`[marketplace]`).
    pub fn new(
        settings: &MarketplaceSettings,
        api_calls: &ApiCallsSettings,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        Self::for_shop(crate::config::ShopName::DEFAULT, settings, api_calls, pool)
    }

    /// The client of shop `shop`, with its own key, rate gate and pace.
    pub fn for_shop(
        shop: &str,
        settings: &MarketplaceSettings,
        api_calls: &ApiCallsSettings,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        let base_url = settings.url.clone();
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            bail!(
                "marketplace.url {base_url} is not an http(s) base URL; give one like https://marketplace.bestbuy.ca"
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(default_headers(&settings.api_key)?)
            .user_agent(concat!("order-acceptance/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            // An API does not redirect; following one could carry the key to another host or
            // turn a PUT into a GET. A 3xx is reported instead.
            .redirect(redirect::Policy::none())
            .build()
            .context("building the marketplace HTTP client")?;
        Ok(MarketplaceClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                shop_id: settings.shop_id.clone(),
                service: settings.name.clone(),
                shop: shop.to_string(),
                retry: RetryPolicy::new(&settings.retry),
                gate: Gate::new(&settings.gate)
                    .reading_the_shop(shared::shop_answers(pool.clone(), shop.to_string()))
                    .labelled(shop),
                timeout: settings.timeout,
                pool,
                max_response_bytes: settings.max_response_bytes,
                max_stored_body_bytes: api_calls.max_body_bytes,
                calls: AtomicU64::new(0),
                replica: replica_name(),
            }),
        })
    }

    /// OR11 by order_ids (the readable orders; see [`Self::read_orders`]), split into chunks of at most 100 (paginate=false AND max=chunk size);
    /// returns the orders asked for that were found (missing ids are simply absent, anything
    /// else OR11 lists is dropped).
    ///
    /// `order_ids` is a comma-separated list, so an id with a comma in it would be read as two
    /// and could push a real order out of the chunk's `max`: such an id is read on its own.
    pub async fn orders_by_ids(&self, ids: &[String]) -> Result<Vec<Order>, MarketplaceError> {
        self.read_orders(ids).await.map(|read| read.orders)
    }

    /// [`Self::orders_by_ids`], with the orders listed that cannot be read reported beside.
    pub async fn read_orders(&self, ids: &[String]) -> Result<OrdersRead, MarketplaceError> {
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| seen.insert(*id))
            .collect();
        let (alone, batched): (Vec<&str>, Vec<&str>) =
            unique.iter().partition(|id| id.contains(','));
        let chunks = batched
            .chunks(OR11_MAX)
            .chain(alone.chunks(1))
            .filter(|chunk| !chunk.is_empty());
        let mut read = OrdersRead::default();
        for chunk in chunks {
            let listed = chunk.join(",");
            // However the marketplace splits the list, at most this many orders answer it.
            let max = listed.split(',').count().clamp(1, OR11_MAX);
            // Both, because OR11 pages by 10 by default and ignores `max` for nothing else.
            let query = [
                ("order_ids", listed),
                ("paginate", "false".to_owned()),
                ("max", max.to_string()),
            ];
            let page = self.list_orders(&query).await?;
            let asked = |id: &str| chunk.contains(&id);
            read.orders.extend(
                page.orders
                    .into_iter()
                    .filter(|order| asked(&order.order_id)),
            );
            read.unreadable.extend(
                page.unreadable
                    .into_iter()
                    .filter(|order| order.order_id.as_deref().is_some_and(asked)),
            );
        }
        Ok(read)
    }

    /// One OR11 page: order_state_codes=comma list, max=100, offset, sort=dateCreated,
    /// order=asc, paginate=true.
    pub async fn orders_in_states_page(
        &self,
        states: &[OrderState],
        offset: u64,
    ) -> Result<OrdersPage, MarketplaceError> {
        let codes: Vec<&str> = states.iter().map(OrderState::as_str).collect();
        let query = [
            ("order_state_codes", codes.join(",")),
            ("paginate", "true".to_owned()),
            ("max", OR11_MAX.to_string()),
            ("offset", offset.to_string()),
            ("sort", "dateCreated".to_owned()),
            ("order", "asc".to_owned()),
        ];
        self.list_orders(&query).await
    }

    /// OR21: accepts or refuses each line as decided (all refused refuses the order). 204 is the
    /// only success.
    /// OR21, each attempt sent only while `fence` allows it.
    pub async fn accept_order(
        &self,
        order_id: &str,
        decisions: &[LineDecision],
        fence: &Fence<'_>,
    ) -> Result<(), MarketplaceError> {
        sendable_id(order_id).map_err(|reason| MarketplaceError::Unsendable {
            order_id: order_id.to_owned(),
            reason,
        })?;
        let body = AcceptBody {
            order_lines: decisions
                .iter()
                .map(|line| AcceptLine {
                    id: line.order_line_id.clone(),
                    accepted: line.accepted,
                })
                .collect(),
        };
        let payload = json!(body);
        let call = Call {
            endpoint: Endpoint::OR21,
            method: Method::PUT,
            url: self.url(&["api", "orders", order_id, "accept"], &[]),
            order_id: Some(order_id),
            body: Some(payload.to_string().into_bytes()),
            payload,
            fence: Some(fence),
        };
        self.send(&call, |status, _body| {
            if status == StatusCode::NO_CONTENT {
                Ok(())
            } else {
                Err(format!("expected 204 No Content, got HTTP {status}"))
            }
        })
        .await
    }

    /// A01: GET /api/account.
    pub async fn account(&self) -> Result<Account, MarketplaceError> {
        let call = Call::get(Endpoint::A01, self.url(&["api", "account"], &[]));
        self.send(&call, |_status, body| Account::from_json(parse_json(body)?))
            .await
    }

    /// The shop whose key this client holds.
    pub fn shop(&self) -> &str {
        &self.inner.shop
    }

    /// HTTP attempts made by this client (and its clones) so far, retries included.
    pub fn calls_made(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The pace learned for the endpoint group from the marketplace's 429s (by this process
    /// or taken from another replica), in requests per second.
    pub fn learned_rate(&self, endpoint: Endpoint) -> Option<f64> {
        self.inner.gate.learned_rate(endpoint)
    }

    /// How many times the endpoint group's rate gate has closed in this process.
    pub fn gate_closings(&self, endpoint: Endpoint) -> u64 {
        self.inner.gate.closings(endpoint)
    }

    /// The throttling events the OR21 concurrency follows: the closings taken for a rate
    /// limit (every closing with `marketplace.learn_pace` off).
    pub fn throttlings(&self, endpoint: Endpoint) -> u64 {
        self.inner.gate.throttlings(endpoint)
    }

    /// Time this process's rate gates have been closed so far: the part of an order's work
    /// that is the marketplace's wait, not the order's.
    pub fn time_at_closed_gates(&self) -> Duration {
        self.inner.gate.closed_time()
    }

    /// Gives a new run the whole `marketplace.retry_after_ceiling` for waits at closed gates,
    /// and takes what the shop's other replicas share: closings under way, paces learned.
    pub async fn start_run(&self) {
        self.inner.gate.start_run();
        shared::load(&self.inner.gate, &self.inner.pool, &self.inner.shop, None).await;
    }

    async fn list_orders(&self, query: &[(&str, String)]) -> Result<OrdersPage, MarketplaceError> {
        let call = Call::get(Endpoint::OR11, self.url(&["api", "orders"], query));
        self.send(&call, |_status, body| OrdersPage::from_body(body))
            .await
    }

    /// Base URL (with or without a trailing slash or a path prefix) + segments, each
    /// percent-encoded so it reads back as itself (see `path.rs`), + the query, + `shop_id`
    /// when configured.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.inner.base_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        let mut path = url.path().trim_end_matches('/').to_owned();
        for segment in segments {
            path.push('/');
            path.push_str(&encode_segment(segment));
        }
        url.set_path(&path);
        let shop_id = self.inner.shop_id.as_deref().map(|id| ("shop_id", id));
        let pairs = query.iter().map(|(k, v)| (*k, v.as_str())).chain(shop_id);
        let mut pairs = pairs.peekable();
        if pairs.peek().is_some() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url
    }

    /// Runs a call's attempts until one succeeds, an error is not worth retrying, or the
    /// retry schedule is used up.
    async fn send<T>(
        &self,
        call: &Call<'_>,
        parse: impl Fn(StatusCode, &[u8]) -> Result<T, String>,
    ) -> Result<T, MarketplaceError> {
        let mut schedule = self.inner.retry.start();
        let mut attempt = 1;
        loop {
            let shared_since_run_start = shared::load(
                &self.inner.gate,
                &self.inner.pool,
                &self.inner.shop,
                Some(call.endpoint),
            );
            self.inner
                .gate
                .first_call_of_run(call.endpoint, shared_since_run_start)
                .await;
            if self.inner.gate.recount_due(call.endpoint) {
                shared::count_replicas(&self.inner.gate, &self.inner.pool, &self.inner.shop).await;
            }
            let pass = match self.inner.gate.pass(call.endpoint).await {
                Ok(pass) => pass,
                Err(refused) => return Err(held_too_long(call, refused)),
            };
            schedule.waited_at_gate(pass.waited);
            if pass.learned {
                self.share(call.endpoint).await;
            }
            if let Some(Err(reason)) = call.fence.map(|may_send| may_send()) {
                return Err(MarketplaceError::Fenced {
                    endpoint: call.endpoint,
                    order_id: call.order_id.map(str::to_owned),
                    reason,
                });
            }
            let result = self.attempt(call, attempt, &parse).await;
            let failure = match result {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let next = if failure.throttled {
                self.after_throttling(call, failure, pass.sent_at, &mut schedule)
                    .await
            } else {
                self.after_failure(call, attempt, failure, &mut schedule)
                    .await
            };
            if let Next::GiveUp(error) = next {
                return Err(error);
            }
            attempt += 1;
        }
    }

    /// A throttled answer closes the gate for the whole group. It uses up an attempt only when
    /// it starts a new closing: a request already on its way when the gate closed was answered
    /// for the same reason, and simply waits with the others.
    async fn after_throttling(
        &self,
        call: &Call<'_>,
        failure: Failure,
        sent_at: Instant,
        schedule: &mut RetrySchedule,
    ) -> Next {
        let asked = failure.retry_after.filter(|wait| !wait.is_zero());
        let wait = if self.inner.gate.closed_since(call.endpoint, sent_at) {
            schedule.within_budget().then(|| asked.unwrap_or_default())
        } else {
            schedule.next_closing(asked)
        };
        // Even a call that gives up closes the gate: the others must hold back all the same.
        let closed = self
            .inner
            .gate
            .close(call.endpoint, wait.or(asked).unwrap_or_default());
        if matches!(closed, Ok(true)) {
            // Counted now, so the verdict when the gate reopens and the pace after it are
            // shared among the replicas running then.
            shared::count_replicas(&self.inner.gate, &self.inner.pool, &self.inner.shop).await;
            self.share(call.endpoint).await;
        }
        match (wait, closed) {
            (_, Err(refused)) => Next::GiveUp(held_too_long(call, refused)),
            (None, Ok(_)) => Next::GiveUp(failure.error),
            (Some(_), Ok(_)) => Next::Retry,
        }
    }

    /// Tells the other replicas what this process learned of the group.
    async fn share(&self, endpoint: Endpoint) {
        shared::save(
            &self.inner.gate,
            &self.inner.pool,
            &self.inner.shop,
            endpoint,
            &self.inner.replica,
        )
        .await;
    }

    /// Any other failure: retried after a back-off sleep when it is transient and cannot have
    /// changed anything.
    async fn after_failure(
        &self,
        call: &Call<'_>,
        attempt: u32,
        failure: Failure,
        schedule: &mut RetrySchedule,
    ) -> Next {
        // An OR21 that may have taken effect is not re-sent blind: the caller re-reads it.
        let retryable = failure.error.is_transient() && !failure.error.may_have_taken_effect();
        let delay = if retryable {
            schedule.next_delay(failure.retry_after)
        } else {
            None
        };
        let Some(delay) = delay else {
            return Next::GiveUp(failure.error);
        };
        tracing::warn!(
            endpoint = %call.endpoint,
            order_id = call.order_id,
            attempt,
            delay_ms = delay.as_millis() as u64,
            retry_after = failure.retry_after.is_some(),
            error = %failure.error,
            "marketplace call failed; retrying"
        );
        tokio::time::sleep(delay).await;
        Next::Retry
    }

    /// One HTTP attempt: send, read, decide, record.
    ///
    /// An OR21 is recorded before it is sent and completed with its answer, so one whose answer
    /// never came back (the database went away, the shutdown grace ran out) still has its row;
    /// when that row cannot be written, the OR21 is not sent.
    async fn attempt<T>(
        &self,
        call: &Call<'_>,
        attempt: u32,
        parse: &impl Fn(StatusCode, &[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let recorded_first = match call.method == Method::PUT {
            true => Some(self.record_before_sending(call, attempt).await?),
            false => None,
        };
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let exchange = self.exchange(call).await;
        let duration = started.elapsed();
        let result = self.decide(call, &exchange, parse);
        // Counted as it arrives (not after its api_calls row): the learner judges a closing by
        // the answers around it, those still in flight included. Only a 429 is a throttled
        // answer and only one under 500 a served one, as in the shop's `api_calls` count: a 503
        // (even with Retry-After) or a timeout says nothing of a rate limit.
        if let Exchange::Response { status, .. } = &exchange {
            match status.as_u16() {
                429 => self.inner.gate.answered(call.endpoint, true),
                0..500 => self.inner.gate.answered(call.endpoint, false),
                _ => {}
            }
        }
        self.record(call, attempt, duration, &exchange, &result, recorded_first)
            .await;
        result
    }

    /// The `api_calls` row of a call about to be sent: no status, and an error saying the
    /// answer was never recorded, until [`Self::record`] completes it.
    async fn record_before_sending(&self, call: &Call<'_>, attempt: u32) -> Result<i64, Failure> {
        let path = path_and_query(&call.url);
        let row = NewApiCall {
            service: &self.inner.service,
            shop: &self.inner.shop,
            endpoint: call.endpoint.as_str(),
            related_id: call.order_id,
            method: call.method.as_str(),
            path: &path,
            request_payload: Some(&call.payload),
            response_body: None,
            response_truncated: false,
            status_code: None,
            is_success: false,
            duration_ms: None,
            attempt,
            error: Some(api_calls::UNANSWERED),
        };
        api_calls::insert(&self.inner.pool, &row)
            .await
            .map_err(|err| {
                let detail = format!(
                    "not sent: its api_calls row could not be written first ({})",
                    redact::scrub(&err.to_string())
                );
                MarketplaceError::Transient {
                    endpoint: call.endpoint,
                    order_id: call.order_id.map(str::to_owned),
                    detail,
                    may_have_taken_effect: false,
                }
                .into()
            })
    }

    async fn exchange(&self, call: &Call<'_>) -> Exchange {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone());
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Exchange::NoResponse(err),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let cap = self.inner.max_response_bytes;
        let mut body = Vec::new();
        let mut over_cap = response
            .content_length()
            .is_some_and(|len| len > cap as u64);
        let mut read_error = None;
        // Chunk by chunk, so an endless or huge body costs at most the cap in memory.
        while !over_cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        over_cap = true;
                    } else {
                        body.extend_from_slice(&chunk);
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    read_error = Some(err);
                    break;
                }
            }
        }
        // A marketplace that echoes the key (or any configured secret) gets it masked before
        // the body is parsed, stored, logged or quoted in an error.
        if let std::borrow::Cow::Owned(scrubbed) = redact::scrub_bytes(&body) {
            body = scrubbed;
        }
        Exchange::Response {
            status,
            headers,
            body,
            over_cap,
            read_error,
        }
    }

    /// What an exchange means for the caller.
    fn decide<T>(
        &self,
        call: &Call<'_>,
        exchange: &Exchange,
        parse: &impl Fn(StatusCode, &[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let put = call.method == Method::PUT;
        let order_id = call.order_id.map(str::to_owned);
        let transient = |detail: String, may_have_taken_effect: bool| MarketplaceError::Transient {
            endpoint: call.endpoint,
            order_id: order_id.clone(),
            detail,
            may_have_taken_effect,
        };
        let (status, headers, body, over_cap, read_error) = match exchange {
            Exchange::NoResponse(err) => {
                // Refused or unreachable: the request never left. Anything later may have
                // reached the marketplace.
                let taken = put && !err.is_connect();
                return Err(transient(self.describe(err), taken).into());
            }
            Exchange::Response {
                status,
                headers,
                body,
                over_cap,
                read_error,
            } => (*status, headers, body.as_slice(), *over_cap, read_error),
        };

        if status.is_success() {
            if let Some(err) = read_error {
                let detail = format!("HTTP {status}, then {}", self.describe(err));
                return Err(transient(detail, put).into());
            }
            let malformed = |detail: String| MarketplaceError::Malformed {
                endpoint: call.endpoint,
                order_id: order_id.clone(),
                detail,
                body: lossy_prefix(body, ERROR_BODY_BYTES),
            };
            if over_cap {
                let detail = format!(
                    "the body is larger than marketplace.max_response_bytes ({} bytes)",
                    self.inner.max_response_bytes
                );
                return Err(malformed(detail).into());
            }
            return parse(status, body).map_err(|detail| malformed(detail).into());
        }

        let (code, message) = error_fields(body);
        let retry_after = retry_after(headers, SystemTime::now());
        let error = match status.as_u16() {
            401 | 403 => MarketplaceError::Unauthorized {
                endpoint: call.endpoint,
                status: status.as_u16(),
                shop: self.inner.shop.clone(),
            },
            400 if code.as_deref() == Some("ORDER_INVALID_STATE")
                || message.contains("ORDER_INVALID_STATE") =>
            {
                match call.order_id {
                    Some(id) => MarketplaceError::InvalidState {
                        order_id: id.to_owned(),
                        code: "ORDER_INVALID_STATE".to_owned(),
                        message,
                    },
                    None => rejected(call, status, code, message),
                }
            }
            404 => MarketplaceError::NotFound {
                endpoint: call.endpoint,
                order_id,
                code,
                message,
            },
            429 => {
                let detail = format!("HTTP 429 Too Many Requests (rate limited): {message}");
                return Err(Failure {
                    error: transient(detail, false),
                    retry_after,
                    throttled: true,
                });
            }
            // 503 means the service did not take the request on.
            503 => {
                let detail = format!("HTTP 503 Service Unavailable: {message}");
                return Err(Failure {
                    error: transient(detail, false),
                    retry_after,
                    throttled: retry_after.is_some(),
                });
            }
            500..=599 => {
                let detail = format!("HTTP {status}: {message}");
                return Err(Failure {
                    error: transient(detail, put),
                    retry_after,
                    throttled: false,
                });
            }
            300..=399 => {
                let location = headers
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("nowhere");
                let message = format!(
                    "redirected to {location}; set marketplace.url to the API's own address"
                );
                rejected(call, status, code, message)
            }
            _ => rejected(call, status, code, message),
        };
        Err(error.into())
    }

    /// Writes the attempt's `api_calls` row and its metrics and debug log. A failed insert is
    /// logged and otherwise ignored: losing an audit row must not turn an accepted order into
    /// a failure.
    async fn record<T>(
        &self,
        call: &Call<'_>,
        attempt: u32,
        duration: Duration,
        exchange: &Exchange,
        result: &Result<T, Failure>,
        recorded_first: Option<i64>,
    ) {
        let (status, body, over_cap) = match exchange {
            Exchange::NoResponse(_) => (None, None, false),
            Exchange::Response {
                status,
                body,
                over_cap,
                ..
            } => (Some(*status), Some(body.as_slice()), *over_cap),
        };
        let text = body.map(String::from_utf8_lossy);
        let (stored, cut) = match &text {
            Some(text) => {
                let (stored, cut) = api_calls::cut_body(text, self.inner.max_stored_body_bytes);
                (Some(stored), cut)
            }
            None => (None, false),
        };
        let error = result
            .as_ref()
            .err()
            .map(|failure| redact::scrub(&failure.error.to_string()).into_owned());
        let path = path_and_query(&call.url);

        let endpoint = call.endpoint.as_str();
        let status_class = match status.map(|s| s.as_u16()) {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        metrics::counter!("marketplace_api_calls_total", "endpoint" => endpoint, "status_class" => status_class, "shop" => self.inner.shop.clone())
            .increment(1);
        metrics::histogram!("marketplace_api_call_duration_seconds", "endpoint" => endpoint, "shop" => self.inner.shop.clone())
            .record(duration.as_secs_f64());
        tracing::debug!(
            endpoint,
            method = %call.method,
            path = %path,
            order_id = call.order_id,
            attempt,
            status = status.map(|s| s.as_u16()),
            duration_ms = duration.as_millis() as u64,
            "marketplace request"
        );

        let row = NewApiCall {
            service: &self.inner.service,
            shop: &self.inner.shop,
            endpoint,
            related_id: call.order_id,
            method: call.method.as_str(),
            path: &path,
            request_payload: Some(&call.payload),
            response_body: stored,
            response_truncated: cut || over_cap,
            status_code: status.map(|s| s.as_u16()),
            is_success: result.is_ok(),
            duration_ms: Some(duration.as_millis().try_into().unwrap_or(u64::MAX)),
            attempt,
            error: error.as_deref(),
        };
        let written = match recorded_first {
            Some(call_id) => api_calls::complete(&self.inner.pool, call_id, &row).await,
            None => api_calls::insert(&self.inner.pool, &row).await.map(drop),
        };
        if let Err(err) = written {
            tracing::error!(
                endpoint,
                order_id = call.order_id,
                attempt,
                error = %err,
                "could not record the marketplace call in api_calls; carrying on without the row"
            );
        }
    }

    /// A transport error in words, with its causes (reqwest's own message is only the top).
    fn describe(&self, err: &reqwest::Error) -> String {
        let what = if err.is_timeout() {
            format!(
                "no complete answer within marketplace.timeout ({})",
                humantime::format_duration(self.inner.timeout)
            )
        } else if err.is_connect() {
            format!(
                "cannot connect to {}",
                self.inner.base_url.origin().ascii_serialization()
            )
        } else if err.is_body() {
            "the response body could not be read".to_owned()
        } else {
            "the request failed".to_owned()
        };
        // reqwest's own top message repeats the URL with every order id in it; the causes
        // below it say what went wrong.
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        if causes.is_empty() {
            what
        } else {
            format!("{what} ({})", causes.join(": "))
        }
    }
}

/// Path and query as sent, for `api_calls.path` and the debug log.
fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// This process, as `rate_gates.updated_by` names it: host and process id.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".to_owned());
    let host: String = host.chars().take(64).collect();
    format!("{host}/{}", std::process::id())
}

/// A call the gate would hold past `marketplace.retry_after_ceiling`: nothing was changed.
fn held_too_long(call: &Call<'_>, refused: Refused) -> MarketplaceError {
    MarketplaceError::Transient {
        endpoint: call.endpoint,
        order_id: call.order_id.map(str::to_owned),
        detail: refused.describe(),
        may_have_taken_effect: false,
    }
}

fn default_headers(api_key: &SecretString) -> anyhow::Result<HeaderMap> {
    let mut key = HeaderValue::from_str(api_key.expose_secret()).map_err(|_| {
        anyhow::anyhow!(
            "marketplace.api_key contains characters an HTTP header cannot carry; check the value of MARKETPLACE_API_KEY"
        )
    })?;
    // Keeps the key out of reqwest's Debug output and out of HTTP/2 header compression tables.
    key.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, key);
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// A GET's query parameters as a JSON object, for `api_calls.request_payload`.
fn query_payload(url: &Url) -> Value {
    let params: serde_json::Map<String, Value> = url
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), Value::String(value.into_owned())))
        .collect();
    Value::Object(params)
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|err| {
        if body.is_empty() {
            "the body is empty".to_owned()
        } else {
            format!("the body is not valid JSON ({err})")
        }
    })
}

/// Mirakl's `code` and `message` from an error body, top level or in an `errors` list; the
/// start of the body when it is not JSON.
fn error_fields(body: &[u8]) -> (Option<String>, String) {
    let text_of =
        |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let first = value.get("errors").and_then(|errors| errors.get(0));
        let code = text_of(&value, "code").or_else(|| first.and_then(|e| text_of(e, "code")));
        let message = text_of(&value, "message")
            .or_else(|| first.and_then(|e| text_of(e, "message")))
            .unwrap_or_else(|| lossy_prefix(body, 500));
        return (code, message);
    }
    if body.is_empty() {
        (None, "(empty body)".to_owned())
    } else {
        (None, lossy_prefix(body, 500))
    }
}

fn rejected(
    call: &Call<'_>,
    status: StatusCode,
    code: Option<String>,
    message: String,
) -> MarketplaceError {
    MarketplaceError::Rejected {
        endpoint: call.endpoint,
        order_id: call.order_id.map(str::to_owned),
        status: status.as_u16(),
        code,
        message,
    }
}

/// The start of a body as text, cut on a character boundary.
fn lossy_prefix(body: &[u8], max_bytes: usize) -> String {
    let text = String::from_utf8_lossy(body);
    api_calls::cut_body(&text, max_bytes).0.to_owned()
}
