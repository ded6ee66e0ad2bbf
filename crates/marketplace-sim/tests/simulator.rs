//! marketplace-sim over real HTTP: Mirakl's behaviour, the state machine, faults, scripts,
//! statistics and determinism.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use marketplace_sim::{
    ACCEPTANCE_DEADLINE_REASON, Behaviour, Catalogue, Faults, LineSpec, OrderSpec, Scripted,
    SimConfig, Simulator,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY: &str = "test-shop-key";

/// A simulator and one HTTP client for it: building a client loads the TLS roots, which takes
/// tens of milliseconds, too slow to repeat per request.
struct Sim {
    simulator: Simulator,
    http: reqwest::Client,
}

impl std::ops::Deref for Sim {
    type Target = Simulator;

    fn deref(&self) -> &Simulator {
        &self.simulator
    }
}

impl Sim {
    async fn shutdown(self) {
        self.simulator.shutdown().await;
    }
}

async fn start(config: SimConfig) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sim {
        simulator: Simulator::start(config, listener).await.unwrap(),
        http: reqwest::Client::new(),
    }
}

fn config() -> SimConfig {
    SimConfig::new(KEY)
}

fn with_faults(faults: Faults) -> SimConfig {
    SimConfig { faults, ..config() }
}

async fn get(sim: &Sim, path_and_query: &str) -> reqwest::Response {
    sim.http
        .get(format!("{}{path_and_query}", sim.url()))
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap()
}

async fn or11(sim: &Sim, query: &str) -> Value {
    let response = get(sim, &format!("/api/orders?{query}")).await;
    assert_eq!(response.status(), StatusCode::OK, "OR11 {query}");
    response.json().await.unwrap()
}

