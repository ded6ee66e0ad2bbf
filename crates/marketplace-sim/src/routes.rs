//! The Mirakl endpoints (OR11, OR21, A01) and the gate every `/api` request passes: request
//! counting, latency, the API key and the rate limit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, put};
use chrono::{DateTime, Utc};
use mirakl_wire::{AcceptBody, AcceptLine, OrdersPage};
use serde_json::json;

use super::Shared;
use super::control;
use super::faults::{self, Endpoint, Injected};
use super::order::{AcceptError, Dates, render};
use super::state::Listing;

/// Mirakl's limit on `order_ids` and on `max`.
const MAX_PAGE: usize = 100;
/// Mirakl's default page size.
const DEFAULT_MAX: usize = 10;

/// A Mirakl error: `{"status": 400, "code": "ORDER_INVALID_STATE", "message": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status.as_u16(),
            "code": self.code,
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

pub(crate) fn router(sim: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/orders", get(or11))
        .route("/api/orders/{order_id}/accept", put(or21))
        .route("/api/account", get(a01))
        .merge(control::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&sim), gate))
        .layer(middleware::from_fn(log_request))
        .with_state(sim)
}

fn classify(method: &Method, path: &str) -> Endpoint {
    let or21 = path
        .strip_prefix("/api/orders/")
        .and_then(|rest| rest.strip_suffix("/accept"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    match (method, path) {
        (&Method::GET, "/api/orders") => Endpoint::Or11,
        (&Method::GET, "/api/account") => Endpoint::A01,
        (&Method::PUT, _) if or21 => Endpoint::Or21,
        _ => Endpoint::Other,
    }
}

/// Every `/api` request: counted, delayed by `--latency`, then refused without the exact key
/// (Mirakl takes the raw key, no `Bearer`) or over `--rate-limit`. `/sim` passes untouched.
async fn gate(State(sim): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != "/api" && !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let endpoint = classify(request.method(), path);
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|key| key.as_bytes() == sim.config.key.as_bytes());
    let (delay, limited) = {
        let mut state = sim.lock();
        state.count_request(if authorized {
            endpoint.key()
        } else {
            "unauthorized"
        });
        let delay = state.dice.latency(&sim.config.faults);
        if delay.is_some() {
            state.count_fault("latency");
        }
        let limited = authorized && !state.within_rate_limit(endpoint, Instant::now());
        (delay, limited)
    };
    if let Some(delay) = delay {
        sim.pause(delay).await;
    }
    if !authorized {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Full authentication is required to access this resource",
        )
        .into_response();
    }
    if limited {
        return faults::throttled(&sim.config.faults);
    }
    next.run(request).await
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "No such resource")
}

/// A path under no marketplace of a simulator serving several: says where they are.
pub(crate) async fn no_marketplace(names: Vec<String>) -> ApiError {
    let at: Vec<String> = names.iter().map(|name| format!("/{name}")).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "No such resource: this simulator serves its marketplaces under {}",
            at.join(", ")
        ),
    )
}

fn split(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("VALIDATION_ERROR", message)
}

