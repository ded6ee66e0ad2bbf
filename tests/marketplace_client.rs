//! The marketplace client against a real HTTP server (wiremock) and a real PostgreSQL
//! (`#[sqlx::test]` gives each test a fresh migrated database).

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use order_acceptance::config::{
    ApiCallsSettings, GateSettings, MarketplaceSettings, RetrySettings,
};
use order_acceptance::marketplace::{
    Endpoint, LineDecision, MarketplaceClient, MarketplaceError, OrderState,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "k3y-Sup3r-S3cret-0000";

// Helpers -----------------------------------------------------------------------------------

fn settings(base: &str) -> MarketplaceSettings {
    MarketplaceSettings {
        url: url::Url::parse(base).unwrap(),
        api_key: SecretString::from(KEY),
        shop_id: None,
        name: "BestBuy".into(),
        timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(200),
        retry: RetrySettings {
            attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            budget: Duration::from_secs(5),
        },
        gate: GateSettings {
            retry_after_ceiling: Duration::from_secs(60),
            max_requests_per_second: None,
            learn_pace: false,
        },
        max_response_bytes: 64 * 1024,
        acceptance_window: Duration::from_secs(24 * 3600),
    }
}

fn api_calls_settings() -> ApiCallsSettings {
    ApiCallsSettings {
        retention: Duration::from_secs(30 * 86_400),
        max_body_bytes: 8 * 1024,
    }
}

fn client(settings: &MarketplaceSettings, pool: &PgPool) -> MarketplaceClient {
    MarketplaceClient::new(settings, &api_calls_settings(), pool.clone()).unwrap()
}

fn order_json(id: &str, state: &str) -> Value {
    json!({
        "order_id": id,
        "order_state": state,
        "created_date": "2026-01-05T10:00:00Z",
        "commercial_id": format!("C-{id}"),
        "order_lines": [
            {"order_line_id": format!("{id}-1"), "order_line_state": state, "quantity": 1},
            {"order_line_id": format!("{id}-2"), "order_line_state": state, "quantity": 2}
        ]
    })
}

fn or11_body(orders: Vec<Value>, total: u64) -> Value {
    json!({ "orders": orders, "total_count": total })
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("O-{i:04}")).collect()
}

/// Answers OR11 with one order per requested id.
struct EchoOrders;

impl Respond for EchoOrders {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        // A listing by state (no order_ids) finds nothing.
        let ids = query(request, "order_ids").unwrap_or_default();
        let orders: Vec<Value> = ids
            .split(',')
            .filter(|id| !id.is_empty())
            .map(|id| order_json(id, "WAITING_ACCEPTANCE"))
            .collect();
        let total = orders.len() as u64;
        ResponseTemplate::new(200).set_body_json(or11_body(orders, total))
    }
}

