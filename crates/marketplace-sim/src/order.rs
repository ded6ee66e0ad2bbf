//! One simulated order: its state machine, computed lazily from the clock, and how OR11 shows it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::Scripted;
use super::catalogue::{Content, TAX_EXCLUDED};

pub(crate) const WAITING_ACCEPTANCE: &str = "WAITING_ACCEPTANCE";
const WAITING_DEBIT: &str = "WAITING_DEBIT";
const WAITING_DEBIT_PAYMENT: &str = "WAITING_DEBIT_PAYMENT";
const SHIPPING: &str = "SHIPPING";
const REFUSED: &str = "REFUSED";
const CANCELED: &str = "CANCELED";

/// The reason an order cancelled after acceptance carries (Mirakl shows the operator's or the
/// customer's reason code; the simulator always blames the customer).
const CANCEL_REASON: &str = "CUSTOMER_CANCELED";

/// The reason an order refused automatically at the acceptance deadline carries. Mirakl's own
/// code for it is not in its published API, so this is the simulator's choice.
pub const ACCEPTANCE_DEADLINE_REASON: &str = "AUTO_REFUSED_ACCEPTANCE_DEADLINE";

/// Best Buy Canada's harmonised sales tax, which TAX_EXCLUDED orders carry on every line.
const HST_CODE: &str = "HST";
const HST_PERCENT: u64 = 13;

/// The clock settings every state computation needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Time between state transitions after acceptance.
    pub step: Duration,
    /// How long after creation an undecided order is refused automatically.
    pub acceptance_deadline: Duration,
}

/// What happens to an order after a 204 that accepted some of its lines; fixed when it is
/// created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// WAITING_DEBIT, WAITING_DEBIT_PAYMENT, SHIPPING, one step apart.
    Moves,
    /// CANCELED one step after acceptance.
    Cancels,
    /// Reads WAITING_ACCEPTANCE forever.
    Stuck,
}

#[derive(Debug)]
struct Decision {
    at: DateTime<Utc>,
    /// Indexes of the lines refused; every line refused refuses the order.
    refused_lines: Vec<usize>,
    all_refused: bool,
}

/// Where an order is in its life, derived from its decision and the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No decision yet: the state it was created in.
    Initial,
    /// Accepted, but still reads WAITING_ACCEPTANCE (Mirakl's lag, or a stuck order).
    Lagging,
    Debit,
    DebitPayment,
    Shipping,
    Canceled,
    Refused,
    /// Left undecided in WAITING_ACCEPTANCE past the acceptance deadline.
    Expired,
}

/// Why OR21 refused a decision; the routes turn these into Mirakl error codes.
#[derive(Debug)]
pub(crate) enum AcceptError {
    OrderNotFound,
    InvalidState(String),
    DuplicateLine(String),
    LineNotFound(String),
    DecisionMissing(Vec<String>),
    PartialAcceptance,
}

/// What a valid OR21 did, for the statistics.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Accepted {
    /// At least one line accepted: the order goes on to its fate.
    Lines(Fate),
    Refused,
}

#[derive(Debug)]
pub(crate) struct Order {
    pub content: Arc<Content>,
    initial_state: String,
    initial_reason: Option<String>,
    fate: Fate,
    decision: Option<Decision>,
    pub or21_script: VecDeque<Scripted>,
    pub or11_script: VecDeque<Scripted>,
}

/// An order's state at one instant, detached from the order so it can be rendered unlocked.
#[derive(Debug)]
pub(crate) struct Status {
    pub state: String,
    reason: Option<String>,
    updated: DateTime<Utc>,
    decided: Option<DateTime<Utc>>,
    debited: Option<DateTime<Utc>>,
    /// Indexes of lines that read REFUSED while the order goes on.
    refused_lines: Vec<usize>,
}

/// States in which the customer has been debited and the shop may ship: addresses are visible.
fn past_debit(state: &str) -> bool {
    matches!(
        state,
        SHIPPING | "SHIPPED" | "TO_COLLECT" | "RECEIVED" | "CLOSED"
    )
}