fn parse_listing(query: Option<&str>) -> Result<Listing, ApiError> {
    let mut order_ids: Vec<String> = Vec::new();
    let mut states: HashSet<String> = HashSet::new();
    let mut paginate = true;
    let mut max = DEFAULT_MAX;
    let mut offset = 0;
    let mut descending = false;
    let mut start_update = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "order_ids" => order_ids.extend(split(&value)),
            "order_state_codes" => states.extend(split(&value)),
            "paginate" => {
                paginate = value.parse().map_err(|_| {
                    invalid(format!("paginate must be true or false, not {value:?}"))
                })?;
            }
            "max" => {
                max = value
                    .parse()
                    .map_err(|_| invalid(format!("max must be a number, not {value:?}")))?;
            }
            "offset" => {
                offset = value
                    .parse()
                    .map_err(|_| invalid(format!("offset must be a number, not {value:?}")))?;
            }
            "sort" if value != "dateCreated" => {
                return Err(invalid(format!("sort must be dateCreated, not {value:?}")));
            }
            "order" => {
                descending = match value.as_ref() {
                    "asc" => false,
                    "desc" => true,
                    other => {
                        return Err(invalid(format!("order must be asc or desc, not {other:?}")));
                    }
                };
            }
            "start_update_date" => {
                let date = DateTime::parse_from_rfc3339(&value).map_err(|_| {
                    invalid(format!("start_update_date must be ISO-8601, not {value:?}"))
                })?;
                start_update = Some(date.with_timezone(&Utc));
            }
            // Mirakl's other filters and shop_id: accepted, ignored.
            _ => {}
        }
    }
    if order_ids.len() > MAX_PAGE {
        return Err(invalid(format!(
            "order_ids accepts at most {MAX_PAGE} ids, got {}",
            order_ids.len()
        )));
    }
    if paginate && !(1..=MAX_PAGE).contains(&max) {
        return Err(invalid(format!(
            "max must be between 1 and {MAX_PAGE}, got {max}"
        )));
    }
    Ok(Listing {
        order_ids: (!order_ids.is_empty()).then_some(order_ids),
        states: (!states.is_empty()).then_some(states),
        start_update,
        page: paginate.then_some((offset, max)),
        descending,
    })
}

/// OR11 `GET /api/orders`.
async fn or11(State(sim): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let listing = match parse_listing(query.as_deref()) {
        Ok(listing) => listing,
        Err(error) => return error.into_response(),
    };
    let config = &sim.config;
    let (page, slow) = {
        let mut state = sim.lock();
        let page = state.list(&listing, Utc::now(), config.timing());
        let injected = match page.scripted {
            Some(scripted) => scripted,
            None => state.dice.fault(&config.faults, Endpoint::Or11),
        };
        match state.record(Endpoint::Or11, injected) {
            Some(Injected::Fail(failure)) => return failure.respond(&config.faults),
            injected => (page, injected == Some(Injected::Slow)),
        }
    };
    if slow {
        sim.pause(config.faults.slow_delay).await;
    }
    // Rendering is the expensive part: done without the lock.
    let dates: Vec<Dates> = page
        .orders
        .iter()
        .map(|(_, status)| status.dates())
        .collect();
    let orders = page
        .orders
        .iter()
        .zip(&dates)
        .map(|((content, status), dates)| render(content, status, dates))
        .collect();
    Json(OrdersPage {
        orders,
        total_count: page.total_count as u64,
    })
    .into_response()
}

fn parse_decisions(body: &[u8]) -> Result<Vec<(String, bool)>, ApiError> {
    let body: AcceptBody<Option<AcceptLine>> = serde_json::from_slice(body)
        .map_err(|error| invalid(format!("invalid request body: {error}")))?;
    body.order_lines
        .into_iter()
        .map(|line| {
            line.map(|line| (line.id, line.accepted)).ok_or_else(|| {
                ApiError::bad_request(
                    "ORDER_LINE_NULL_ELEMENT",
                    "order_lines contains a null element",
                )
            })
        })
        .collect()
}

fn accept_error(order_id: &str, error: AcceptError) -> ApiError {
    match error {
        AcceptError::OrderNotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "ORDER_NOT_FOUND",
            format!("Order {order_id} not found"),
        ),
        AcceptError::InvalidState(state) => ApiError::bad_request(
            "ORDER_INVALID_STATE",
            format!("Order {order_id} is in state {state}, not WAITING_ACCEPTANCE"),
        ),
        AcceptError::DuplicateLine(id) => ApiError::bad_request(
            "ORDER_LINE_DUPLICATE_ID",
            format!("Order line {id} appears more than once"),
        ),
        AcceptError::LineNotFound(id) => ApiError::bad_request(
            "ORDER_LINE_NOT_FOUND",
            format!("Order line {id} does not belong to order {order_id}"),
        ),
        AcceptError::DecisionMissing(ids) => ApiError::bad_request(
            "ORDER_LINE_ACCEPTANCE_DECISION_MISSING",
            format!("No decision for order lines {}", ids.join(", ")),
        ),
        AcceptError::PartialAcceptance => ApiError::bad_request(
            "ORDER_PARTIAL_ACCEPTANCE_DISABLED",
            "Partial acceptance is disabled for this shop: accept or refuse every line",
        ),
    }
}