fn query(request: &Request, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[derive(Debug, sqlx::FromRow)]
struct CallRow {
    service: String,
    endpoint: String,
    related_id: Option<String>,
    method: Option<String>,
    path: Option<String>,
    request_payload: Option<Value>,
    response_body: Option<String>,
    response_truncated: bool,
    status_code: Option<i32>,
    is_success: bool,
    duration_ms: Option<i32>,
    attempt: Option<i32>,
    error: Option<String>,
}

async fn rows(pool: &PgPool) -> Vec<CallRow> {
    sqlx::query_as(
        "SELECT service, endpoint, related_id, method, path, request_payload, response_body,
                response_truncated, status_code, is_success, duration_ms, attempt, error
         FROM api_calls ORDER BY call_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

// OR11 ---------------------------------------------------------------------------------------

#[sqlx::test]
async fn orders_by_ids_splits_250_ids_into_3_calls_of_at_most_100(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/orders"))
        .respond_with(EchoOrders)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let wanted = ids(250);
    let orders = client.orders_by_ids(&wanted).await.unwrap();

    assert_eq!(orders.len(), 250);
    assert_eq!(orders[249].order_id, "O-0249");
    assert_eq!(orders[0].order_lines.len(), 2);
    assert_eq!(client.calls_made(), 3);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    let mut sizes = Vec::new();
    for request in &requests {
        let ids = query(request, "order_ids").unwrap();
        let count = ids.split(',').count();
        assert!(count <= 100, "{count} ids in one call");
        assert_eq!(query(request, "paginate").as_deref(), Some("false"));
        assert_eq!(query(request, "max"), Some(count.to_string()));
        sizes.push(count);
    }
    assert_eq!(sizes, [100, 100, 50]);

    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.endpoint, "OR11");
        assert_eq!(row.related_id, None, "batch reads name no single order");
        assert_eq!(row.method.as_deref(), Some("GET"));
        let payload = row.request_payload.as_ref().unwrap();
        assert!(payload["order_ids"].as_str().unwrap().starts_with("O-"));
        assert_eq!(payload["paginate"], "false");
        assert!(row.is_success);
    }
}

#[sqlx::test]
async fn orders_by_ids_with_no_ids_calls_nothing(pool: PgPool) {
    let server = MockServer::start().await;
    let client = client(&settings(&server.uri()), &pool);
    assert!(client.orders_by_ids(&[]).await.unwrap().is_empty());
    assert_eq!(client.calls_made(), 0);
}

#[sqlx::test]
async fn orders_in_states_page_pages_by_offset(pool: PgPool) {
    let server = MockServer::start().await;
    let first: Vec<Value> = (0..100)
        .map(|i| order_json(&format!("P-{i:03}"), "WAITING_ACCEPTANCE"))
        .collect();
    let second: Vec<Value> = (100..130)
        .map(|i| order_json(&format!("P-{i:03}"), "WAITING_ACCEPTANCE"))
        .collect();
    for (offset, orders) in [("0", first), ("100", second)] {
        Mock::given(method("GET"))
            .and(path("/api/orders"))
            .and(query_param("offset", offset))
            .and(query_param("order_state_codes", "WAITING_ACCEPTANCE"))
            .and(query_param("paginate", "true"))
            .and(query_param("max", "100"))
            .and(query_param("sort", "dateCreated"))
            .and(query_param("order", "asc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(or11_body(orders, 130)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let client = client(&settings(&server.uri()), &pool);

    let states = [OrderState::WaitingAcceptance];
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let page = client.orders_in_states_page(&states, offset).await.unwrap();
        assert_eq!(page.total_count, 130);
        offset += page.orders.len() as u64;
        all.extend(page.orders);
        if offset >= page.total_count {
            break;
        }
    }
    assert_eq!(all.len(), 130);
    assert_eq!(all[129].order_id, "P-129");
    server.verify().await;
}

#[sqlx::test]
async fn several_states_go_as_one_comma_list(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(query_param(
        "order_state_codes",
        "WAITING_ACCEPTANCE,WAITING_DEBIT",
    ))
    .respond_with(ResponseTemplate::new(200).set_body_json(or11_body(vec![], 0)))
    .expect(1)
    .mount(&server)
    .await;
    let client = client(&settings(&server.uri()), &pool);
    let states = [OrderState::WaitingAcceptance, OrderState::WaitingDebit];
    let page = client.orders_in_states_page(&states, 0).await.unwrap();
    assert!(page.orders.is_empty());
    server.verify().await;
}

#[sqlx::test]
async fn unknown_states_and_fields_parse(pool: PgPool) {
    let server = MockServer::start().await;
    let mut order = order_json("U-1", "SOMETHING_NEW");
    order["order_lines"][0]["order_line_state"] = json!("CANCELLED");
    order["brand_new_field"] = json!({"nested": [1, 2, 3]});
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(or11_body(vec![order.clone()], 1)))
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let orders = client.orders_by_ids(&["U-1".into()]).await.unwrap();
    assert_eq!(
        orders[0].order_state,
        OrderState::Unknown("SOMETHING_NEW".into())
    );
    assert_eq!(
        orders[0].order_lines[0].order_line_state,
        OrderState::Unknown("CANCELLED".into())
    );
    assert_eq!(orders[0].raw, order, "raw keeps the order exactly as sent");
    assert!(!orders[0].order_state.proves_acceptance());
}

#[sqlx::test]
async fn a_line_without_id_makes_the_order_unreadable_naming_it(pool: PgPool) {
    let server = MockServer::start().await;
    let mut order = order_json("L-1", "WAITING_ACCEPTANCE");
    order["order_lines"][1]
        .as_object_mut()
        .unwrap()
        .remove("order_line_id");
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(or11_body(vec![order.clone()], 1)))
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let read = client.read_orders(&["L-1".into()]).await.unwrap();
    assert!(read.orders.is_empty(), "{read:?}");
    let [unreadable] = read.unreadable.as_slice() else {
        panic!("one unreadable order: {read:?}");
    };
    assert_eq!(unreadable.order_id.as_deref(), Some("L-1"));
    assert!(unreadable.reason.contains("L-1"), "{}", unreadable.reason);
    assert!(unreadable.reason.contains("order_line_id"));
    assert_eq!(unreadable.raw, order, "kept as sent");
    assert_eq!(client.calls_made(), 1, "unreadable orders are not re-read");
}

#[sqlx::test]
async fn an_html_200_is_malformed_with_the_body_kept(pool: PgPool) {
    let server = MockServer::start().await;
    let html = "<html><body><h1>Access denied</h1>Your IP is not allowed</body></html>";
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(html, "text/html"))
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client
        .orders_in_states_page(&[OrderState::WaitingAcceptance], 0)
        .await
        .unwrap_err();
    let MarketplaceError::Malformed { endpoint, body, .. } = &err else {
        panic!("expected Malformed, got {err:?}");
    };
    assert_eq!(*endpoint, Endpoint::OR11);
    assert!(body.contains("Access denied"));
    assert!(err.to_string().contains("allow-listed"), "{err}");
    assert!(!err.is_transient());

    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status_code, Some(200));
    assert!(
        !rows[0].is_success,
        "a 200 that cannot be read is not a success"
    );
    assert!(
        rows[0]
            .response_body
            .as_deref()
            .unwrap()
            .contains("Access denied")
    );
    assert!(rows[0].error.is_some());
}

