//! What the marketplace returns, reduced to the fields the worker decides on. Each order keeps
//! its full JSON in `raw`, so nothing Mirakl sends is lost even though most of it is not typed.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

pub use mirakl_wire::OrderState;

use super::path::sendable_id;

#[derive(Debug, Clone)]
pub struct Order {
    pub order_id: String,
    pub order_state: OrderState,
    pub order_state_reason_code: Option<String>,
    pub created_date: Option<DateTime<Utc>>,
    /// Whether line prices include taxes; `None` when OR11 leaves it out or sends a new mode.
    pub order_tax_mode: Option<TaxMode>,
    pub shipping_price: Option<Decimal>,
    /// Lines and shipping, without taxes when the order is TAX_EXCLUDED.
    pub total_price: Option<Decimal>,
    pub order_lines: Vec<OrderLine>,
    /// The order object exactly as OR11 returned it.
    pub raw: Value,
}

/// What the acceptance rules read of an order, without the rest of its JSON (the import keeps
/// these for every order it stores, so they must stay small).
#[derive(Debug, Clone)]
pub struct OrderTerms {
    pub order_tax_mode: Option<TaxMode>,
    pub shipping_price: Option<Decimal>,
    pub total_price: Option<Decimal>,
    pub lines: Vec<OrderLine>,
}

/// OR11's `order_tax_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaxMode {
    TaxIncluded,
    TaxExcluded,
}

/// An order line. Everything but the id and state is what the acceptance rules read; a field
/// OR11 leaves out (or sends with the wrong type) is `None`, never a parse failure.
#[derive(Debug, Clone)]
pub struct OrderLine {
    pub order_line_id: String,
    pub order_line_state: OrderState,
    pub offer_sku: Option<String>,
    pub product_sku: Option<String>,
    pub quantity: Option<u32>,
    pub price_unit: Option<Decimal>,
    /// `price_unit` × `quantity`, less promotions.
    pub price: Option<Decimal>,
    pub shipping_price: Option<Decimal>,
    pub total_price: Option<Decimal>,
    /// The sum of the line's `taxes[].amount` (for the whole quantity).
    pub taxes: Option<Decimal>,
    /// The sum of the line's `shipping_taxes[].amount`.
    pub shipping_taxes: Option<Decimal>,
}

/// One line of an OR21 body: the shop accepts or refuses the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineDecision {
    pub order_line_id: String,
    pub accepted: bool,
}

impl LineDecision {
    pub fn accept(order_line_id: impl Into<String>) -> Self {
        Self {
            order_line_id: order_line_id.into(),
            accepted: true,
        }
    }
}

/// One OR11 page: the envelope is read strictly (a page without `total_count` or an `orders`
/// array is no page), each order leniently: one unreadable order is reported, not fatal to the
/// others. Every listed order ends up in exactly one of `orders` and `unreadable`.
#[derive(Debug, Clone)]
pub struct OrdersPage {
    pub orders: Vec<Order>,
    pub unreadable: Vec<UnreadableOrder>,
    pub total_count: u64,
}

/// What a read by order ids found: the orders asked for that OR11 returned, readable or not.
#[derive(Debug, Clone, Default)]
pub struct OrdersRead {
    pub orders: Vec<Order>,
    pub unreadable: Vec<UnreadableOrder>,
}

/// An order OR11 listed that the worker cannot act on, kept whole for a person to look at.
#[derive(Debug, Clone)]
pub struct UnreadableOrder {
    /// The `order_id` when it is a usable string, for the inbox's order column.
    pub order_id: Option<String>,
    /// Why it cannot be read, in words.
    pub reason: String,
    /// The order object exactly as OR11 returned it.
    pub raw: Value,
}

impl OrdersPage {
    /// Reads an OR11 response body.
    pub fn from_body(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            if body.is_empty() {
                "the body is empty".to_owned()
            } else {
                format!("the body is not valid JSON ({err})")
            }
        })?;
        let Value::Object(mut object) = value else {
            return Err(format!(
                "expected an object with orders and total_count, got {}",
                kind(&value)
            ));
        };
        let total_count = object
            .get("total_count")
            .and_then(Value::as_u64)
            .ok_or("the response has no total_count")?;
        let Some(Value::Array(listed)) = object.remove("orders") else {
            return Err("the response has no orders array".to_owned());
        };
        let mut page = OrdersPage {
            orders: Vec::with_capacity(listed.len()),
            unreadable: Vec::new(),
            total_count,
        };
        for raw in listed {
            match Order::from_json(raw.clone()) {
                Ok(order) => page.orders.push(order),
                Err(reason) => page.unreadable.push(UnreadableOrder {
                    order_id: required_str(raw.get("order_id")).map(str::to_owned),
                    reason,
                    raw,
                }),
            }
        }
        Ok(page)
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub shop_id: Option<i64>,
    pub shop_name: Option<String>,
    pub raw: Value,
}