/// OR21 `PUT /api/orders/{order_id}/accept`. An injected failure leaves the order untouched;
/// a slow answer applies the decision first.
async fn or21(
    State(sim): State<Arc<Shared>>,
    Path(order_id): Path<String>,
    body: Bytes,
) -> Response {
    let decisions = parse_decisions(&body);
    let config = &sim.config;
    let (result, slow) = {
        let mut state = sim.lock();
        let injected = state.or21_fault(config, &order_id);
        if let Some(Injected::Fail(failure)) = injected {
            return failure.respond(&config.faults);
        }
        let result = decisions.and_then(|decisions| {
            state
                .decide(config, &order_id, &decisions, Utc::now())
                .map_err(|error| accept_error(&order_id, error))
        });
        (result, injected == Some(Injected::Slow))
    };
    if slow {
        sim.pause(config.faults.slow_delay).await;
    }
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

/// A01 `GET /api/account`: the simulated shop, with the fields A01 requires.
async fn a01(State(sim): State<Arc<Shared>>) -> Response {
    let orders_count = {
        let mut state = sim.lock();
        let injected = state.dice.fault(&sim.config.faults, Endpoint::A01);
        if let Some(Injected::Fail(failure)) = state.record(Endpoint::A01, injected) {
            return failure.respond(&sim.config.faults);
        }
        state.order_count()
    };
    let address = json!({
        "city": "Toronto",
        "country_iso_code": "CAN",
        "state": "ON",
        "street_1": "1 Yonge Street",
        "street_2": null,
        "zip_code": "M5E 1E5",
    });
    Json(json!({
        "shop_id": 2000,
        "shop_name": "Simulated Shop",
        "shop_state": "OPEN",
        "model": "MARKETPLACE",
        "currency_iso_code": "CAD",
        "channels": [],
        "domains": ["PRODUCT"],
        "date_created": "2024-01-15T14:00:00Z",
        "last_updated_date": "2024-01-15T14:00:00Z",
        "description": "marketplace-sim: a Mirakl-compatible simulator",
        "billing_info": {},
        "contact_informations": {
            "civility": null,
            "firstname": "Sam",
            "lastname": "Seller",
            "email": "seller@example.com",
            "street1": "1 Yonge Street",
            "city": "Toronto",
            "state": "ON",
            "zip_code": "M5E 1E5",
            "country": "CAN",
        },
        "default_billing_information": {
            "id": "00000000-0000-4000-8000-000000002000",
            "default_language": "en_CA",
            "registration_address": address,
        },
        "evaluations_count": 0,
        "free_shipping": false,
        "is_professional": true,
        "offers_count": 8,
        "orders_count": orders_count,
        "payment_details": {
            "paid_balance": 0,
            "payable_balance": 0,
            "pending_balance": 0,
        },
        "payment_method_mandatory": false,
        "premium": false,
        "pro_details": {
            "corporate_name": "Simulated Shop Inc.",
            "identification_number": "000000000",
            "tax_identification_number": "000000000RT0001",
        },
        "shipping": { "lead_time_to_ship": 2 },
        "shipping_country": "CAN",
        "shipping_types": ["STD"],
        "shipping_zones": ["CA"],
        "shop_additional_fields": [],
    }))
    .into_response()
}
