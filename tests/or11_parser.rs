//! Bad input for the OR11 parser: arbitrary JSON and mutations of Mirakl's own example response.
//!
//! The page parser is `OrdersPage::from_body`, which the client calls on every OR11 answer; each
//! order goes through `Order::from_json`.
//!
//! Properties: nothing panics; every failure is an `Err` with a message; every order listed in
//! a readable envelope is either read or reported unreadable (with its reason); whatever parses keeps
//! the guarantees the worker relies on (a non-blank order id and state, a non-blank id on every
//! line, the raw JSON kept as given); and mutations that leave the fields the worker decides on
//! alone (unknown keys, other fields' types, huge strings, unknown states, deep nesting) still
//! parse.

use rust_decimal::dec;
use std::sync::OnceLock;

use order_acceptance::marketplace::{Order, OrderState, OrdersPage, TaxMode};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const EXAMPLE: &str = include_str!("fixtures/mirakl/or11-response-example.json");

/// The page as the client reads it: the envelope strictly, each order leniently. Every order
/// listed is either read or reported unreadable, never dropped.
fn parse_page(body: &[u8]) -> Result<(Vec<Order>, u64), String> {
    let page = OrdersPage::from_body(body)?;
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::Array(listed)) = object.get("orders")
    {
        assert_eq!(
            page.orders.len() + page.unreadable.len(),
            listed.len(),
            "an order was neither read nor reported"
        );
    }
    for unreadable in &page.unreadable {
        assert!(!unreadable.reason.is_empty(), "unreadable without a reason");
    }
    Ok((page.orders, page.total_count))
}

/// The example page and the JSON pointers into it, read once.
fn example_page() -> &'static (Value, Vec<String>) {
    static PAGE: OnceLock<(Value, Vec<String>)> = OnceLock::new();
    PAGE.get_or_init(|| {
        let value: Value = serde_json::from_str(EXAMPLE).expect("the shared example is JSON");
        let mut paths = Vec::new();
        pointers(&value, String::new(), &mut paths);
        (value, paths)
    })
}

/// The example's first order and the JSON pointers into it, read once.
fn example_order() -> &'static (Value, Vec<String>) {
    static ORDER: OnceLock<(Value, Vec<String>)> = OnceLock::new();
    ORDER.get_or_init(|| {
        let value = example_page().0["orders"][0].clone();
        let mut paths = Vec::new();
        pointers(&value, String::new(), &mut paths);
        (value, paths)
    })
}

/// What the worker relies on for an order that parsed.
fn assert_sound(order: &Order, raw: &Value) {
    assert!(!order.order_id.trim().is_empty(), "blank order id parsed");
    assert!(
        !order.order_state.as_str().trim().is_empty(),
        "blank order state parsed"
    );
    for line in &order.order_lines {
        assert!(
            !line.order_line_id.trim().is_empty(),
            "blank line id parsed"
        );
    }
    assert_eq!(&order.raw, raw, "raw JSON not kept as given");
}

/// Parses one order value and checks the outcome; returns whether it parsed.
fn check_order(raw: Value) -> bool {
    match Order::from_json(raw.clone()) {
        Ok(order) => {
            assert_sound(&order, &raw);
            true
        }
        Err(message) => {
            assert!(!message.is_empty(), "an error without a message");
            false
        }
    }
}

// Strategies -----------------------------------------------------------------------------------

/// Keys the parser looks at, keys it does not, and odd ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("order_id".to_owned()),
        Just("order_state".to_owned()),
        Just("order_lines".to_owned()),
        Just("order_line_id".to_owned()),
        Just("order_line_state".to_owned()),
        Just("created_date".to_owned()),
        Just("order_state_reason_code".to_owned()),
        Just("total_count".to_owned()),
        Just("orders".to_owned()),
        "[a-z_]{0,12}",
        any::<String>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => Just(String::new()),
        20 => Just("   ".to_owned()),
        20 => Just("WAITING_ACCEPTANCE".to_owned()),
        20 => Just("CANCELLED".to_owned()),
        20 => Just("2019-04-02T14:18:43Z".to_owned()),
        20 => Just("2019-02-30T25:61:61Z".to_owned()),
        40 => "[A-Z_]{1,30}",
        40 => any::<String>(),
        // Huge strings (100-300 KB), rarely: a tree holds dozens of leaves.
        1 => (1usize..4).prop_map(|n| "x".repeat(n * 100_000)),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A value nested `depth` arrays and objects deep.