/// Whole steps elapsed since `from`, capped at 3 (the last transition). A step of zero makes
/// every transition immediate.
fn steps_since(from: DateTime<Utc>, now: DateTime<Utc>, step: Duration) -> u32 {
    if step.is_zero() {
        return 3;
    }
    let elapsed = (now - from).to_std().unwrap_or_default();
    // Capped at 3, so the narrowing cannot truncate.
    (elapsed.as_nanos() / step.as_nanos()).min(3) as u32
}

impl Order {
    pub fn new(
        content: Content,
        initial_state: String,
        initial_reason: Option<String>,
        fate: Fate,
        or21_script: Vec<Scripted>,
        or11_script: Vec<Scripted>,
    ) -> Order {
        Order {
            content: Arc::new(content),
            initial_state,
            initial_reason,
            fate,
            decision: None,
            or21_script: or21_script.into(),
            or11_script: or11_script.into(),
        }
    }

    /// When an undecided order is refused automatically.
    fn deadline(&self, timing: Timing) -> DateTime<Utc> {
        later(self.content.created, timing.acceptance_deadline)
    }

    fn phase(&self, now: DateTime<Utc>, timing: Timing) -> Phase {
        let Some(decision) = &self.decision else {
            return if self.initial_state == WAITING_ACCEPTANCE && now >= self.deadline(timing) {
                Phase::Expired
            } else {
                Phase::Initial
            };
        };
        if decision.all_refused {
            return Phase::Refused;
        }
        match (self.fate, steps_since(decision.at, now, timing.step)) {
            (Fate::Stuck, _) | (_, 0) => Phase::Lagging,
            (Fate::Cancels, _) => Phase::Canceled,
            (Fate::Moves, 1) => Phase::Debit,
            (Fate::Moves, 2) => Phase::DebitPayment,
            (Fate::Moves, _) => Phase::Shipping,
        }
    }

    /// The Mirakl state code OR11 would show now.
    pub fn state(&self, now: DateTime<Utc>, timing: Timing) -> &str {
        match self.phase(now, timing) {
            Phase::Initial => &self.initial_state,
            Phase::Lagging => WAITING_ACCEPTANCE,
            Phase::Debit => WAITING_DEBIT,
            Phase::DebitPayment => WAITING_DEBIT_PAYMENT,
            Phase::Shipping => SHIPPING,
            Phase::Canceled => CANCELED,
            Phase::Refused | Phase::Expired => REFUSED,
        }
    }

    /// When OR11 would say the order last changed.
    pub fn updated(&self, now: DateTime<Utc>, timing: Timing) -> DateTime<Utc> {
        self.status(now, timing).updated
    }

    pub fn status(&self, now: DateTime<Utc>, timing: Timing) -> Status {
        let phase = self.phase(now, timing);
        let state = self.state(now, timing).to_owned();
        let created = self.content.created;
        if phase == Phase::Expired {
            let deadline = self.deadline(timing);
            return Status {
                state,
                reason: Some(ACCEPTANCE_DEADLINE_REASON.to_owned()),
                updated: deadline,
                decided: Some(deadline),
                debited: None,
                refused_lines: Vec::new(),
            };
        }
        let Some(decision) = &self.decision else {
            let decided = (past_debit(&state)
                || matches!(
                    state.as_str(),
                    WAITING_DEBIT | WAITING_DEBIT_PAYMENT | REFUSED
                ))
            .then_some(created);
            let debited = past_debit(&state).then_some(created);
            return Status {
                state,
                reason: self.initial_reason.clone(),
                updated: created,
                decided,
                debited,
                refused_lines: Vec::new(),
            };
        };
        let after = |steps: u32| later(decision.at, timing.step.saturating_mul(steps));
        let (updated, decided, debited, reason) = match phase {
            Phase::Initial | Phase::Lagging | Phase::Expired => (created, None, None, None),
            Phase::Refused => (decision.at, Some(decision.at), None, None),
            Phase::Debit => (after(1), Some(decision.at), None, None),
            Phase::DebitPayment => (after(2), Some(decision.at), None, None),
            Phase::Shipping => (after(3), Some(decision.at), Some(after(3)), None),
            Phase::Canceled => (
                after(1),
                Some(decision.at),
                None,
                Some(CANCEL_REASON.to_owned()),
            ),
        };
        Status {
            state,
            reason,
            updated,
            decided,
            debited,
            refused_lines: decision.refused_lines.clone(),
        }
    }

