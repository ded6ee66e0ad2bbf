//! `/sim/...`: the test and demo harness's own endpoints. No key: the simulator listens on
//! loopback and these are not part of Mirakl's API.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::catalogue::MAX_LINES;
use super::order::render;
use super::routes::ApiError;
use super::{OrderSpec, Shared};

/// Largest batch `POST /sim/orders` creates at once, so a typo cannot exhaust memory.
const MAX_BATCH: usize = 1_000_000;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/orders", post(add_orders))
        .route("/sim/orders/{order_id}", get(show_order))
        .route("/sim/stats", get(stats))
        .route("/sim/rate-limit", post(set_rate_limit))
}

/// `{"per_second": N}` (0 throttles everything) or `{"per_second": null}` (no limit).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimit {
    per_second: Option<u32>,
}

async fn set_rate_limit(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: RateLimit = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad(format!("invalid body: {error}")),
    };
    sim.lock().set_rate_limit(request.per_second);
    Json(json!({ "per_second": request.per_second })).into_response()
}

/// Either `{"count": N}` (random orders) or `{"orders": [OrderSpec, ...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddOrders {
    count: Option<usize>,
    orders: Option<Vec<OrderSpec>>,
}

fn bad(message: impl Into<String>) -> Response {
    ApiError::bad_request("VALIDATION_ERROR", message).into_response()
}

async fn add_orders(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: AddOrders = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad(format!("invalid body: {error}")),
    };
    let specs = match (request.count, request.orders) {
        (Some(count), None) if count <= MAX_BATCH => vec![OrderSpec::default(); count],
        (Some(_), None) => return bad(format!("count: at most {MAX_BATCH}")),
        (None, Some(specs)) if specs.len() <= MAX_BATCH => specs,
        (None, Some(_)) => return bad(format!("orders: at most {MAX_BATCH}")),
        _ => return bad("give exactly one of count and orders"),
    };
    if let Some(problem) = specs.iter().find_map(|spec| {
        problem(spec).map(|problem| format!("{problem} (order {:?})", spec.order_id))
    }) {
        return bad(problem);
    }
    Json(json!({ "order_ids": sim.add_orders(specs) })).into_response()
}

/// What is wrong with a scripted order, if anything; the in-process API clamps instead.
fn problem(spec: &OrderSpec) -> Option<String> {
    if spec
        .lines
        .is_some_and(|lines| !(1..=MAX_LINES).contains(&lines))
    {
        return Some(format!("lines must be between 1 and {MAX_LINES}"));
    }
    let items = spec.items.as_deref()?;
    if !(1..=MAX_LINES as usize).contains(&items.len()) {
        return Some(format!(
            "items must hold between 1 and {MAX_LINES} lines, not {}",
            items.len()
        ));
    }
    items.iter().enumerate().find_map(|(at, item)| {
        let line = at + 1;
        if item.sku.trim().is_empty() {
            Some(format!("item {line}: sku must not be empty"))
        } else if item.quantity == 0 {
            Some(format!(
                "item {line} ({}): quantity must be at least 1",
                item.sku
            ))
        } else if item
            .unit_price
            .is_some_and(|price| !price.is_finite() || price < 0.0)
        {
            Some(format!(
                "item {line} ({}): unit_price must be a price of 0 or more",
                item.sku
            ))
        } else {
            None
        }
    })
}

async fn show_order(State(sim): State<Arc<Shared>>, Path(order_id): Path<String>) -> Response {
    match sim.snapshot(&order_id) {
        Some((content, status)) => {
            let dates = status.dates();
            Json(render(&content, &status, &dates)).into_response()
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "ORDER_NOT_FOUND",
            format!("Order {order_id} not found"),
        )
        .into_response(),
    }
}

async fn stats(State(sim): State<Arc<Shared>>) -> Response {
    Json(sim.stats()).into_response()
}