fn deep(depth: usize, inner: Value) -> Value {
    (0..depth).fold(inner, |value, level| {
        if level % 2 == 0 {
            Value::Array(vec![value])
        } else {
            json!({ "n": value })
        }
    })
}

/// Every JSON pointer in a value, the root excluded.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(path.clone());
                pointers(child, path, out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                let path = format!("{at}/{index}");
                out.push(path.clone());
                pointers(child, path, out);
            }
        }
        _ => {}
    }
}

/// Pointers of the fields `Order::from_json` decides on: changing these may make it refuse.
fn decisive(pointer: &str) -> bool {
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    matches!(
        parts.as_slice(),
        ["order_id" | "order_state" | "order_lines" | "created_date"]
            | ["order_lines", _]
            | ["order_lines", _, "order_line_id"]
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete,
    Replace(Value),
    HugeString(usize),
    UnknownState(String),
    Nest(usize),
    AddKey(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Delete),
        arbitrary_json().prop_map(Mutation::Replace),
        (50_000usize..250_000).prop_map(Mutation::HugeString),
        "[A-Z][A-Z_]{0,40}".prop_map(Mutation::UnknownState),
        (1usize..200).prop_map(Mutation::Nest),
        (key(), arbitrary_json()).prop_map(|(k, v)| Mutation::AddKey(k, v)),
    ]
}