    /// OR21's checks, in the order Mirakl reports them, then the decision itself.
    pub fn decide(
        &mut self,
        decisions: &[(String, bool)],
        now: DateTime<Utc>,
        timing: Timing,
        partial_acceptance: bool,
    ) -> Result<Accepted, AcceptError> {
        // An order already decided is no longer acceptable even while it still reads
        // WAITING_ACCEPTANCE: a second OR21 is a double accept.
        if self.decision.is_some()
            || self.initial_state != WAITING_ACCEPTANCE
            || self.phase(now, timing) == Phase::Expired
        {
            return Err(AcceptError::InvalidState(
                self.state(now, timing).to_owned(),
            ));
        }
        let mut seen = HashSet::with_capacity(decisions.len());
        for (id, _) in decisions {
            if !seen.insert(id.as_str()) {
                return Err(AcceptError::DuplicateLine(id.clone()));
            }
        }
        let lines = &self.content.lines;
        if let Some((id, _)) = decisions
            .iter()
            .find(|(id, _)| !lines.iter().any(|line| &line.id == id))
        {
            return Err(AcceptError::LineNotFound(id.clone()));
        }
        let missing: Vec<String> = lines
            .iter()
            .filter(|line| !seen.contains(line.id.as_str()))
            .map(|line| line.id.clone())
            .collect();
        if !missing.is_empty() {
            return Err(AcceptError::DecisionMissing(missing));
        }
        let refused: HashSet<&str> = decisions
            .iter()
            .filter(|(_, accepted)| !accepted)
            .map(|(id, _)| id.as_str())
            .collect();
        let all_refused = refused.len() == lines.len();
        if !partial_acceptance && !refused.is_empty() && !all_refused {
            return Err(AcceptError::PartialAcceptance);
        }
        let refused_lines = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| refused.contains(line.id.as_str()))
            .map(|(at, _)| at)
            .collect();
        self.decision = Some(Decision {
            at: now,
            refused_lines,
            all_refused,
        });
        Ok(if all_refused {
            Accepted::Refused
        } else {
            Accepted::Lines(self.fate)
        })
    }
}

/// `at + by`, saturating instead of panicking on absurd steps.
pub(crate) fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(by)
        .ok()
        .and_then(|by| at.checked_add_signed(by))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn date(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn money(cents: u64) -> f64 {
    // Exact for any realistic amount: cents fit in f64's 53-bit mantissa.
    cents as f64 / 100.0
}

/// A customer address, shown once the customer has been debited.
#[derive(Clone, Copy, Serialize)]
struct Address<'a> {
    civility: Option<&'a str>,
    firstname: &'a str,
    lastname: &'a str,
    street_1: &'a str,
    street_2: Option<&'a str>,
    city: &'a str,
    state: &'a str,
    zip_code: &'a str,
    country: &'a str,
    country_iso_code: &'a str,
}

#[derive(Serialize)]
struct CustomerView<'a> {
    billing_address: Option<Address<'a>>,
    civility: Option<&'a str>,
    customer_id: &'a str,
    firstname: &'a str,
    lastname: &'a str,
    locale: &'a str,
    shipping_address: Option<Address<'a>>,
}

#[derive(Serialize)]
struct Code<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct Fulfillment<'a> {
    center: Code<'a>,
}

#[derive(Serialize)]
struct Promotions {
    applied_promotions: Empty,
    total_deduced_amount: u8,
}

#[derive(Serialize)]
struct References<'a> {
    order_reference_for_customer: &'a str,
}

/// An always-empty JSON array (cancelations, refunds... the simulator has none).
type Empty = [u8; 0];

/// A tax on a line's price, as `OR11_Response_200_Orders_OrderLines_Taxes` has it.
#[derive(Serialize)]
struct Tax {
    amount: f64,
    code: &'static str,
    rate: u64,
    tax_calculation_rule: &'static str,
}