#[sqlx::test]
async fn truncated_json_is_malformed(pool: PgPool) {
    let server = MockServer::start().await;
    let full = or11_body(vec![order_json("T-1", "WAITING_ACCEPTANCE")], 1).to_string();
    let cut = &full[..full.len() / 2];
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(cut, "application/json"))
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client.orders_by_ids(&["T-1".into()]).await.unwrap_err();
    let MarketplaceError::Malformed { detail, body, .. } = &err else {
        panic!("expected Malformed, got {err:?}");
    };
    assert!(detail.contains("not valid JSON"), "{detail}");
    assert_eq!(body, cut);
}

#[sqlx::test]
async fn a_body_over_the_cap_is_malformed_and_not_read_whole(pool: PgPool) {
    let server = MockServer::start().await;
    let orders: Vec<Value> = (0..400)
        .map(|i| order_json(&format!("B-{i}"), "WAITING_ACCEPTANCE"))
        .collect();
    let big = or11_body(orders, 400).to_string();
    assert!(big.len() > 64 * 1024);
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big, "application/json"))
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.max_response_bytes = 16 * 1024;
    let client = client(&settings, &pool);

    let err = client
        .orders_in_states_page(&[OrderState::WaitingAcceptance], 0)
        .await
        .unwrap_err();
    let MarketplaceError::Malformed { detail, body, .. } = &err else {
        panic!("expected Malformed, got {err:?}");
    };
    assert!(detail.contains("max_response_bytes"), "{detail}");
    assert!(body.len() <= 4 * 1024, "the error keeps only a few KiB");

    let rows = rows(&pool).await;
    assert!(rows[0].response_truncated);
    assert!(rows[0].response_body.as_ref().unwrap().len() <= 8 * 1024);
}

/// A server that answers every connection with an endless chunked 200: no Content-Length to
/// look at, so only reading chunk by chunk with a cap stops the client.
async fn endless_body_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("2000\r\n{}\r\n", "x".repeat(0x2000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    format!("http://{address}")
}

#[sqlx::test]
async fn an_endless_streamed_body_stops_at_the_cap(pool: PgPool) {
    let mut settings = settings(&endless_body_server().await);
    settings.max_response_bytes = 32 * 1024;
    settings.timeout = Duration::from_secs(5);
    let client = client(&settings, &pool);

    let err = client.account().await.unwrap_err();
    let MarketplaceError::Malformed { detail, .. } = &err else {
        panic!("expected Malformed, got {err:?}");
    };
    assert!(detail.contains("max_response_bytes"), "{detail}");
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].response_truncated);
    assert_eq!(rows[0].response_body.as_ref().unwrap().len(), 8 * 1024);
}