/// Applies `mutation` at `pointer` (a key of an object or an item of an array).
fn mutate(root: &mut Value, pointer: &str, mutation: &Mutation) {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    let last = last.replace("~1", "/").replace("~0", "~");
    let Some(parent) = root.pointer_mut(parent) else {
        return;
    };
    if let Mutation::Delete = mutation {
        match parent {
            Value::Object(map) => drop(map.remove(&last)),
            Value::Array(items) => {
                if let Ok(index) = last.parse::<usize>()
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            _ => {}
        }
        return;
    }
    let slot = match parent {
        Value::Object(map) => map.get_mut(&last),
        Value::Array(items) => last.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    };
    let Some(slot) = slot else { return };
    match mutation {
        Mutation::Delete => unreachable!(),
        Mutation::Replace(value) => *slot = value.clone(),
        Mutation::HugeString(len) => *slot = Value::String("é".repeat(len / 2)),
        Mutation::UnknownState(state) => *slot = Value::String(state.clone()),
        Mutation::Nest(depth) => *slot = deep(*depth, slot.clone()),
        Mutation::AddKey(key, value) => {
            if let Value::Object(map) = slot {
                map.insert(key.clone(), value.clone());
            } else {
                *slot = value.clone();
            }
        }
    }
}

// Properties -----------------------------------------------------------------------------------

// 4,500 cases in all (1,500 + 1,000 + 1,000 + 1,000).
proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Any JSON value as an order, and as a whole page, text and all.
    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        check_order(value.clone());
        let body = serde_json::to_vec(&value).unwrap();
        match parse_page(&body) {
            Ok((orders, _)) => {
                for order in &orders {
                    assert_sound(order, &order.raw);
                }
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
        // The same value as an order inside an otherwise valid envelope, beside a good order:
        // the page reads, the good order is read, the value is read or reported.
        let page = json!({ "orders": [value, example_order().0], "total_count": 2 });
        let read = parse_page(&serde_json::to_vec(&page).unwrap());
        prop_assert!(read.as_ref().is_ok_and(|(orders, _)| !orders.is_empty()), "{read:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// One mutation anywhere in the example order: refused with a message or parsed soundly,
    /// and always parsed when it left the decisive fields alone.
    #[test]
    fn mutated_example_order(index in any::<prop::sample::Index>(), mutation in mutation()) {
        let (original, paths) = example_order();
        let pointer = index.get(paths).clone();
        let mut order = original.clone();
        mutate(&mut order, &pointer, &mutation);
        let parsed = check_order(order.clone());
        if !decisive(&pointer) {
            prop_assert!(parsed, "a mutation of {pointer} ({mutation:?}) made the order unreadable");
        }
        if let Mutation::UnknownState(state) = &mutation
            && pointer == "/order_state"
        {
            let order = Order::from_json(order).unwrap();
            prop_assert_eq!(order.order_state, OrderState::parse(state));
        }
    }

    /// Mutations of the whole response body, envelope included.
    #[test]
    fn mutated_example_page(index in any::<prop::sample::Index>(), mutation in mutation()) {
        let (original, paths) = example_page();
        let pointer = index.get(paths).clone();
        let mut page = original.clone();
        mutate(&mut page, &pointer, &mutation);
        let body = serde_json::to_vec(&page).unwrap();
        match parse_page(&body) {
            Ok((orders, _)) => {
                for order in &orders {
                    assert_sound(order, &order.raw);
                }
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    /// Bytes that are not JSON, or cut JSON: an error, never a panic or an empty list.
    #[test]
    fn truncated_or_garbage_bodies(cut in 0usize..EXAMPLE.len(), garbage in prop::collection::vec(any::<u8>(), 0..256)) {
        let truncated = &EXAMPLE.as_bytes()[..cut];
        prop_assert!(parse_page(truncated).is_err(), "a body cut at {cut} parsed");
        let _ = parse_page(&garbage);
        let mut html = b"<html><body>Access denied</body></html>".to_vec();
        html.extend_from_slice(&garbage);
        prop_assert!(parse_page(&html).is_err());
    }
}

#[test]
fn the_shared_example_parses() {
    let (orders, total) = parse_page(EXAMPLE.as_bytes()).expect("the example parses");
    assert_eq!(total, 1);
    assert_eq!(orders.len(), 1);
    let order = &orders[0];
    assert_eq!(order.order_id, "Order_00010-A");
    assert_eq!(order.order_state, OrderState::Received);
    assert_eq!(order.order_lines.len(), 1);
    assert!(order.created_date.is_some());
    // What the acceptance rules read.
    assert_eq!(order.order_tax_mode, Some(TaxMode::TaxExcluded));
    assert_eq!(
        (order.shipping_price, order.total_price),
        (Some(dec!(8.0)), Some(dec!(173.0)))
    );
    let line = &order.order_lines[0];
    assert_eq!(line.offer_sku.as_deref(), Some("S2000"));
    assert_eq!(line.product_sku.as_deref(), Some("MKP100000000037254"));
    assert_eq!(line.quantity, Some(3));
    assert_eq!(
        (line.price_unit, line.price),
        (Some(dec!(55.0)), Some(dec!(165.0)))
    );
    assert_eq!(
        (line.taxes, line.shipping_taxes),
        (Some(dec!(20.0)), Some(dec!(20.0)))
    );
}

#[test]
fn deep_nesting_in_text_is_a_parse_error_not_a_stack_overflow() {
    let depth = 100_000;
    let body = format!(
        "{{\"total_count\":1,\"orders\":[{}1{}]}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(parse_page(body.as_bytes()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Every amount OR11 can send with up to four decimals and twelve integer digits reads as
    /// exactly the decimal written in the JSON, prices and each tax alike, and a line's taxes sum
    /// exactly.
    #[test]
    fn amounts_read_as_the_exact_decimals_written(
        units in 0i64..1_000_000_000_000,
        scale in 0u32..=4,
        taxes in prop::collection::vec(0i64..100_000_000, 0..6),
    ) {
        let price = rust_decimal::Decimal::new(units, scale);
        let tax_list: Vec<String> =
            taxes.iter().map(|t| format!(r#"{{"amount": {}}}"#, rust_decimal::Decimal::new(*t, 2))).collect();
        let text = format!(
            r#"{{"order_id": "M-1", "order_state": "WAITING_ACCEPTANCE",
                "order_lines": [{{"order_line_id": "M-1-1", "price": {price}, "price_unit": {price},
                                  "taxes": [{}]}}]}}"#,
            tax_list.join(", ")
        );
        let order = Order::from_json(serde_json::from_str(&text).unwrap()).unwrap();
        let line = &order.order_lines[0];
        prop_assert_eq!(line.price, Some(price));
        prop_assert_eq!(line.price_unit, Some(price));
        let sum: i64 = taxes.iter().sum();
        prop_assert_eq!(line.taxes, Some(rust_decimal::Decimal::new(sum, 2)));
    }
}