#[derive(Serialize)]
struct LineView<'a> {
    can_refund: bool,
    cancelations: Empty,
    category_code: &'a str,
    category_label: &'a str,
    commission_fee: f64,
    commission_rate_vat: u8,
    commission_taxes: Empty,
    commission_vat: u8,
    created_date: &'a str,
    debited_date: Option<&'a str>,
    description: Option<&'a str>,
    fees: Empty,
    last_updated_date: &'a str,
    offer_id: u64,
    offer_sku: &'a str,
    offer_state_code: &'a str,
    order_line_additional_fields: Empty,
    order_line_id: &'a str,
    order_line_index: usize,
    order_line_state: &'a str,
    order_line_state_reason_code: Option<&'a str>,
    order_line_state_reason_label: Option<&'a str>,
    origin_unit_price: f64,
    price: f64,
    price_additional_info: Option<&'a str>,
    price_unit: f64,
    product_medias: Empty,
    product_shop_sku: &'a str,
    product_sku: &'a str,
    product_title: &'a str,
    promotions: Empty,
    quantity: u32,
    refunds: Empty,
    shipping_price: f64,
    shipping_taxes: Empty,
    taxes: Vec<Tax>,
    total_commission: f64,
    total_price: f64,
}

/// The order as OR11 shows it: the fields of `OR11_Response_200_Orders` with Best Buy Canada's
/// usual values. Typed and borrowed rather than a `serde_json::Value`, so a page of 100 orders
/// serialises straight to bytes without building a tree first.
#[derive(Serialize)]
pub(crate) struct OrderView<'a> {
    acceptance_decision_date: Option<String>,
    can_cancel: bool,
    can_shop_ship: bool,
    commercial_id: &'a str,
    created_date: &'a str,
    currency_iso_code: &'a str,
    customer: CustomerView<'a>,
    customer_debited_date: Option<&'a str>,
    customer_directly_pays_seller: bool,
    fulfillment: Fulfillment<'a>,
    fully_refunded: bool,
    has_customer_message: bool,
    has_incident: bool,
    has_invoice: bool,
    last_updated_date: &'a str,
    leadtime_to_ship: u32,
    order_additional_fields: Empty,
    order_id: &'a str,
    order_lines: Vec<LineView<'a>>,
    order_state: &'a str,
    order_state_reason_code: Option<&'a str>,
    order_state_reason_label: Option<&'a str>,
    order_tax_mode: &'a str,
    order_taxes: Empty,
    // The spec requires the camel-case `paymentType`; real responses carry `payment_type`.
    #[serde(rename = "paymentType")]
    payment_type_camel: &'a str,
    payment_type: &'a str,
    payment_workflow: &'a str,
    price: f64,
    promotions: Promotions,
    quote_id: Option<&'a str>,
    references: References<'a>,
    shipping_deadline: &'a str,
    shipping_price: f64,
    shipping_type_code: &'a str,
    shipping_type_label: &'a str,
    shipping_zone_code: &'a str,
    shipping_zone_label: &'a str,
    total_commission: f64,
    total_price: f64,
}

/// Dates as Mirakl writes them, computed once per rendered order.
pub(crate) struct Dates {
    updated: String,
    debited: Option<String>,
}

impl Status {
    /// A line's state and reason code: refused lines keep their own whatever the accepted ones
    /// go on to.
    pub fn line(&self, index: usize) -> (&str, Option<&str>) {
        if self.refused_lines.contains(&index) {
            (REFUSED, None)
        } else {
            (&self.state, self.reason.as_deref())
        }
    }

    pub fn dates(&self) -> Dates {
        Dates {
            updated: date(self.updated),
            debited: self.debited.map(date),
        }
    }
}

/// HST on a price in cents, rounded half up to the cent.
fn hst(price_cents: u64) -> Tax {
    Tax {
        amount: money((price_cents * HST_PERCENT + 50) / 100),
        code: HST_CODE,
        rate: HST_PERCENT,
        tax_calculation_rule: "PROPORTIONAL_TO_AMOUNT",
    }
}