async fn or11_status(sim: &Sim, query: &str) -> (StatusCode, Value) {
    let response = get(sim, &format!("/api/orders?{query}")).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn or21(sim: &Sim, order_id: &str, body: &str) -> reqwest::Response {
    sim.http
        .put(format!("{}/api/orders/{order_id}/accept", sim.url()))
        .header("Authorization", KEY)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// The control endpoint's view of an order, as OR11 shows it.
async fn order(sim: &Sim, order_id: &str) -> Value {
    let response = sim
        .http
        .get(format!("{}/sim/orders/{order_id}", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn decisions(order: &Value, accepted: bool) -> String {
    let lines: Vec<Value> = order["order_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| json!({"id": line["order_line_id"], "accepted": accepted}))
        .collect();
    json!({ "order_lines": lines }).to_string()
}

/// OR21 accepting (or refusing) every line; asserts the answer.
async fn decide(sim: &Sim, order_id: &str, accepted: bool, expected: StatusCode) {
    let body = decisions(&order(sim, order_id).await, accepted);
    let response = or21(sim, order_id, &body).await;
    assert_eq!(response.status(), expected, "OR21 {order_id}");
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    (status, body["code"].as_str().unwrap().to_owned())
}

fn spec(order_id: &str) -> OrderSpec {
    OrderSpec {
        order_id: Some(order_id.to_owned()),
        ..OrderSpec::default()
    }
}

fn scripted(order_id: &str, behaviour: Behaviour) -> OrderSpec {
    OrderSpec {
        behaviour,
        ..spec(order_id)
    }
}

/// Polls until the order reads `state`, recording every state seen on the way.
async fn wait_for_state(sim: &Sim, order_id: &str, state: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let now = sim.order_state(order_id).unwrap();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == state {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{order_id} never reached {state}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["order_id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// State machine

#[tokio::test]
async fn accepted_order_moves_through_debit_to_shipping_one_step_apart() {
    // Steps long enough that a loaded host's stall cannot skip a state between two reads.
    let sim = start(SimConfig {
        step: Duration::from_millis(500),
        ..config()
    })
    .await;
    sim.add_orders(vec![spec("A-1")]);
    let before = order(&sim, "A-1").await;
    assert_eq!(before["acceptance_decision_date"], Value::Null);
    assert_eq!(before["customer"]["shipping_address"], Value::Null);

    decide(&sim, "A-1", true, StatusCode::NO_CONTENT).await;
    let seen = wait_for_state(&sim, "A-1", "SHIPPING").await;
    assert_eq!(
        seen,
        [
            "WAITING_ACCEPTANCE",
            "WAITING_DEBIT",
            "WAITING_DEBIT_PAYMENT",
            "SHIPPING"
        ]
    );

    let after = order(&sim, "A-1").await;
    assert_eq!(after["order_state"], "SHIPPING");
    assert!(after["acceptance_decision_date"].is_string());
    assert!(after["customer_debited_date"].is_string());
    assert!(after["customer"]["shipping_address"]["city"].is_string());
    assert_eq!(after["can_shop_ship"], true);
    for line in after["order_lines"].as_array().unwrap() {
        assert_eq!(line["order_line_state"], "SHIPPING");
    }
    assert_eq!(sim.stats().or21_accepted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_accepted_order_lags_in_waiting_acceptance_and_refuses_a_second_accept() {
    let sim = start(SimConfig {
        step: Duration::from_secs(60),
        ..config()
    })
    .await;
    sim.add_orders(vec![spec("LAG-1")]);
    decide(&sim, "LAG-1", true, StatusCode::NO_CONTENT).await;
    assert_eq!(sim.order_state("LAG-1").unwrap(), "WAITING_ACCEPTANCE");

    let body = decisions(&order(&sim, "LAG-1").await, true);
    let (status, code) = error_code(or21(&sim, "LAG-1", &body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ORDER_INVALID_STATE")
    );
    let stats = sim.stats();
    assert_eq!(stats.or21_accepted, 1);
    assert_eq!(stats.or21_not_waiting, 1);
    assert_eq!(stats.or21_calls_per_order["LAG-1"], 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_zero_step_makes_acceptance_immediate() {
    let sim = start(SimConfig {
        step: Duration::ZERO,
        ..config()
    })
    .await;
    sim.add_orders(vec![spec("Z-1")]);
    decide(&sim, "Z-1", true, StatusCode::NO_CONTENT).await;
    assert_eq!(sim.order_state("Z-1").unwrap(), "SHIPPING");
    sim.shutdown().await;
}

#[tokio::test]
async fn refusing_every_line_refuses_the_order_and_mixed_decisions_are_rejected_when_partial_acceptance_is_off()
 {
    let sim = start(SimConfig {
        partial_acceptance: false,
        ..config()
    })
    .await;
    sim.add_orders(vec![
        spec("R-1"),
        OrderSpec {
            lines: Some(2),
            ..spec("R-2")
        },
    ]);
    decide(&sim, "R-1", false, StatusCode::NO_CONTENT).await;
    assert_eq!(sim.order_state("R-1").unwrap(), "REFUSED");
    let refused = order(&sim, "R-1").await;
    assert!(refused["acceptance_decision_date"].is_string());
    assert_eq!(refused["order_lines"][0]["order_line_state"], "REFUSED");

    let body =
        r#"{"order_lines":[{"id":"R-2-1","accepted":true},{"id":"R-2-2","accepted":false}]}"#;
    let (status, code) = error_code(or21(&sim, "R-2", body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ORDER_PARTIAL_ACCEPTANCE_DISABLED")
    );
    assert_eq!(sim.order_state("R-2").unwrap(), "WAITING_ACCEPTANCE");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Scripted lines, line decisions and the acceptance deadline

fn line(sku: &str) -> LineSpec {
    LineSpec {
        sku: sku.to_owned(),
        ..LineSpec::default()
    }
}

fn with_items(order_id: &str, items: Vec<LineSpec>) -> OrderSpec {
    OrderSpec {
        items: Some(items),
        ..spec(order_id)
    }
}

fn money(value: &Value) -> f64 {
    value.as_f64().unwrap()
}

#[tokio::test]
async fn scripted_lines_show_in_or11_with_catalogue_defaults() {
    let sim = start(config()).await;
    sim.add_orders(vec![OrderSpec {
        lines: Some(7),
        ..with_items(
            "L-1",
            vec![
                // In the built-in catalogue: its price, product, title and shipping.
                LineSpec {
                    quantity: 2,
                    ..line("SHOP-LOGI-MX3S")
                },
                // Unknown: 10.00 and a product id derived from the SKU.
                line("WIDGET-9"),
                LineSpec {
                    quantity: 3,
                    unit_price: Some(19.99),
                    product_sku: Some("PRD-77".into()),
                    ..line("SHOP-ANKER-65W")
                },
            ],
        )
    }]);
    let body = or11(&sim, "order_ids=L-1").await;
    assert_valid(&openapi(), "OR11_Response_200", &body);
    let order = &body["orders"][0];
    assert_eq!(order["order_tax_mode"], "TAX_INCLUDED");
    let lines = order["order_lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "items win over lines");
    let view: Vec<(&str, &str, u64, f64, f64)> = lines
        .iter()
        .map(|l| {
            (
                l["offer_sku"].as_str().unwrap(),
                l["product_sku"].as_str().unwrap(),
                l["quantity"].as_u64().unwrap(),
                money(&l["price_unit"]),
                money(&l["price"]),
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            ("SHOP-LOGI-MX3S", "16634212", 2, 129.99, 259.98),
            ("WIDGET-9", "P-WIDGET-9", 1, 10.0, 10.0),
            ("SHOP-ANKER-65W", "PRD-77", 3, 19.99, 59.97),
        ]
    );
    assert_eq!(lines[0]["order_line_id"], "L-1-1");
    assert_eq!(lines[2]["order_line_id"], "L-1-3");
    assert_eq!(
        lines[0]["product_title"],
        "Logitech MX Master 3S Wireless Optical Mouse - Graphite"
    );
    // Shipping 5.99 per unit for the mouse, none for an unknown SKU.
    assert_eq!(money(&lines[0]["total_price"]), 271.96);
    assert_eq!(money(&lines[1]["total_price"]), 10.0);
    assert_eq!(lines[1]["taxes"], json!([]));
    sim.shutdown().await;
}

#[tokio::test]
async fn tax_excluded_orders_carry_13_percent_hst_on_each_line() {
    let sim = start(config()).await;
    sim.add_orders(vec![OrderSpec {
        tax_mode: Some("TAX_EXCLUDED".into()),
        ..with_items(
            "TAX-1",
            vec![
                LineSpec {
                    quantity: 2,
                    unit_price: Some(100.0),
                    ..line("A")
                },
                LineSpec {
                    unit_price: Some(0.5),
                    ..line("B")
                },
            ],
        )
    }]);
    let body = or11(&sim, "order_ids=TAX-1").await;
    assert_valid(&openapi(), "OR11_Response_200", &body);
    let order = &body["orders"][0];
    assert_eq!(order["order_tax_mode"], "TAX_EXCLUDED");
    let lines = &order["order_lines"];
    // Prices exclude the tax; 13 % of 0.50 is 0.065, rounded half up.
    assert_eq!(money(&lines[0]["price"]), 200.0);
    assert_eq!(money(&lines[0]["total_price"]), 200.0);
    assert_eq!(
        lines[0]["taxes"],
        json!([{"amount": 26.0, "code": "HST", "rate": 13, "tax_calculation_rule": "PROPORTIONAL_TO_AMOUNT"}])
    );
    assert_eq!(money(&lines[1]["taxes"][0]["amount"]), 0.07);
    assert_eq!(money(&order["total_price"]), 200.5);
    sim.shutdown().await;
}

#[tokio::test]
async fn refusing_some_lines_accepts_the_order_with_those_lines_refused() {
    let sim = start(SimConfig {
        step: Duration::ZERO,
        ..config()
    })
    .await;
    sim.add_orders(vec![with_items(
        "P-1",
        vec![line("A"), line("B"), line("C")],
    )]);
    let body = r#"{"order_lines":[
        {"id":"P-1-1","accepted":true},{"id":"P-1-2","accepted":false},{"id":"P-1-3","accepted":true}
    ]}"#;
    assert_eq!(
        or21(&sim, "P-1", body).await.status(),
        StatusCode::NO_CONTENT
    );
    let order = order(&sim, "P-1").await;
    assert_eq!(order["order_state"], "SHIPPING");
    let states: Vec<&str> = order["order_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["order_line_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["SHIPPING", "REFUSED", "SHIPPING"]);
    assert_eq!(sim.line_states("P-1").unwrap(), states);
    assert!(order["acceptance_decision_date"].is_string());
    let (status, code) = error_code(or21(&sim, "P-1", body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ORDER_INVALID_STATE")
    );
    assert_eq!(sim.stats().or21_accepted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_lines_stay_refused_while_the_accepted_ones_lag_and_cancel() {
    // A step long enough for the read right after the 204 to see the lag on a loaded host.
    let sim = start(SimConfig {
        step: Duration::from_secs(1),
        ..config()
    })
    .await;
    sim.add_orders(vec![OrderSpec {
        behaviour: Behaviour {
            cancel_after_accept: true,
            ..Behaviour::default()
        },
        ..with_items("P-2", vec![line("A"), line("B")])
    }]);
    let body =
        r#"{"order_lines":[{"id":"P-2-1","accepted":false},{"id":"P-2-2","accepted":true}]}"#;
    assert_eq!(
        or21(&sim, "P-2", body).await.status(),
        StatusCode::NO_CONTENT
    );
    let lagging = order(&sim, "P-2").await;
    assert_eq!(lagging["order_state"], "WAITING_ACCEPTANCE");
    assert_eq!(lagging["order_lines"][0]["order_line_state"], "REFUSED");
    assert_eq!(
        lagging["order_lines"][1]["order_line_state"],
        "WAITING_ACCEPTANCE"
    );
    wait_for_state(&sim, "P-2", "CANCELED").await;
    let cancelled = order(&sim, "P-2").await;
    assert_eq!(cancelled["order_lines"][0]["order_line_state"], "REFUSED");
    assert_eq!(
        cancelled["order_lines"][0]["order_line_state_reason_code"],
        Value::Null
    );
    assert_eq!(cancelled["order_lines"][1]["order_line_state"], "CANCELED");
    sim.shutdown().await;
}

#[tokio::test]
async fn orders_past_the_acceptance_deadline_read_refused_and_refuse_or21() {
    let sim = start(config()).await;
    let now = Utc::now();
    sim.add_orders(vec![
        OrderSpec {
            created_at: Some(now - TimeDelta::hours(25)),
            ..spec("D-OLD")
        },
        OrderSpec {
            created_at: Some(now - TimeDelta::hours(23)),
            ..spec("D-23H")
        },
    ]);
    let old = order(&sim, "D-OLD").await;
    assert_eq!(old["order_state"], "REFUSED");
    assert_eq!(old["order_state_reason_code"], ACCEPTANCE_DEADLINE_REASON);
    assert_eq!(old["order_lines"][0]["order_line_state"], "REFUSED");
    // Refused at the deadline, 24 hours after creation.
    let refused_at = (now - TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(old["last_updated_date"], refused_at);
    assert_eq!(old["acceptance_decision_date"], refused_at);
    let young = order(&sim, "D-23H").await;
    assert_eq!(young["order_state"], "WAITING_ACCEPTANCE");
    assert_eq!(
        young["created_date"],
        (now - TimeDelta::hours(23)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    let body = decisions(&old, true);
    let (status, code) = error_code(or21(&sim, "D-OLD", &body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ORDER_INVALID_STATE")
    );
    assert_eq!(sim.stats().or21_not_waiting, 1);
    let refused = or11(&sim, "order_state_codes=REFUSED").await;
    assert_eq!(ids(&refused), ["D-OLD"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_short_acceptance_deadline_refuses_undecided_orders_but_not_accepted_ones() {
    let sim = start(SimConfig {
        // Long enough for S-ACCEPTED's accept to come first on a loaded host.
        acceptance_deadline: Duration::from_secs(1),
        step: Duration::from_secs(60),
        ..config()
    })
    .await;
    sim.add_orders(vec![spec("S-UNDECIDED"), spec("S-ACCEPTED")]);
    decide(&sim, "S-ACCEPTED", true, StatusCode::NO_CONTENT).await;
    let seen = wait_for_state(&sim, "S-UNDECIDED", "REFUSED").await;
    assert_eq!(seen, ["WAITING_ACCEPTANCE", "REFUSED"]);
    assert_eq!(
        order(&sim, "S-UNDECIDED").await["order_state_reason_code"],
        ACCEPTANCE_DEADLINE_REASON
    );
    // Accepted before the deadline: still lagging in WAITING_ACCEPTANCE, not refused.
    assert_eq!(sim.order_state("S-ACCEPTED").unwrap(), "WAITING_ACCEPTANCE");
    decide(&sim, "S-UNDECIDED", false, StatusCode::BAD_REQUEST).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn post_sim_orders_refuses_bad_scripted_lines() {
    let sim = start(config()).await;
    let cases = [
        (
            json!({"items": []}),
            "items must hold between 1 and 100 lines",
        ),
        (
            json!({"items": [{"sku": ""}]}),
            "item 1: sku must not be empty",
        ),
        (
            json!({"items": [{"sku": "A"}, {"sku": "B", "quantity": 0}]}),
            "item 2 (B): quantity must be at least 1",
        ),
        (
            json!({"items": [{"sku": "A", "unit_price": -1.0}]}),
            "item 1 (A): unit_price must be a price of 0 or more",
        ),
        (
            json!({"items": [{"sku": "A", "price": 1.0}]}),
            "unknown field `price`",
        ),
        (json!({"created_at": "yesterday"}), "invalid body"),
    ];
    for (order, expected) in cases {
        let response = sim
            .http
            .post(format!("{}/sim/orders", sim.url()))
            .json(&json!({ "orders": [order] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{order}");
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{order}: {message}");
    }
    let response = sim
        .http
        .post(format!("{}/sim/orders", sim.url()))
        .json(&json!({ "orders": [{
            "order_id": "J-1",
            "created_at": "2026-01-01T10:00:00Z",
            "tax_mode": "TAX_EXCLUDED",
            "items": [{"sku": "SHOP-SONY-XM5", "quantity": 2}],
        }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let created = order(&sim, "J-1").await;
    assert_eq!(created["created_date"], "2026-01-01T10:00:00Z");
    assert_eq!(
        created["order_state_reason_code"],
        ACCEPTANCE_DEADLINE_REASON
    );
    assert_eq!(money(&created["order_lines"][0]["price"]), 899.98);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The catalogue (--skus)

#[tokio::test]
async fn generated_orders_draw_their_lines_from_the_catalogue() {
    let sim = start(SimConfig {
        orders: 20,
        catalogue: Catalogue::from_list("SKU-A:19.99, SKU-B:5").unwrap(),
        ..config()
    })
    .await;
    sim.add_orders(vec![with_items("K-1", vec![line("SKU-B")])]);
    let body = or11(&sim, "paginate=false").await;
    assert_valid(&openapi(), "OR11_Response_200", &body);
    let mut seen = std::collections::BTreeMap::new();
    for order in body["orders"].as_array().unwrap() {
        for line in order["order_lines"].as_array().unwrap() {
            let sku = line["offer_sku"].as_str().unwrap().to_owned();
            assert_eq!(line["product_sku"], format!("P-{sku}"));
            assert_eq!(line["product_title"], sku.as_str());
            assert_eq!(money(&line["shipping_price"]), 0.0);
            seen.insert(sku, money(&line["price_unit"]));
        }
    }
    assert_eq!(
        seen,
        [("SKU-A".to_owned(), 19.99), ("SKU-B".to_owned(), 5.0)].into()
    );
    // A scripted line takes its price from the catalogue.
    let scripted = order(&sim, "K-1").await;
    assert_eq!(money(&scripted["order_lines"][0]["price_unit"]), 5.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_demo_catalogue_reads_with_titles_and_built_in_products() {
    let catalogue = Catalogue::from_arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/demo-catalogue.csv"
    ))
    .unwrap();
    assert!((8..=12).contains(&catalogue.len()), "{}", catalogue.len());
    let sim = start(SimConfig {
        catalogue,
        ..config()
    })
    .await;
    sim.add_orders(vec![with_items(
        "DEMO-1",
        vec![line("SHOP-LG-OLED55"), line("SHOP-KOBO-CLARA-BW")],
    )]);
    let lines = &order(&sim, "DEMO-1").await["order_lines"];
    // A built-in SKU keeps its product id and shipping; quoted titles keep commas and quotes.
    assert_eq!(lines[0]["product_sku"], "16842915");
    assert_eq!(money(&lines[0]["shipping_price"]), 49.99);
    assert_eq!(
        lines[0]["product_title"],
        "LG 55\" 4K UHD HDR OLED webOS Smart TV"
    );
    assert_eq!(
        lines[1]["product_title"],
        "Kobo Clara BW 6\" eReader, Black"
    );
    assert_eq!(money(&lines[1]["price_unit"]), 179.99);
    sim.shutdown().await;
}

#[test]
fn catalogue_files_and_lists_parse_with_or_without_a_header() {
    let file = Catalogue::from_csv("c.csv", "sku,unit_price,title\nA,1.50,First\n\nB,2\n").unwrap();
    assert_eq!(file.len(), 2);
    let headerless =
        Catalogue::from_csv("c.csv", "A,1\r\nB,2,\"Second, with a comma\"\r\n").unwrap();
    assert_eq!(headerless.len(), 2);
    assert_eq!(Catalogue::from_list("A:1").unwrap().len(), 1);
    // A colon in the path: a file that exists wins over reading the value as a list.
    let path = std::env::temp_dir().join(format!("sim-catalogue:{}.csv", std::process::id()));
    std::fs::write(&path, "sku,unit_price\nX,3\n").unwrap();
    let from_file = Catalogue::from_arg(path.to_str().unwrap());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file.unwrap().len(), 1);
}

#[test]
fn bad_catalogues_are_refused_naming_the_line_or_entry() {
    let csv_cases = [
        (
            "sku,unit_price\nA,1\nB,abc\n",
            "c.csv line 3: unit_price \"abc\" for B is not a price",
        ),
        ("A,1\nB,-2\n", "line 2: unit_price \"-2\" for B"),
        (
            "A,1,T,extra\n",
            "line 1: expected sku,unit_price[,title], found 4 fields",
        ),
        (
            "A\n",
            "line 1: expected sku,unit_price[,title], found 1 fields",
        ),
        ("A,1\n,2\n", "line 2: the SKU is empty"),
        (
            "A,1\nB,2\nA,3\n",
            "line 3: SKU A is already in the catalogue above",
        ),
        ("sku,unit_price\n", "catalogue file c.csv holds no SKU"),
        ("", "holds no SKU"),
    ];
    for (text, expected) in csv_cases {
        let error = Catalogue::from_csv("c.csv", text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    let list_cases = [
        ("A:1,B", "entry 2 (\"B\"): expected SKU:PRICE"),
        ("A:1,B:NaN", "entry 2 (\"B:NaN\"): unit_price \"NaN\""),
        ("A:1,:2", "entry 2 (\":2\"): the SKU is empty"),
        ("A:1,A:2", "SKU A is already in the catalogue above"),
    ];
    for (list, expected) in list_cases {
        let error = Catalogue::from_list(list).unwrap_err().to_string();
        assert!(error.contains(expected), "{list:?}: {error}");
    }
    let missing = Catalogue::from_arg("no-such-catalogue.csv")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("cannot read the catalogue file no-such-catalogue.csv"),
        "{missing}"
    );
}

#[test]
fn the_binary_documents_the_new_flags_and_refuses_a_bad_catalogue() {
    let binary = env!("CARGO_BIN_EXE_marketplace-sim");
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--skus",
        "--acceptance-deadline",
        "--no-partial-acceptance",
        "--retry-after-format",
        "--rate-limit",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let bad = std::process::Command::new(binary)
        .args(["--key", "k", "--skus", "A:1,B:two"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("catalogue list entry 2 (\"B:two\")"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cancel_after_accept_and_never_moves_behaviours() {
    let sim = start(SimConfig {
        step: Duration::from_millis(20),
        ..config()
    })
    .await;
    sim.add_orders(vec![
        scripted(
            "C-1",
            Behaviour {
                cancel_after_accept: true,
                ..Behaviour::default()
            },
        ),
        scripted(
            "S-1",
            Behaviour {
                never_moves: true,
                ..Behaviour::default()
            },
        ),
    ]);
    decide(&sim, "C-1", true, StatusCode::NO_CONTENT).await;
    decide(&sim, "S-1", true, StatusCode::NO_CONTENT).await;
    let seen = wait_for_state(&sim, "C-1", "CANCELED").await;
    assert_eq!(seen.last().unwrap(), "CANCELED");
    assert!(seen.len() <= 2, "{seen:?}");
    let cancelled = order(&sim, "C-1").await;
    assert_eq!(cancelled["order_state_reason_code"], "CUSTOMER_CANCELED");
    assert_eq!(cancelled["order_lines"][0]["order_line_state"], "CANCELED");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.order_state("S-1").unwrap(), "WAITING_ACCEPTANCE");
    let faults = sim.stats().faults_injected;
    assert_eq!(faults["cancel"], 1);
    assert_eq!(faults["stuck"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn orders_can_start_in_any_state_even_unknown_ones() {
    let sim = start(config()).await;
    sim.add_orders(vec![
        OrderSpec {
            state: Some("SHIPPING".into()),
            ..spec("X-SHIP")
        },
        OrderSpec {
            state: Some("PARTY".into()),
            reason_code: Some("BALLOONS".into()),
            ..spec("X-PARTY")
        },
    ]);
    let party = order(&sim, "X-PARTY").await;
    assert_eq!(party["order_state"], "PARTY");
    assert_eq!(party["order_state_reason_code"], "BALLOONS");
    assert_eq!(party["order_lines"][0]["order_line_state"], "PARTY");
    let shipping = order(&sim, "X-SHIP").await;
    assert!(shipping["customer"]["billing_address"]["street_1"].is_string());
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn the_raw_key_is_required_and_bearer_is_refused() {
    let sim = start(SimConfig {
        orders: 1,
        ..config()
    })
    .await;
    let url = format!("{}/api/orders", sim.url());
    let attempts = [None, Some("wrong"), Some("Bearer test-shop-key")];
    for key in attempts {
        let mut request = sim.http.get(&url);
        if let Some(key) = key {
            request = request.header("Authorization", key);
        }
        let (status, code) = error_code(request.send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        );
    }
    let response = sim
        .http
        .put(format!("{}/api/orders/SIM-000001-A/accept", sim.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        sim.order_state("SIM-000001-A").unwrap(),
        "WAITING_ACCEPTANCE"
    );

    // shop_id is accepted and ignored.
    assert_eq!(or11(&sim, "shop_id=2000").await["total_count"], 1);
    let stats = sim.stats();
    assert_eq!(stats.requests["unauthorized"], 4);
    assert_eq!(stats.requests["OR11"], 1);
    assert!(!stats.requests.contains_key("OR21"));
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// OR21 errors

#[tokio::test]
async fn or21_reports_each_mirakl_error_code() {
    let sim = start(config()).await;
    sim.add_orders(vec![
        OrderSpec {
            lines: Some(2),
            ..spec("E-1")
        },
        OrderSpec {
            state: Some("SHIPPING".into()),
            lines: Some(1),
            ..spec("E-SHIPPING")
        },
    ]);
    let cases = [
        (
            "NOPE",
            r#"{"order_lines":[{"id":"NOPE-1","accepted":true}]}"#,
            404,
            "ORDER_NOT_FOUND",
        ),
        (
            "E-SHIPPING",
            r#"{"order_lines":[{"id":"E-SHIPPING-1","accepted":true}]}"#,
            400,
            "ORDER_INVALID_STATE",
        ),
        (
            "E-1",
            r#"{"order_lines":[{"id":"E-1-1","accepted":true},{"id":"E-1-9","accepted":true}]}"#,
            400,
            "ORDER_LINE_NOT_FOUND",
        ),
        (
            "E-1",
            r#"{"order_lines":[{"id":"E-1-1","accepted":true}]}"#,
            400,
            "ORDER_LINE_ACCEPTANCE_DECISION_MISSING",
        ),
        (
            "E-1",
            r#"{"order_lines":[{"id":"E-1-1","accepted":true},{"id":"E-1-1","accepted":true}]}"#,
            400,
            "ORDER_LINE_DUPLICATE_ID",
        ),
        (
            "E-1",
            r#"{"order_lines":[null]}"#,
            400,
            "ORDER_LINE_NULL_ELEMENT",
        ),
        ("E-1", r#"{"order_lines": "#, 400, "VALIDATION_ERROR"),
        (
            "E-1",
            r#"{"order_lines":[{"id":"E-1-1"}]}"#,
            400,
            "VALIDATION_ERROR",
        ),
    ];
    for (order_id, body, status, expected) in cases {
        let (got_status, code) = error_code(or21(&sim, order_id, body).await).await;
        assert_eq!(
            (got_status.as_u16(), code.as_str()),
            (status, expected),
            "{body}"
        );
    }
    assert_eq!(sim.order_state("E-1").unwrap(), "WAITING_ACCEPTANCE");
    let stats = sim.stats();
    assert_eq!(stats.or21_not_waiting, 1);
    assert_eq!(stats.or21_accepted, 0);
    assert_eq!(stats.or21_calls_per_order["E-1"], 6);
    assert_eq!(stats.requests["OR21"], 8);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// OR11

#[tokio::test]
async fn or11_filters_by_ids_and_states() {
    let sim = start(SimConfig {
        orders: 5,
        ..config()
    })
    .await;
    sim.add_orders(vec![
        OrderSpec {
            state: Some("SHIPPING".into()),
            ..spec("F-SHIP")
        },
        OrderSpec {
            state: Some("PARTY".into()),
            ..spec("F-PARTY")
        },
    ]);
    let body = or11(&sim, "order_ids=SIM-000002-A,F-PARTY,UNKNOWN,SIM-000002-A").await;
    assert_eq!(ids(&body), ["SIM-000002-A", "F-PARTY"]);
    assert_eq!(body["total_count"], 2);

    // Created in the same instant: sorted by id after the creation date.
    let body = or11(&sim, "order_state_codes=SHIPPING,PARTY").await;
    assert_eq!(ids(&body), ["F-PARTY", "F-SHIP"]);
    let body = or11(
        &sim,
        "order_state_codes=WAITING_ACCEPTANCE&order_ids=F-SHIP,SIM-000001-A",
    )
    .await;
    assert_eq!(ids(&body), ["SIM-000001-A"]);

    let too_many: Vec<String> = (0..101).map(|i| format!("ID-{i}")).collect();
    let (status, error) = or11_status(&sim, &format!("order_ids={}", too_many.join(","))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["code"], "VALIDATION_ERROR");
    let hundred = &too_many[..100];
    let (status, _) = or11_status(&sim, &format!("order_ids={}", hundred.join(","))).await;
    assert_eq!(status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn or11_pages_ten_by_default_and_counts_every_match() {
    let sim = start(SimConfig {
        orders: 25,
        ..config()
    })
    .await;
    let all: Vec<String> = (1..=25).map(|i| format!("SIM-{i:06}-A")).collect();

    let body = or11(&sim, "").await;
    assert_eq!(ids(&body), all[..10]);
    assert_eq!(body["total_count"], 25);

    let body = or11(&sim, "max=7&offset=20&sort=dateCreated&order=asc").await;
    assert_eq!(ids(&body), all[20..]);
    assert_eq!(body["total_count"], 25);

    let body = or11(&sim, "max=3&order=desc").await;
    assert_eq!(ids(&body), ["SIM-000025-A", "SIM-000024-A", "SIM-000023-A"]);

    let body = or11(&sim, "paginate=false&max=500").await;
    assert_eq!(ids(&body), all);

    let body = or11(&sim, "max=100").await;
    assert_eq!(body["orders"].as_array().unwrap().len(), 25);

    for query in [
        "max=101",
        "max=0",
        "max=ten",
        "offset=-1",
        "paginate=maybe",
        "order=up",
        "sort=dateUpdated",
    ] {
        let (status, error) = or11_status(&sim, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error["code"], "VALIDATION_ERROR", "{query}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn or11_filters_by_update_date() {
    let sim = start(SimConfig {
        orders: 3,
        step: Duration::ZERO,
        ..config()
    })
    .await;
    decide(&sim, "SIM-000002-A", true, StatusCode::NO_CONTENT).await;
    let since = (chrono::Utc::now() - chrono::TimeDelta::minutes(1)).to_rfc3339();
    let query = format!("start_update_date={}", urlencode(&since));
    assert_eq!(ids(&or11(&sim, &query).await), ["SIM-000002-A"]);
    let (status, _) = or11_status(&sim, "start_update_date=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

fn urlencode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

/// Checks `value` against a schema of the OpenAPI document: required keys present, types right,
/// recursively. Null is accepted anywhere: the spec's own example has nulls in required fields.
fn validate(spec: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    };
    if value.is_null() {
        return;
    }
    let kind = schema["type"]
        .as_str()
        .or_else(|| schema.get("properties").map(|_| "object"));
    let ok = match kind {
        Some("object") => {
            let Some(object) = value.as_object() else {
                errors.push(format!("{path}: not an object"));
                return;
            };
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                if !object.contains_key(key) {
                    errors.push(format!("{path}.{key}: required, missing"));
                }
            }
            for (key, child) in object {
                if let Some(property) = schema["properties"].get(key) {
                    validate(spec, property, child, &format!("{path}.{key}"), errors);
                }
            }
            true
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{path}: not an array"));
                return;
            };
            for (index, item) in items.iter().enumerate() {
                validate(
                    spec,
                    &schema["items"],
                    item,
                    &format!("{path}[{index}]"),
                    errors,
                );
            }
            true
        }
        Some("string") => value.is_string(),
        Some("number") => value.is_number(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: {value} is not {kind:?}"));
    }
}

fn openapi() -> Value {
    serde_json::from_str(include_str!(
        "../../../tests/fixtures/mirakl/openapi-orders-subset.json"
    ))
    .unwrap()
}

fn assert_valid(spec: &Value, schema: &str, value: &Value) {
    let mut errors = Vec::new();
    let schema = json!({ "$ref": format!("#/components/schemas/{schema}") });
    validate(spec, &schema, value, "$", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test]
async fn or11_and_a01_answers_match_the_published_shapes() {
    let openapi = openapi();
    let sim = start(SimConfig {
        orders: 6,
        step: Duration::ZERO,
        ..config()
    })
    .await;
    sim.add_orders(vec![OrderSpec {
        state: Some("PARTY".into()),
        ..spec("V-PARTY")
    }]);
    // Orders in every state the simulator produces: waiting, shipping, refused, cancelled.
    decide(&sim, "SIM-000001-A", true, StatusCode::NO_CONTENT).await;
    decide(&sim, "SIM-000002-A", false, StatusCode::NO_CONTENT).await;
    sim.add_orders(vec![scripted(
        "V-CANCEL",
        Behaviour {
            cancel_after_accept: true,
            ..Behaviour::default()
        },
    )]);
    decide(&sim, "V-CANCEL", true, StatusCode::NO_CONTENT).await;

    let body = or11(&sim, "paginate=false").await;
    assert_eq!(body["total_count"], 8);
    assert_valid(&openapi, "OR11_Response_200", &body);
    let states: Vec<&str> = body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["order_state"].as_str().unwrap())
        .collect();
    for state in [
        "WAITING_ACCEPTANCE",
        "SHIPPING",
        "REFUSED",
        "CANCELED",
        "PARTY",
    ] {
        assert!(states.contains(&state), "{states:?}");
    }
    // Line ids, totals and money add up.
    let first = &body["orders"][0];
    let lines = first["order_lines"].as_array().unwrap();
    assert!((1..=3).contains(&lines.len()));
    let sum: f64 = lines
        .iter()
        .map(|l| l["total_price"].as_f64().unwrap())
        .sum();
    assert!((sum - first["total_price"].as_f64().unwrap()).abs() < 0.005);
    assert_eq!(lines[0]["order_line_id"], "SIM-000001-A-1");
    assert_eq!(first["currency_iso_code"], "CAD");

    let account = get(&sim, "/api/account").await;
    assert_eq!(account.status(), StatusCode::OK);
    let account: Value = account.json().await.unwrap();
    assert_valid(&openapi, "A01_Response_200", &account);
    assert_eq!(sim.stats().requests["A01"], 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Faults (rate 1.0, so deterministic)

#[tokio::test]
async fn latency_fixed_and_ranged_delays_every_api_request() {
    for (low, high) in [(150, 150), (100, 200)] {
        let sim = start(with_faults(Faults {
            latency: Some((Duration::from_millis(low), Duration::from_millis(high))),
            ..Faults::default()
        }))
        .await;
        let started = Instant::now();
        get(&sim, "/api/account").await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(low), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(high + 1000), "{elapsed:?}");
        // Control endpoints are not delayed.
        let started = Instant::now();
        sim.http
            .get(format!("{}/sim/stats", sim.url()))
            .send()
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(low));
        assert_eq!(sim.stats().faults_injected["latency"], 1);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn error_rate_answers_5xx_without_applying_the_acceptance() {
    let sim = start(with_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    sim.add_orders(vec![OrderSpec {
        lines: Some(1),
        ..spec("ERR-1")
    }]);
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let response = or21(
            &sim,
            "ERR-1",
            r#"{"order_lines":[{"id":"ERR-1-1","accepted":true}]}"#,
        )
        .await;
        statuses.insert(response.status().as_u16());
    }
    assert_eq!(statuses.into_iter().collect::<Vec<_>>(), [500, 502, 503]);
    assert_eq!(sim.order_state("ERR-1").unwrap(), "WAITING_ACCEPTANCE");
    let (status, _) = or11_status(&sim, "").await;
    assert!(status.is_server_error());
    assert!(get(&sim, "/api/account").await.status().is_server_error());
    let stats = sim.stats();
    assert_eq!(stats.or21_accepted, 0);
    let injected: u64 = ["status_500", "status_502", "status_503"]
        .iter()
        .map(|key| stats.faults_injected.get(*key).copied().unwrap_or(0))
        .sum();
    assert_eq!(injected, 32);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttle_rate_answers_429_with_retry_after() {
    let sim = start(with_faults(Faults {
        throttle_rate: 1.0,
        retry_after: Duration::from_millis(1500),
        ..Faults::default()
    }))
    .await;
    sim.add_orders(vec![OrderSpec {
        lines: Some(1),
        ..spec("T-1")
    }]);
    let response = or21(
        &sim,
        "T-1",
        r#"{"order_lines":[{"id":"T-1-1","accepted":true}]}"#,
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(sim.order_state("T-1").unwrap(), "WAITING_ACCEPTANCE");
    let (status, _) = or11_status(&sim, "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sim.stats().faults_injected["throttle"], 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_default_retry_after_is_one_second() {
    let sim = start(with_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    let response = get(&sim, "/api/account").await;
    assert_eq!(response.headers()["retry-after"], "1");
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_throttles_requests_over_the_budget() {
    let sim = start(with_faults(Faults {
        rate_limit: Some(3),
        ..Faults::default()
    }))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&sim, "/api/account").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(sim.stats().faults_injected["rate_limit"], 2);
    // The bucket refills at 3 per second.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&sim, "/api/account").await.status(), StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn each_endpoint_has_its_own_rate_limit_and_429s_are_counted_per_endpoint() {
    let sim = start(with_faults(Faults {
        rate_limit: Some(2),
        retry_after: Duration::from_secs(5),
        ..Faults::default()
    }))
    .await;
    sim.add_orders(vec![spec("B-1")]);
    let mut or11_statuses = Vec::new();
    for _ in 0..3 {
        or11_statuses.push(get(&sim, "/api/orders").await.status().as_u16());
    }
    assert_eq!(or11_statuses, [200, 200, 429]);
    // OR11's empty bucket leaves A01's and OR21's full.
    let mut a01_statuses = Vec::new();
    for _ in 0..3 {
        a01_statuses.push(get(&sim, "/api/account").await.status().as_u16());
    }
    assert_eq!(a01_statuses, [200, 200, 429]);
    let refused = or21(&sim, "B-1", r#"{"order_lines":[]}"#).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "not throttled");
    let throttled = get(&sim, "/api/orders").await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "5");

    let stats = sim.stats();
    assert_eq!(
        stats.throttled,
        [("A01".to_owned(), 1), ("OR11".to_owned(), 2)].into()
    );
    assert_eq!(stats.faults_injected["rate_limit"], 3);
    assert_eq!(stats.requests["OR11"], 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_can_change_while_the_simulator_runs() {
    let owned = start(config()).await;
    let sim = &owned;
    let statuses = |n| async move {
        let mut statuses = Vec::new();
        for _ in 0..n {
            statuses.push(get(sim, "/api/account").await.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses(3).await, [200, 200, 200], "no limit at first");
    let set = |body: Value| {
        sim.http
            .post(format!("{}/sim/rate-limit", sim.url()))
            .json(&body)
            .send()
    };
    let response = set(json!({"per_second": 2})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        statuses(3).await,
        [200, 200, 429],
        "2 per second from now on"
    );
    let refused = set(json!({"per_second": "fast"})).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    sim.set_rate_limit(None);
    assert_eq!(statuses(4).await, [200, 200, 200, 200], "lifted");
    assert_eq!(sim.stats().faults_injected["rate_limit"], 1);
    owned.shutdown().await;
}

#[tokio::test]
async fn retry_after_can_be_an_http_date() {
    let sim = start(with_faults(Faults {
        rate_limit: Some(1),
        retry_after: Duration::from_secs(5),
        retry_after_http_date: true,
        ..Faults::default()
    }))
    .await;
    assert_eq!(get(&sim, "/api/account").await.status(), StatusCode::OK);
    let before = std::time::SystemTime::now();
    let response = get(&sim, "/api/account").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = response.headers()["retry-after"].to_str().unwrap();
    assert!(header.ends_with(" GMT"), "{header}");
    let at = httpdate::parse_http_date(header).unwrap();
    // At least the 5 s asked for, rounded up to the next whole second.
    let wait = at.duration_since(before).unwrap();
    assert!(
        (Duration::from_secs(5)..=Duration::from_secs(7)).contains(&wait),
        "{header} is {wait:?} away"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn random_and_scripted_throttles_are_counted_per_endpoint() {
    let sim = start(with_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    sim.add_orders(vec![spec("C-1")]);
    get(&sim, "/api/orders").await;
    get(&sim, "/api/account").await;
    or21(&sim, "C-1", r#"{"order_lines":[]}"#).await;
    or21(&sim, "C-1", r#"{"order_lines":[]}"#).await;
    let stats = sim.stats();
    assert_eq!(
        stats.throttled,
        [
            ("A01".to_owned(), 1),
            ("OR11".to_owned(), 1),
            ("OR21".to_owned(), 2)
        ]
        .into()
    );
    assert_eq!(stats.faults_injected["throttle"], 4);
    sim.shutdown().await;

    let sim = start(config()).await;
    sim.add_orders(vec![scripted(
        "C-2",
        Behaviour {
            or11: vec![Scripted::Throttle],
            or21: vec![Scripted::Throttle],
            ..Behaviour::default()
        },
    )]);
    assert_eq!(
        or11_status(&sim, "order_ids=C-2").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    decide(&sim, "C-2", true, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        sim.stats().throttled,
        [("OR11".to_owned(), 1), ("OR21".to_owned(), 1)].into()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_rate_applies_the_acceptance_then_answers_after_the_client_gave_up() {
    let sim = start(SimConfig {
        step: Duration::from_secs(60),
        faults: Faults {
            slow_rate: 1.0,
            slow_delay: Duration::from_secs(30),
            ..Faults::default()
        },
        ..config()
    })
    .await;
    sim.add_orders(vec![OrderSpec {
        lines: Some(1),
        ..spec("SLOW-1")
    }]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let result = impatient
        .put(format!("{}/api/orders/SLOW-1/accept", sim.url()))
        .header("Authorization", KEY)
        .body(r#"{"order_lines":[{"id":"SLOW-1-1","accepted":true}]}"#)
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    let stats = sim.stats();
    assert_eq!(stats.or21_accepted, 1);
    assert_eq!(stats.faults_injected["slow"], 1);
    // Shutdown cuts the held-back answer short instead of waiting 30 s.
    let started = Instant::now();
    sim.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn cancel_and_stuck_rates_decide_fates_at_creation() {
    let step = Duration::from_millis(20);
    let cancelling = start(SimConfig {
        orders: 2,
        step,
        faults: Faults {
            cancel_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let stuck = start(SimConfig {
        orders: 2,
        step,
        faults: Faults {
            stuck_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    for sim in [&cancelling, &stuck] {
        decide(sim, "SIM-000001-A", true, StatusCode::NO_CONTENT).await;
    }
    wait_for_state(&cancelling, "SIM-000001-A", "CANCELED").await;
    tokio::time::sleep(step * 5).await;
    assert_eq!(
        stuck.order_state("SIM-000001-A").unwrap(),
        "WAITING_ACCEPTANCE"
    );
    assert_eq!(stuck.stats().faults_injected["stuck"], 1);
    assert_eq!(cancelling.stats().faults_injected["cancel"], 1);
    cancelling.shutdown().await;
    stuck.shutdown().await;
}

#[tokio::test]
async fn html_rate_answers_or11_with_an_html_page() {
    let sim = start(SimConfig {
        orders: 1,
        faults: Faults {
            html_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let response = get(&sim, "/api/orders").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
    // OR21 is not affected by html_rate.
    decide(&sim, "SIM-000001-A", true, StatusCode::NO_CONTENT).await;
    assert_eq!(sim.stats().faults_injected["html"], 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Scripted behaviour

#[tokio::test]
async fn or21_scripts_are_consumed_one_per_call_and_beat_random_faults() {
    let sim = start(SimConfig {
        step: Duration::from_secs(60),
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    sim.add_orders(vec![OrderSpec {
        lines: Some(1),
        ..scripted(
            "SC-1",
            Behaviour {
                or21: vec![
                    Scripted::Status500,
                    Scripted::Status502,
                    Scripted::Status503,
                    Scripted::Throttle,
                    Scripted::Html,
                    Scripted::Ok,
                ],
                ..Behaviour::default()
            },
        )
    }]);
    let body = r#"{"order_lines":[{"id":"SC-1-1","accepted":true}]}"#;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = or21(&sim, "SC-1", body).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [500, 502, 503, 429, 200, 204]);
    // Script exhausted: the random faults are back.
    assert!(or21(&sim, "SC-1", body).await.status().is_server_error());
    let stats = sim.stats();
    assert_eq!(stats.or21_accepted, 1);
    assert_eq!(stats.or21_calls_per_order["SC-1"], 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_slow_applied_accepts_and_holds_the_answer_back() {
    let sim = start(SimConfig {
        step: Duration::from_secs(60),
        faults: Faults {
            slow_delay: Duration::from_millis(300),
            ..Faults::default()
        },
        ..config()
    })
    .await;
    sim.add_orders(vec![OrderSpec {
        lines: Some(1),
        ..scripted(
            "SL-1",
            Behaviour {
                or21: vec![Scripted::SlowApplied],
                ..Behaviour::default()
            },
        )
    }]);
    let started = Instant::now();
    let response = or21(
        &sim,
        "SL-1",
        r#"{"order_lines":[{"id":"SL-1-1","accepted":true}]}"#,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.stats().or21_accepted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn or11_scripts_apply_to_calls_that_include_the_order() {
    let sim = start(SimConfig {
        orders: 2,
        ..config()
    })
    .await;
    sim.add_orders(vec![scripted(
        "O-1",
        Behaviour {
            or11: vec![Scripted::Html, Scripted::Status503, Scripted::Ok],
            ..Behaviour::default()
        },
    )]);
    // A call that does not include O-1 leaves its script alone.
    or11(&sim, "order_ids=SIM-000001-A").await;
    let html = get(&sim, "/api/orders?order_ids=O-1").await;
    assert_eq!(html.status(), StatusCode::OK);
    assert!(html.text().await.unwrap().starts_with("<!DOCTYPE html>"));
    let unavailable = get(&sim, "/api/orders?order_ids=O-1").await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ids(&or11(&sim, "order_ids=O-1,SIM-000002-A").await),
        ["SIM-000002-A", "O-1"]
    );
    assert_eq!(ids(&or11(&sim, "").await).len(), 3);
    let faults = sim.stats().faults_injected;
    assert_eq!(faults["html"], 1);
    assert_eq!(faults["status_503"], 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Control endpoints, statistics, determinism

#[tokio::test]
async fn control_endpoints_add_orders_and_report() {
    let sim = start(config()).await;
    let post = |body: Value| {
        sim.http
            .post(format!("{}/sim/orders", sim.url()))
            .json(&body)
            .send()
    };
    let response = post(json!({"count": 3})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let added: Value = response.json().await.unwrap();
    assert_eq!(
        added["order_ids"],
        json!(["SIM-000001-A", "SIM-000002-A", "SIM-000003-A"])
    );

    let response = post(json!({"orders": [
        {"order_id": "CTL-1", "lines": 2, "behaviour": {"or21": ["throttle", "slow_applied"]}},
        {"state": "REFUSED", "reason_code": "NO_STOCK"},
    ]}))
    .await
    .unwrap();
    let added: Value = response.json().await.unwrap();
    assert_eq!(added["order_ids"], json!(["CTL-1", "SIM-000004-A"]));
    assert_eq!(
        order(&sim, "CTL-1").await["order_lines"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(sim.order_state("SIM-000004-A").unwrap(), "REFUSED");

    for bad in [
        json!({}),
        json!({"count": 1, "orders": []}),
        json!({"orders": [{"lines": 0}]}),
        json!({"orders": [{"behaviour": {"or21": ["explode"]}}]}),
        json!({"orders": [{"colour": "red"}]}),
    ] {
        let response = post(bad.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let missing = sim
        .http
        .get(format!("{}/sim/orders/NOPE", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let stats: Value = sim
        .http
        .get(format!("{}/sim/stats", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["orders_by_state"],
        json!({"REFUSED": 1, "WAITING_ACCEPTANCE": 4})
    );
    assert_eq!(stats["requests"], json!({}));
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_per_endpoint() {
    let sim = start(SimConfig {
        orders: 2,
        step: Duration::ZERO,
        ..config()
    })
    .await;
    or11(&sim, "").await;
    or11(&sim, "max=1").await;
    get(&sim, "/api/account").await;
    assert_eq!(
        get(&sim, "/api/orders/SIM-000001-A").await.status(),
        StatusCode::NOT_FOUND
    );
    decide(&sim, "SIM-000001-A", true, StatusCode::NO_CONTENT).await;
    decide(&sim, "SIM-000001-A", true, StatusCode::BAD_REQUEST).await;
    decide(&sim, "SIM-000002-A", true, StatusCode::NO_CONTENT).await;

    let stats = sim.stats();
    assert_eq!(stats.requests["OR11"], 2);
    assert_eq!(stats.requests["A01"], 1);
    assert_eq!(stats.requests["OR21"], 3);
    assert_eq!(stats.requests["other"], 1);
    assert_eq!(stats.or21_calls_per_order["SIM-000001-A"], 2);
    assert_eq!(stats.or21_calls_per_order["SIM-000002-A"], 1);
    assert_eq!(stats.or21_accepted, 2);
    assert_eq!(stats.or21_not_waiting, 1);
    assert_eq!(stats.orders_by_state["SHIPPING"], 2);
    sim.shutdown().await;
}

/// The OR11 answer without the fields that depend on when the simulator started.
fn without_dates(mut body: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|key, _| !key.ends_with("_date") && key != "shipping_deadline");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut body);
    body
}

#[tokio::test]
async fn the_same_seed_gives_the_same_orders() {
    let make = |seed| {
        start(SimConfig {
            orders: 20,
            seed,
            ..config()
        })
    };
    let (a, b, c) = (make(7).await, make(7).await, make(8).await);
    let query = "paginate=false";
    let (body_a, body_b, body_c) = (
        or11(&a, query).await,
        or11(&b, query).await,
        or11(&c, query).await,
    );
    assert_eq!(without_dates(body_a.clone()), without_dates(body_b));
    assert_ne!(without_dates(body_a.clone()), without_dates(body_c));
    assert_eq!(ids(&body_a).len(), 20);

    // Created dates are spread over the last hours, oldest first.
    let dates: Vec<&str> = body_a["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["created_date"].as_str().unwrap())
        .collect();
    assert!(dates.windows(2).all(|pair| pair[0] <= pair[1]));
    let oldest = chrono::DateTime::parse_from_rfc3339(dates[0]).unwrap();
    let age = chrono::Utc::now().signed_duration_since(oldest);
    assert!(
        age > chrono::TimeDelta::hours(5) && age < chrono::TimeDelta::minutes(361),
        "{age}"
    );
    for sim in [a, b, c] {
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn random_faults_are_reproducible_from_the_seed() {
    let run = || async {
        let sim = start(SimConfig {
            orders: 1,
            seed: 42,
            faults: Faults {
                error_rate: 0.3,
                throttle_rate: 0.3,
                ..Faults::default()
            },
            ..config()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(get(&sim, "/api/orders").await.status().as_u16());
        }
        sim.shutdown().await;
        statuses
    };
    let first = run().await;
    assert_eq!(first, run().await);
    assert!(first.contains(&200) && first.contains(&429) && first.iter().any(|s| *s >= 500));
}

// ---------------------------------------------------------------------------------------------
// Several marketplaces in one process

async fn start_marketplaces(marketplaces: Vec<(&str, SimConfig)>) -> Simulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marketplaces = marketplaces
        .into_iter()
        .map(|(name, config)| (name.to_owned(), config))
        .collect();
    Simulator::start_marketplaces(marketplaces, listener)
        .await
        .unwrap()
}

/// OR21 accepting every line of `order_id` on the marketplace at `base`.
async fn accept_at(http: &reqwest::Client, base: &str, order_id: &str) -> StatusCode {
    let order: Value = http
        .get(format!("{base}/sim/orders/{order_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.put(format!("{base}/api/orders/{order_id}/accept"))
        .header("Authorization", KEY)
        .header("Content-Type", "application/json")
        .body(decisions(&order, true))
        .send()
        .await
        .unwrap()
        .status()
}

async fn waiting_ids(http: &reqwest::Client, base: &str) -> (StatusCode, Vec<String>) {
    let response = http
        .get(format!(
            "{base}/api/orders?order_state_codes=WAITING_ACCEPTANCE&max=100"
        ))
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap();
    match response.status() {
        StatusCode::OK => (StatusCode::OK, ids(&response.json().await.unwrap())),
        status => (status, Vec::new()),
    }
}

#[tokio::test]
async fn several_marketplaces_share_order_ids_but_not_their_orders() {
    let seeded = SimConfig {
        orders: 3,
        step: Duration::ZERO,
        ..config()
    };
    let sim = start_marketplaces(vec![("bestbuy_ca", seeded.clone()), ("other", seeded)]).await;
    let http = reqwest::Client::new();
    let (ca, other) = (
        sim.marketplace("bestbuy_ca").unwrap(),
        sim.marketplace("other").unwrap(),
    );
    assert_eq!(ca.url(), format!("http://{}/bestbuy_ca", sim.addr));
    assert_eq!(other.name(), Some("other"));

    let (_, ca_ids) = waiting_ids(&http, &ca.url()).await;
    let (_, other_ids) = waiting_ids(&http, &other.url()).await;
    assert_eq!(ca_ids.len(), 3);
    assert_eq!(ca_ids, other_ids, "seeded the same way: the same ids");

    let id = &ca_ids[0];
    assert_eq!(
        accept_at(&http, &ca.url(), id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ca.order_state(id).as_deref(), Some("SHIPPING"));
    assert_eq!(
        other.order_state(id).as_deref(),
        Some("WAITING_ACCEPTANCE"),
        "the other marketplace's order of the same id is untouched"
    );
    let (_, other_waiting) = waiting_ids(&http, &other.url()).await;
    assert_eq!(other_waiting, other_ids);
    // And it can be accepted there too, once.
    assert_eq!(
        accept_at(&http, &other.url(), id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ca.stats().or21_not_waiting, 0);
    assert_eq!(other.stats().or21_not_waiting, 0);
    assert_eq!(ca.stats().requests.get("OR21"), Some(&1));
    assert_eq!(other.stats().requests.get("OR21"), Some(&1));

    // Orders added to one marketplace exist only there.
    let added = other.add_orders(vec![spec("ONLY-OTHER")]);
    assert_eq!(added, ["ONLY-OTHER"]);
    assert!(ca.order_state("ONLY-OTHER").is_none());
    let missing = http
        .get(format!("{}/sim/orders/ONLY-OTHER", ca.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_fault_on_one_marketplace_leaves_the_other_alone() {
    let broken = SimConfig {
        orders: 2,
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    };
    let healthy = SimConfig {
        orders: 2,
        ..config()
    };
    let sim = start_marketplaces(vec![("broken", broken), ("healthy", healthy)]).await;
    let http = reqwest::Client::new();
    let (broken, healthy) = (
        sim.marketplace("broken").unwrap(),
        sim.marketplace("healthy").unwrap(),
    );
    let (status, _) = waiting_ids(&http, &broken.url()).await;
    assert!(status.is_server_error(), "{status}");
    let (status, ids) = waiting_ids(&http, &healthy.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids.len(), 2);

    // A rate limit set through one marketplace's control route throttles that one only.
    let set = http
        .post(format!("{}/sim/rate-limit", healthy.url()))
        .json(&json!({ "per_second": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let (status, _) = waiting_ids(&http, &healthy.url()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    healthy.set_rate_limit(None);
    let (status, _) = waiting_ids(&http, &healthy.url()).await;
    assert_eq!(status, StatusCode::OK);

    // The counters are each marketplace's own, read over HTTP as in-process.
    let stats: Value = http
        .get(format!("{}/sim/stats", broken.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests"]["OR11"], 1);
    assert_eq!(broken.stats().requests.get("OR11"), Some(&1));
    assert_eq!(healthy.stats().requests.get("OR11"), Some(&3));
    let injected = |stats: marketplace_sim::SimStats| -> u64 {
        stats
            .faults_injected
            .iter()
            .filter(|(key, _)| key.starts_with("status_"))
            .map(|(_, count)| *count)
            .sum()
    };
    assert_eq!(injected(broken.stats()), 1);
    assert_eq!(injected(healthy.stats()), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn several_marketplaces_serve_nothing_at_the_root() {
    let sim = start_marketplaces(vec![("a", config()), ("b", config())]).await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/api/orders", sim.url()))
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let body: Value = http
        .get(format!("{}/sim/stats", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("under /a, /b"),
        "{body}"
    );
    // A wrong key is refused per marketplace, as at the root.
    let refused = http
        .get(format!("{}/a/api/account", sim.url()))
        .header("Authorization", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let account: Value = http
        .get(format!("{}/b/api/account", sim.url()))
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["shop_id"], 2000);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_marketplace_names_are_refused() {
    for names in [
        vec!["Best-Buy"],
        vec!["1x"],
        vec!["a/b"],
        vec![""],
        vec!["ok", "ok"],
        vec![],
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let marketplaces = names
            .iter()
            .map(|name| (name.to_string(), config()))
            .collect();
        let error = Simulator::start_marketplaces(marketplaces, listener)
            .await
            .err()
            .unwrap_or_else(|| panic!("{names:?} accepted"));
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{names:?}");
    }
    let binary = env!("CARGO_BIN_EXE_marketplace-sim");
    let bad = std::process::Command::new(binary)
        .args(["--key", "k", "--marketplaces", "bestbuy_ca,Best-Buy"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("\"Best-Buy\" is not a marketplace name"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_binary_serves_each_marketplace_under_its_name() {
    use std::io::{BufRead, BufReader};
    let binary = env!("CARGO_BIN_EXE_marketplace-sim");
    let mut child = std::process::Command::new(binary)
        .args([
            "--key",
            KEY,
            "--listen",
            "127.0.0.1:0",
            "--orders",
            "2",
            "--marketplaces",
            "bestbuy_ca,other",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let urls: Vec<String> = line
        .trim()
        .rsplit_once(" on each of ")
        .unwrap_or_else(|| panic!("{line}"))
        .1
        .split(", ")
        .map(str::to_owned)
        .collect();
    assert!(line.contains("with 2 orders"), "{line}");
    assert_eq!(urls.len(), 2, "{line}");
    assert!(
        urls[0].ends_with("/bestbuy_ca") && urls[1].ends_with("/other"),
        "{line}"
    );
    let http = reqwest::Client::new();
    let (first, second) = (
        waiting_ids(&http, &urls[0]).await,
        waiting_ids(&http, &urls[1]).await,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.1.len(), 2);
    assert_eq!(first, second);
}