impl Order {
    /// Reads one order object as OR11 returns it (also used on stored `raw_order_data`).
    ///
    /// Lenient where Mirakl may evolve (unknown fields, unknown states) and strict where the
    /// worker would otherwise act on a guess: an order or line without an id, or an order
    /// without an `order_lines` array, is an error, since OR21 must name every line. An empty
    /// array parses; preflight records such an order as a failure instead of accepting it.
    pub fn from_json(raw: Value) -> Result<Self, String> {
        let object = raw
            .as_object()
            .ok_or_else(|| format!("an order is not a JSON object but {}", kind(&raw)))?;
        let order_id = required_str(object.get("order_id"))
            .ok_or("an order has no order_id (or it is not a non-empty string)")?
            .to_owned();
        sendable_id(&order_id)?;
        let order_state = required_str(object.get("order_state"))
            .map(OrderState::parse)
            .ok_or_else(|| format!("order {order_id} has no order_state"))?;
        let order_state_reason_code = optional_str(object.get("order_state_reason_code"));
        let created_date = match optional_str(object.get("created_date")) {
            None => None,
            Some(text) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map_err(|err| {
                        format!("order {order_id} has an unreadable created_date {text:?}: {err}")
                    })?
                    .with_timezone(&Utc),
            ),
        };
        let lines = object
            .get("order_lines")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("order {order_id} has no order_lines array"))?;
        let order_lines = lines
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let order_line_id = required_str(line.get("order_line_id")).ok_or_else(|| {
                    format!(
                        "order {order_id}: order line #{} has no order_line_id",
                        index + 1
                    )
                })?;
                let order_line_state = line
                    .get("order_line_state")
                    .and_then(Value::as_str)
                    .map_or_else(|| OrderState::Unknown(String::new()), OrderState::parse);
                Ok(OrderLine {
                    order_line_id: order_line_id.to_owned(),
                    order_line_state,
                    offer_sku: required_str(line.get("offer_sku")).map(str::to_owned),
                    product_sku: required_str(line.get("product_sku")).map(str::to_owned),
                    quantity: line
                        .get("quantity")
                        .and_then(Value::as_u64)
                        .and_then(|q| u32::try_from(q).ok()),
                    price_unit: amount(line.get("price_unit")),
                    price: amount(line.get("price")),
                    shipping_price: amount(line.get("shipping_price")),
                    total_price: amount(line.get("total_price")),
                    taxes: tax_total(line.get("taxes")),
                    shipping_taxes: tax_total(line.get("shipping_taxes")),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let order_tax_mode = match object.get("order_tax_mode").and_then(Value::as_str) {
            Some("TAX_INCLUDED") => Some(TaxMode::TaxIncluded),
            Some("TAX_EXCLUDED") => Some(TaxMode::TaxExcluded),
            _ => None,
        };
        Ok(Order {
            order_id,
            order_state,
            order_state_reason_code,
            created_date,
            order_tax_mode,
            shipping_price: amount(object.get("shipping_price")),
            total_price: amount(object.get("total_price")),
            order_lines,
            raw,
        })
    }
}

impl Order {
    pub fn terms(&self) -> OrderTerms {
        OrderTerms {
            order_tax_mode: self.order_tax_mode,
            shipping_price: self.shipping_price,
            total_price: self.total_price,
            lines: self.order_lines.clone(),
        }
    }
}

impl Account {
    pub fn from_json(raw: Value) -> Result<Self, String> {
        let object = raw
            .as_object()
            .ok_or_else(|| format!("the account is not a JSON object but {}", kind(&raw)))?;
        let shop_id = object.get("shop_id").and_then(|id| match id {
            Value::Number(number) => number.as_i64(),
            // Tolerate an id sent as text; it is only shown to people.
            Value::String(text) => text.parse().ok(),
            _ => None,
        });
        let shop_name = optional_str(object.get("shop_name"));
        Ok(Account {
            shop_id,
            shop_name,
            raw,
        })
    }
}