#[sqlx::test]
async fn stored_response_bodies_are_cut_at_max_body_bytes(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .respond_with(EchoOrders)
        .mount(&server)
        .await;
    let client = MarketplaceClient::new(
        &settings(&server.uri()),
        &ApiCallsSettings {
            retention: Duration::from_secs(86_400),
            max_body_bytes: 256,
        },
        pool.clone(),
    )
    .unwrap();

    let orders = client.orders_by_ids(&ids(20)).await.unwrap();
    assert_eq!(orders.len(), 20, "the cut applies to the stored copy only");
    let rows = rows(&pool).await;
    assert!(rows[0].response_truncated);
    assert!(rows[0].response_body.as_ref().unwrap().len() <= 256);
}

// Error classes ------------------------------------------------------------------------------

#[sqlx::test]
async fn unauthorized_401_and_403_are_not_retried(pool: PgPool) {
    for status in [401u16, 403] {
        let server = MockServer::start().await;
        Mock::given(path("/api/account"))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(json!({"message": "Unauthorized"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&settings(&server.uri()), &pool);

        let err = client.account().await.unwrap_err();
        assert!(
            matches!(err, MarketplaceError::Unauthorized { endpoint: Endpoint::A01, status: s, .. } if s == status),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("marketplace.api_key"), "{message}");
        assert!(!message.contains(KEY));
        assert!(!err.is_transient());
        server.verify().await;
    }
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].status_code, Some(401));
    assert_eq!(rows[1].status_code, Some(403));
}

#[sqlx::test]
async fn not_found_404(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/X-404/accept"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"status": 404, "code": "ORDER_NOT_FOUND", "message": "Order not found"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client
        .accept_order("X-404", &[LineDecision::accept("X-404-1")], &|| Ok(()))
        .await
        .unwrap_err();
    let MarketplaceError::NotFound {
        endpoint,
        order_id,
        code,
        ..
    } = &err
    else {
        panic!("expected NotFound, got {err:?}");
    };
    assert_eq!(*endpoint, Endpoint::OR21);
    assert_eq!(order_id.as_deref(), Some("X-404"));
    assert_eq!(code.as_deref(), Some("ORDER_NOT_FOUND"));
    assert!(err.to_string().contains("X-404"));
    server.verify().await;
}

#[sqlx::test]
async fn order_invalid_state_400_is_invalid_state(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/S-1/accept"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": 400, "code": "ORDER_INVALID_STATE",
            "message": "The order S-1 is not in state WAITING_ACCEPTANCE"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client
        .accept_order("S-1", &[LineDecision::accept("S-1-1")], &|| Ok(()))
        .await
        .unwrap_err();
    let MarketplaceError::InvalidState { order_id, code, .. } = &err else {
        panic!("expected InvalidState, got {err:?}");
    };
    assert_eq!(order_id, "S-1");
    assert_eq!(code, "ORDER_INVALID_STATE");
    assert!(!err.may_have_taken_effect());
    server.verify().await;
}