pub(crate) fn render<'a>(
    content: &'a Content,
    status: &'a Status,
    dates: &'a Dates,
) -> OrderView<'a> {
    let customer = &content.customer;
    let shown = past_debit(&status.state);
    // Mirakl hides addresses until the customer has been debited and the shop may ship.
    let address = shown.then_some(Address {
        civility: None,
        firstname: customer.firstname,
        lastname: customer.lastname,
        street_1: &customer.street,
        street_2: None,
        city: customer.city,
        state: customer.province,
        zip_code: customer.postal_code,
        country: "Canada",
        country_iso_code: "CAN",
    });
    let updated = dates.updated.as_str();
    let debited = dates.debited.as_deref();
    let reason = status.reason.as_deref();
    let taxed = content.tax_mode == TAX_EXCLUDED;
    let order_lines = content
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let price = line.price_cents();
            let shipping = line.shipping_cents();
            let (line_state, line_reason) = status.line(index);
            LineView {
                can_refund: false,
                cancelations: [],
                category_code: line.product.category_code,
                category_label: line.product.category_label,
                commission_fee: money(line.commission_cents()),
                commission_rate_vat: 0,
                commission_taxes: [],
                commission_vat: 0,
                created_date: &content.created_date,
                debited_date: debited,
                description: None,
                fees: [],
                last_updated_date: updated,
                offer_id: line.offer_id,
                offer_sku: &line.product.offer_sku,
                offer_state_code: "11",
                order_line_additional_fields: [],
                order_line_id: &line.id,
                order_line_index: index + 1,
                order_line_state: line_state,
                order_line_state_reason_code: line_reason,
                order_line_state_reason_label: None,
                origin_unit_price: money(line.product.unit_cents),
                price: money(price),
                price_additional_info: None,
                price_unit: money(line.product.unit_cents),
                product_medias: [],
                product_shop_sku: &line.product.offer_sku,
                product_sku: &line.product.product_sku,
                product_title: &line.product.title,
                promotions: [],
                quantity: line.quantity,
                refunds: [],
                shipping_price: money(shipping),
                shipping_taxes: [],
                taxes: if taxed { vec![hst(price)] } else { Vec::new() },
                total_commission: money(line.commission_cents()),
                total_price: money(price + shipping),
            }
        })
        .collect();
    let price: u64 = content.lines.iter().map(|l| l.price_cents()).sum();
    let shipping: u64 = content.lines.iter().map(|l| l.shipping_cents()).sum();
    let commission: u64 = content.lines.iter().map(|l| l.commission_cents()).sum();
    OrderView {
        acceptance_decision_date: status.decided.map(date),
        can_cancel: false,
        can_shop_ship: shown,
        commercial_id: &content.commercial_id,
        created_date: &content.created_date,
        currency_iso_code: "CAD",
        customer: CustomerView {
            billing_address: address,
            civility: None,
            customer_id: &customer.id,
            firstname: customer.firstname,
            lastname: customer.lastname,
            locale: "en_CA",
            shipping_address: address,
        },
        customer_debited_date: debited,
        customer_directly_pays_seller: false,
        fulfillment: Fulfillment {
            center: Code { code: "DEFAULT" },
        },
        fully_refunded: false,
        has_customer_message: false,
        has_incident: false,
        has_invoice: false,
        last_updated_date: updated,
        leadtime_to_ship: 2,
        order_additional_fields: [],
        order_id: &content.id,
        order_lines,
        order_state: &status.state,
        order_state_reason_code: reason,
        order_state_reason_label: None,
        order_tax_mode: &content.tax_mode,
        order_taxes: [],
        payment_type_camel: "VISA",
        payment_type: "VISA",
        payment_workflow: "PAY_ON_ACCEPTANCE",
        price: money(price),
        promotions: Promotions {
            applied_promotions: [],
            total_deduced_amount: 0,
        },
        quote_id: None,
        references: References {
            order_reference_for_customer: &content.commercial_id,
        },
        shipping_deadline: &content.shipping_deadline,
        shipping_price: money(shipping),
        shipping_type_code: "STD",
        shipping_type_label: "Standard Shipping",
        shipping_zone_code: "CA",
        shipping_zone_label: "Canada",
        total_commission: money(commission),
        total_price: money(price + shipping),
    }
}
