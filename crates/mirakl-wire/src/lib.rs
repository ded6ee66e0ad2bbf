//! The Mirakl seller API's shapes that both sides speak: order states, the OR11 page envelope
//! and the OR21 body. The worker parses states with [`OrderState`] and sends [`AcceptBody`];
//! the simulator serves [`OrdersPage`] and reads [`AcceptBody`]. Only what both need lives here,
//! so the worker never depends on the simulator.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An order or order-line state. Mirakl may add states at any time, so parsing never fails:
/// a code this build does not know is kept as [`OrderState::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderState {
    Staging,
    WaitingAcceptance,
    WaitingDebit,
    WaitingDebitPayment,
    Shipping,
    Shipped,
    ToCollect,
    Received,
    Closed,
    Refused,
    /// Mirakl spells it with one L; `CANCELLED` is an unknown state.
    Canceled,
    /// Deprecated by Mirakl, still possible on old orders.
    WaitingRefund,
    /// Deprecated by Mirakl, still possible on old orders.
    WaitingRefundPayment,
    /// Order lines only.
    IncidentOpen,
    /// Order lines only.
    Refunded,
    Unknown(String),
}

const KNOWN_STATES: [(OrderState, &str); 15] = [
    (OrderState::Staging, "STAGING"),
    (OrderState::WaitingAcceptance, "WAITING_ACCEPTANCE"),
    (OrderState::WaitingDebit, "WAITING_DEBIT"),
    (OrderState::WaitingDebitPayment, "WAITING_DEBIT_PAYMENT"),
    (OrderState::Shipping, "SHIPPING"),
    (OrderState::Shipped, "SHIPPED"),
    (OrderState::ToCollect, "TO_COLLECT"),
    (OrderState::Received, "RECEIVED"),
    (OrderState::Closed, "CLOSED"),
    (OrderState::Refused, "REFUSED"),
    (OrderState::Canceled, "CANCELED"),
    (OrderState::WaitingRefund, "WAITING_REFUND"),
    (OrderState::WaitingRefundPayment, "WAITING_REFUND_PAYMENT"),
    (OrderState::IncidentOpen, "INCIDENT_OPEN"),
    (OrderState::Refunded, "REFUNDED"),
];

impl OrderState {
    /// Never fails: an unknown code becomes `Unknown(code)`. Matching is exact, as Mirakl's codes
    /// are upper case; a lower-case code is not one of them.
    pub fn parse(code: &str) -> Self {
        KNOWN_STATES
            .iter()
            .find(|(_, known)| *known == code)
            .map(|(state, _)| state.clone())
            .unwrap_or_else(|| OrderState::Unknown(code.to_owned()))
    }

    /// The Mirakl code, e.g. `WAITING_ACCEPTANCE`.
    pub fn as_str(&self) -> &str {
        match self {
            OrderState::Unknown(code) => code,
            known => KNOWN_STATES
                .iter()
                .find(|(state, _)| state == known)
                .map_or("", |(_, code)| code),
        }
    }

    /// True for the states an order only reaches after the marketplace recorded the shop's
    /// acceptance: the debit step and everything after it. REFUSED and CANCELED prove nothing
    /// (an accepted order can still be cancelled when its debit fails). INCIDENT_OPEN and
    /// REFUNDED are line states that only follow shipping or debit, so they count too.
    pub fn proves_acceptance(&self) -> bool {
        matches!(
            self,
            OrderState::WaitingDebit
                | OrderState::WaitingDebitPayment
                | OrderState::Shipping
                | OrderState::Shipped
                | OrderState::ToCollect
                | OrderState::Received
                | OrderState::Closed
                | OrderState::WaitingRefund
                | OrderState::WaitingRefundPayment
                | OrderState::IncidentOpen
                | OrderState::Refunded
        )
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OrderState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OrderState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(OrderState::parse(&code))
    }
}

/// OR11's answer: one page of orders and the number of orders matching the filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrdersPage<T> {
    pub orders: Vec<T>,
    pub total_count: u64,
}

/// OR21's body: one decision for every line of the order (`L` lets a reader accept `null`
/// entries to answer them with Mirakl's own error).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptBody<L = AcceptLine> {
    pub order_lines: Vec<L>,
}

/// One line of an OR21 body: the shop accepts (`true`) or refuses the line with this id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptLine {
    pub id: String,
    pub accepted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips() {
        for (state, code) in KNOWN_STATES {
            assert_eq!(OrderState::parse(code), state);
            assert_eq!(state.as_str(), code);
        }
        assert_eq!(
            OrderState::parse("CANCELLED"),
            OrderState::Unknown("CANCELLED".into())
        );
        assert_eq!(OrderState::parse("NEW_STATE").to_string(), "NEW_STATE");
    }

    #[test]
    fn serde_uses_the_plain_code() {
        let json = serde_json::to_string(&OrderState::WaitingAcceptance).unwrap();
        assert_eq!(json, "\"WAITING_ACCEPTANCE\"");
        let state: OrderState = serde_json::from_str("\"SOMETHING_NEW\"").unwrap();
        assert_eq!(state, OrderState::Unknown("SOMETHING_NEW".into()));
    }

    #[test]
    fn acceptance_is_proven_only_after_the_debit_step() {
        assert!(OrderState::WaitingDebit.proves_acceptance());
        assert!(OrderState::Closed.proves_acceptance());
        assert!(!OrderState::WaitingAcceptance.proves_acceptance());
        assert!(!OrderState::Canceled.proves_acceptance());
        assert!(!OrderState::Refused.proves_acceptance());
        assert!(!OrderState::Unknown("X".into()).proves_acceptance());
    }
}