#[sqlx::test]
async fn order_invalid_state_in_the_message_field_is_recognised(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/S-2/accept"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": 400, "message": "ORDER_INVALID_STATE"})),
        )
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);
    let err = client
        .accept_order("S-2", &[LineDecision::accept("S-2-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MarketplaceError::InvalidState { .. }),
        "{err:?}"
    );
}

#[sqlx::test]
async fn another_400_is_rejected_with_its_code(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/R-1/accept"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": 400, "code": "ORDER_LINE_NOT_FOUND", "message": "Order line R-1-9 not found"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client
        .accept_order("R-1", &[LineDecision::accept("R-1-9")], &|| Ok(()))
        .await
        .unwrap_err();
    let MarketplaceError::Rejected {
        endpoint,
        order_id,
        status,
        code,
        message,
    } = &err
    else {
        panic!("expected Rejected, got {err:?}");
    };
    assert_eq!(*endpoint, Endpoint::OR21);
    assert_eq!(order_id.as_deref(), Some("R-1"));
    assert_eq!(*status, 400);
    assert_eq!(code.as_deref(), Some("ORDER_LINE_NOT_FOUND"));
    assert!(message.contains("R-1-9"));
    assert!(!err.is_transient() && !err.may_have_taken_effect());
    server.verify().await;
}

#[sqlx::test]
async fn or11_500_is_retried_until_the_attempts_run_out(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client.orders_by_ids(&["E-1".into()]).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.may_have_taken_effect(), "a read changes nothing");
    assert_eq!(client.calls_made(), 3);
    let rows = rows(&pool).await;
    let attempts: Vec<_> = rows.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    assert!(
        rows.iter()
            .all(|r| r.status_code == Some(500) && !r.is_success)
    );
    server.verify().await;
}

#[sqlx::test]
async fn or11_recovers_after_a_transient_error(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/orders"))
        .respond_with(EchoOrders)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let orders = client.orders_by_ids(&["E-2".into()]).await.unwrap();
    assert_eq!(orders.len(), 1);
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].status_code, rows[0].is_success),
        (Some(502), false)
    );
    assert_eq!((rows[1].status_code, rows[1].is_success), (Some(200), true));
    assert_eq!(rows[1].attempt, Some(2));
}

#[sqlx::test]
async fn or21_500_returns_at_once_as_maybe_taken_effect(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/M-1/accept"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let err = client
        .accept_order("M-1", &[LineDecision::accept("M-1-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(err.is_transient() && err.may_have_taken_effect(), "{err:?}");
    assert!(err.to_string().contains("re-read"), "{err}");
    assert_eq!(rows(&pool).await.len(), 1);
    server.verify().await;
}

#[sqlx::test]
async fn or21_503_is_retried_and_then_succeeds(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/N-1/accept"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/orders/N-1/accept"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    client
        .accept_order("N-1", &[LineDecision::accept("N-1-1")], &|| Ok(()))
        .await
        .unwrap();
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].status_code, rows[0].attempt), (Some(503), Some(1)));
    assert_eq!((rows[1].status_code, rows[1].attempt), (Some(204), Some(2)));
    assert!(rows[1].is_success);
}

#[sqlx::test]
async fn or21_503_every_time_is_transient_and_not_taken_effect(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/N-2/accept"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);
    let err = client
        .accept_order("N-2", &[LineDecision::accept("N-2-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    server.verify().await;
}

#[sqlx::test]
async fn a_429_waits_for_retry_after(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"message": "Too many requests"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/orders"))
        .respond_with(EchoOrders)
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.retry.max_delay = Duration::from_secs(2);
    let client = client(&settings, &pool);

    let started = Instant::now();
    let orders = client.orders_by_ids(&["R-1".into()]).await.unwrap();
    let waited = started.elapsed();

    assert_eq!(orders.len(), 1);
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].status_code, rows[0].attempt), (Some(429), Some(1)));
    assert_eq!((rows[1].status_code, rows[1].attempt), (Some(200), Some(2)));
}

#[sqlx::test]
async fn a_retry_after_past_the_ceiling_is_not_waited_for(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/account"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);

    let started = Instant::now();
    let err = client.account().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("marketplace.retry_after_ceiling"),
        "{err}"
    );
    server.verify().await;
}

#[sqlx::test]
async fn a_429_on_or21_is_retried_as_nothing_happened(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/Q-1/accept"))
        .respond_with(ResponseTemplate::new(429))
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);
    let err = client
        .accept_order("Q-1", &[LineDecision::accept("Q-1-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    server.verify().await;
}

#[sqlx::test]
async fn an_or11_timeout_is_transient_and_retried(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(or11_body(vec![], 0))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.timeout = Duration::from_millis(150);
    settings.retry.attempts = 2;
    let client = client(&settings, &pool);

    let err = client.orders_by_ids(&["T-1".into()]).await.unwrap_err();
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    assert!(err.to_string().contains("marketplace.timeout"), "{err}");
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.status_code.is_none() && r.error.is_some())
    );
}