fn required_str(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
}

fn optional_str(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// A JSON number as an exact decimal; anything else (absent, null, text) is unknown.
///
/// serde_json reads a number as the nearest `f64`, and prints it back as the shortest text that
/// reads as that same `f64`: for any amount of up to 15 significant digits that is the text the
/// marketplace sent, so `399.995` stays `399.995`, not `399.99499999999998`. A number past what
/// a decimal holds (about 7.9e28) reads as the largest decimal of its sign: still too large for
/// any limit, never mistaken for an absent amount.
fn amount(value: Option<&Value>) -> Option<Decimal> {
    let Value::Number(number) = value? else {
        return None;
    };
    let text = number.to_string();
    Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
        .or_else(|| {
            let float = number.as_f64()?;
            Some(if float < 0.0 {
                Decimal::MIN
            } else {
                Decimal::MAX
            })
        })
}

/// The sum of `[{ "amount": ... }]`; `None` when there is no array or an amount is unreadable,
/// so a partly readable tax list is never taken for the whole of it. A sum past what a decimal
/// holds stays at the largest decimal.
fn tax_total(value: Option<&Value>) -> Option<Decimal> {
    value?
        .as_array()?
        .iter()
        .try_fold(Decimal::ZERO, |sum, tax| {
            Some(sum.saturating_add(amount(tax.get("amount"))?))
        })
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    #[test]
    fn order_parsing_is_strict_on_ids_and_lenient_elsewhere() {
        let order = Order::from_json(serde_json::json!({
            "order_id": "A-1", "order_state": "BRAND_NEW", "created_date": "2019-04-02T14:18:43Z",
            "surprise": {"nested": true},
            "order_lines": [{"order_line_id": "A-1-1", "order_line_state": "WAITING_ACCEPTANCE"}]
        }))
        .unwrap();
        assert_eq!(order.order_state, OrderState::Unknown("BRAND_NEW".into()));
        assert_eq!(order.order_lines[0].order_line_id, "A-1-1");
        assert!(order.created_date.is_some());

        let err = Order::from_json(serde_json::json!({
            "order_id": "A-2", "order_state": "WAITING_ACCEPTANCE", "order_lines": [{"quantity": 1}]
        }))
        .unwrap_err();
        assert!(
            err.contains("A-2") && err.contains("order_line_id"),
            "{err}"
        );
    }

    #[test]
    fn line_terms_are_read_when_present_and_none_when_not() {
        let order = Order::from_json(serde_json::json!({
            "order_id": "A-3", "order_state": "WAITING_ACCEPTANCE", "order_tax_mode": "TAX_EXCLUDED",
            "shipping_price": 8, "total_price": 173,
            "order_lines": [
                {"order_line_id": "A-3-1", "offer_sku": "S2000", "product_sku": "P1", "quantity": 3,
                 "price_unit": 55, "price": 165, "shipping_price": 8, "total_price": 173,
                 "taxes": [{"amount": 10, "code": "tax1"}, {"amount": 10.5, "code": "tax2"}],
                 "shipping_taxes": [{"amount": 1, "code": "tax1"}]},
                {"order_line_id": "A-3-2", "offer_sku": "", "quantity": "two", "price_unit": null,
                 "taxes": [{"amount": 1}, {"code": "no amount"}]}
            ]
        }))
        .unwrap();
        assert_eq!(order.order_tax_mode, Some(TaxMode::TaxExcluded));
        assert_eq!(
            (order.shipping_price, order.total_price),
            (Some(dec!(8.0)), Some(dec!(173.0)))
        );
        let full = &order.order_lines[0];
        assert_eq!(full.offer_sku.as_deref(), Some("S2000"));
        assert_eq!(full.product_sku.as_deref(), Some("P1"));
        assert_eq!(full.quantity, Some(3));
        assert_eq!(
            (full.price_unit, full.price),
            (Some(dec!(55.0)), Some(dec!(165.0)))
        );
        assert_eq!(
            (full.taxes, full.shipping_taxes),
            (Some(dec!(20.5)), Some(dec!(1.0)))
        );
        let sparse = &order.order_lines[1];
        assert_eq!(sparse.offer_sku, None);
        assert_eq!(sparse.quantity, None);
        assert_eq!(sparse.price_unit, None);
        assert_eq!(sparse.taxes, None);
    }
}