#[sqlx::test]
async fn an_or21_timeout_returns_at_once_as_maybe_taken_effect(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/T-2/accept"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.timeout = Duration::from_millis(150);
    let client = client(&settings, &pool);

    let started = Instant::now();
    let err = client
        .accept_order("T-2", &[LineDecision::accept("T-2-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    let MarketplaceError::Transient {
        endpoint,
        order_id,
        may_have_taken_effect,
        ..
    } = &err
    else {
        panic!("expected Transient, got {err:?}");
    };
    assert_eq!(*endpoint, Endpoint::OR21);
    assert_eq!(order_id.as_deref(), Some("T-2"));
    assert!(*may_have_taken_effect);
    assert_eq!(client.calls_made(), 1);

    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].related_id.as_deref(), Some("T-2"));
    assert_eq!(rows[0].status_code, None);
    assert!(rows[0].error.as_deref().unwrap().contains("timeout"));
}

fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[sqlx::test]
async fn connection_refused_is_transient_and_did_not_take_effect(pool: PgPool) {
    let client = client(&settings(&refused_url()), &pool);

    let err = client
        .accept_order("C-1", &[LineDecision::accept("C-1-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert_eq!(
        client.calls_made(),
        3,
        "nothing was sent, so OR21 is retried"
    );
    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.status_code.is_none() && !r.is_success)
    );
}

#[sqlx::test]
async fn or21_answering_200_instead_of_204_is_not_a_success(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/W-1/accept"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>"))
        .mount(&server)
        .await;
    let client = client(&settings(&server.uri()), &pool);
    let err = client
        .accept_order("W-1", &[LineDecision::accept("W-1-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, MarketplaceError::Malformed { .. }), "{err:?}");
    assert!(
        err.may_have_taken_effect(),
        "unclear, so the caller re-reads"
    );
}

// What is sent and stored --------------------------------------------------------------------

#[sqlx::test]
async fn or21_sends_the_documented_request_and_records_one_row(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api/orders/A-1/accept"))
        .and(query_param("shop_id", "2001"))
        .and(header("authorization", KEY))
        .and(header("accept", "application/json"))
        .and(header("content-type", "application/json"))
        .and(header(
            "user-agent",
            concat!("order-acceptance/", env!("CARGO_PKG_VERSION")),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.shop_id = Some("2001".into());
    let client = client(&settings, &pool);

    client
        .accept_order(
            "A-1",
            &[LineDecision::accept("A-1-1"), LineDecision::accept("A-1-2")],
            &|| Ok(()),
        )
        .await
        .unwrap();
    server.verify().await;

    let sent: Value = received(&server).await[0].body_json().unwrap();
    let expected = json!({"order_lines": [
        {"id": "A-1-1", "accepted": true}, {"id": "A-1-2", "accepted": true}
    ]});
    assert_eq!(sent, expected);

    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.service, "BestBuy");
    assert_eq!(row.endpoint, "OR21");
    assert_eq!(row.related_id.as_deref(), Some("A-1"));
    assert_eq!(row.method.as_deref(), Some("PUT"));
    assert_eq!(
        row.path.as_deref(),
        Some("/api/orders/A-1/accept?shop_id=2001")
    );
    assert_eq!(row.request_payload.as_ref(), Some(&expected));
    assert_eq!(row.response_body.as_deref(), Some(""));
    assert!(!row.response_truncated);
    assert_eq!(row.status_code, Some(204));
    assert!(row.is_success);
    assert!(row.duration_ms.is_some_and(|ms| ms >= 0));
    assert_eq!(row.attempt, Some(1));
    assert_eq!(row.error, None);
}

#[sqlx::test]
async fn shop_id_goes_on_every_call(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders"))
        .and(query_param("shop_id", "77"))
        .respond_with(EchoOrders)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/api/account"))
        .and(query_param("shop_id", "77"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"shop_id": 77, "shop_name": "Demo", "extra": true})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.shop_id = Some("77".into());
    let client = client(&settings, &pool);

    client.orders_by_ids(&["S-1".into()]).await.unwrap();
    client
        .orders_in_states_page(&[OrderState::WaitingAcceptance], 0)
        .await
        .unwrap();
    let account = client.account().await.unwrap();
    assert_eq!(account.shop_id, Some(77));
    assert_eq!(account.shop_name.as_deref(), Some("Demo"));
    assert_eq!(account.raw["extra"], true);
    server.verify().await;

    let rows = rows(&pool).await;
    assert_eq!(rows[2].endpoint, "A01");
    assert_eq!(
        rows[2].request_payload.as_ref(),
        Some(&json!({"shop_id": "77"}))
    );
}

#[sqlx::test]
async fn base_urls_with_prefix_or_trailing_slash_and_odd_order_ids(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/mirakl/api/account"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"shop_id": 5})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/api/orders/A%2FB%201/accept"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;

    for base in [
        format!("{}/mirakl", server.uri()),
        format!("{}/mirakl/", server.uri()),
    ] {
        client(&settings(&base), &pool).account().await.unwrap();
    }
    for base in [server.uri(), format!("{}/", server.uri())] {
        client(&settings(&base), &pool)
            .accept_order("A/B 1", &[LineDecision::accept("L")], &|| Ok(()))
            .await
            .unwrap();
    }
    server.verify().await;
}

#[sqlx::test]
async fn a_lost_answer_row_does_not_fail_an_accepted_order(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/D-1/accept"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    // The row written before sending stays; completing it with the answer fails.
    sqlx::query("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE UPDATE ON api_calls FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let client = client(&settings(&server.uri()), &pool);
    client
        .accept_order("D-1", &[LineDecision::accept("D-1-1")], &|| Ok(()))
        .await
        .unwrap();
    server.verify().await;
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM api_calls WHERE related_id = 'D-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(error.unwrap().contains("no answer was recorded"));
}

#[sqlx::test]
async fn an_or21_without_its_api_calls_row_is_not_sent(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/D-1/accept"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    sqlx::query("DROP TABLE api_calls CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    let client = client(&settings(&server.uri()), &pool);
    let err = client
        .accept_order("D-1", &[LineDecision::accept("D-1-1")], &|| Ok(()))
        .await
        .unwrap_err();
    assert!(
        err.is_transient() && !err.may_have_taken_effect(),
        "{err:?}"
    );
    assert!(err.to_string().contains("not sent"), "{err}");
    server.verify().await;
}

// The key stays secret -----------------------------------------------------------------------

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

/// Every log line of this test binary, at every level. A global subscriber, because one scoped
/// to a single test can miss events while other tests log on other threads (tracing caches
/// each call site's interest process-wide). Every test here uses the same key, so no line
/// from any of them may show it.
fn all_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    })
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test]
async fn the_api_key_is_in_no_column_and_no_log_line(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/api/orders/K-1/accept"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(path("/api/orders/K-2/accept"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    Mock::given(path("/api/orders"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "0"))
        .mount(&server)
        .await;
    Mock::given(path("/api/account"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.shop_id = Some("9".into());
    let client = client(&settings, &pool);

    let logs = all_logs();
    let mut errors = Vec::new();
    client
        .accept_order("K-1", &[LineDecision::accept("K-1-1")], &|| Ok(()))
        .await
        .unwrap();
    errors.push(
        client
            .accept_order("K-2", &[LineDecision::accept("K-2-1")], &|| Ok(()))
            .await
            .unwrap_err(),
    );
    errors.push(client.orders_by_ids(&["K-3".into()]).await.unwrap_err());
    errors.push(client.account().await.unwrap_err());

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("marketplace request") && logs.contains("K-2"),
        "this test's requests were logged: {logs}"
    );
    assert!(logs.contains("retrying"), "retries were logged: {logs}");
    assert!(!logs.contains(KEY), "the key is in the logs:\n{logs}");
    assert!(!format!("{client:?}").contains(KEY));
    for err in &errors {
        assert!(!err.to_string().contains(KEY));
        assert!(!format!("{err:?}").contains(KEY));
    }

    let dump: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM api_calls a")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(dump.len() >= 5, "{dump:?}");
    for row in dump {
        assert!(!row.contains(KEY), "the key is stored: {row}");
    }
}

// Requests match Mirakl's published spec -----------------------------------------------------

fn spec() -> Value {
    serde_json::from_str(include_str!("fixtures/mirakl/openapi-orders-subset.json")).unwrap()
}

/// Checks `value` against the parts of an OpenAPI schema these requests use: `$ref`, `type`,
/// `required`, `properties` (no undeclared ones), `items`.
fn check_schema(spec: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => spec
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolved {reference}")),
        None => schema,
    };
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                return problems.push(format!("{at}: not an object"));
            };
            let empty = serde_json::Map::new();
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !object.contains_key(name) {
                    problems.push(format!("{at}: missing required {name}"));
                }
            }
            for (name, field) in object {
                match properties.get(name) {
                    Some(property) => {
                        check_schema(spec, property, field, &format!("{at}.{name}"), problems)
                    }
                    None => problems.push(format!("{at}: {name} is not declared")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                return problems.push(format!("{at}: not an array"));
            };
            for (index, item) in items.iter().enumerate() {
                check_schema(
                    spec,
                    &schema["items"],
                    item,
                    &format!("{at}[{index}]"),
                    problems,
                );
            }
        }
        Some("string") if !value.is_string() => problems.push(format!("{at}: not a string")),
        Some("boolean") if !value.is_boolean() => problems.push(format!("{at}: not a boolean")),
        Some("integer") if !value.is_i64() => problems.push(format!("{at}: not an integer")),
        _ => {}
    }
}

#[sqlx::test]
async fn requests_follow_the_openapi_spec(pool: PgPool) {
    let spec = spec();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/orders"))
        .respond_with(EchoOrders)
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.shop_id = Some("2001".into());
    let client = client(&settings, &pool);

    client
        .accept_order("O-1", &[LineDecision::accept("O-1-1")], &|| Ok(()))
        .await
        .unwrap();
    client
        .accept_order(
            "O-2",
            &[
                LineDecision::accept("O-2-1"),
                LineDecision::accept("O-2-2"),
                LineDecision::accept("O-2-3"),
            ],
            &|| Ok(()),
        )
        .await
        .unwrap();
    client.orders_by_ids(&ids(120)).await.unwrap();
    client
        .orders_in_states_page(&[OrderState::WaitingAcceptance], 100)
        .await
        .unwrap();

    // OR21 bodies against OR21_Request.
    let put = &spec["paths"]["/api/orders/{order_id}/accept"]["put"];
    let schema = &put["requestBody"]["content"]["application/json"]["schema"];
    assert!(
        schema.get("$ref").is_some(),
        "the spec names the OR21 schema"
    );
    let requests = received(&server).await;
    let bodies: Vec<Value> = requests
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .map(|r| r.body_json().unwrap())
        .collect();
    assert_eq!(bodies.len(), 2);
    for body in &bodies {
        let mut problems = Vec::new();
        check_schema(&spec, schema, body, "OR21", &mut problems);
        assert!(problems.is_empty(), "{body}: {problems:?}");
    }
    // The check itself catches a wrong body.
    let mut problems = Vec::new();
    check_schema(
        &spec,
        schema,
        &json!({"order_lines": [{"id": "x", "accept": true}]}),
        "OR21",
        &mut problems,
    );
    assert_eq!(problems.len(), 2, "{problems:?}");

    // OR11 query parameters: those the operation declares, plus the offset-pagination and sort
    // parameters its description points to (the subset leaves that shared section out).
    let get = &spec["paths"]["/api/orders"]["get"];
    let description = get["description"].as_str().unwrap();
    assert!(description.contains("offset pagination") && description.contains("sort"));
    let mut allowed: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    allowed.extend(["max", "offset", "paginate", "sort", "order"]);
    let gets: Vec<&Request> = requests
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .collect();
    assert_eq!(gets.len(), 3);
    for request in gets {
        for (name, _) in request.url.query_pairs() {
            assert!(
                allowed.contains(&name.as_ref()),
                "OR11 parameter {name} is not in the spec"
            );
        }
    }
    // OR21 takes shop_id and nothing else in the query.
    let or21_query: Vec<&str> = put["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for request in requests.iter().filter(|r| r.method.as_str() == "PUT") {
        for (name, _) in request.url.query_pairs() {
            assert!(or21_query.contains(&name.as_ref()), "OR21 parameter {name}");
        }
    }
}
