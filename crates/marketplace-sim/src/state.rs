//! The simulator's state: the orders, the random sources and the statistics, all behind one
//! mutex held only for short, await-free sections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::SimConfig;
use super::catalogue::{self, Content};
use super::faults::{Dice, Endpoint, Failure, Injected, TokenBucket};
use super::order::{AcceptError, Accepted, Fate, Order, Status, Timing, WAITING_ACCEPTANCE};

/// An order to create, through `POST /sim/orders` or `Simulator::add_orders`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderSpec {
    /// Default: the next `SIM-NNNNNN-A`. An existing id is replaced by the new order.
    pub order_id: Option<String>,
    /// Default WAITING_ACCEPTANCE; any code, even one Mirakl does not have (e.g. "PARTY").
    /// Only orders created in WAITING_ACCEPTANCE are refused at the acceptance deadline.
    pub state: Option<String>,
    /// Default: random, 1 to 3. Clamped to 1..=100 in process; `POST /sim/orders` refuses
    /// values outside that range.
    pub lines: Option<u32>,
    /// `order_state_reason_code` while the order is in its initial state.
    pub reason_code: Option<String>,
    /// Exact lines, numbered `ID-1`, `ID-2`...; when set (and not empty), `lines` is ignored.
    /// At most 100 are kept in process; `POST /sim/orders` refuses more.
    pub items: Option<Vec<LineSpec>>,
    /// The order's creation date; default now (seeded orders: spread over the last six hours).
    pub created_at: Option<DateTime<Utc>>,
    /// `order_tax_mode`: TAX_INCLUDED (default) or TAX_EXCLUDED, which adds 13 % HST to each
    /// line's `taxes` on top of its prices. Any other code is shown as given, without taxes.
    pub tax_mode: Option<String>,
    pub behaviour: Behaviour,
}

/// One scripted order line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineSpec {
    /// OR11's `offer_sku` (and `product_shop_sku`).
    pub sku: String,
    /// Default 1; 0 counts as 1 in process, `POST /sim/orders` refuses it.
    pub quantity: u32,
    /// Per unit, in dollars; default the catalogue's price for `sku`, else 10.00.
    pub unit_price: Option<f64>,
    /// Default the catalogue's product for `sku`, else `P-` followed by the SKU.
    pub product_sku: Option<String>,
}

impl Default for LineSpec {
    fn default() -> LineSpec {
        LineSpec {
            sku: String::new(),
            quantity: 1,
            unit_price: None,
            product_sku: None,
        }
    }
}

/// Per-order behaviour; scripted entries take precedence over random faults for that order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Stays WAITING_ACCEPTANCE forever after a 204.
    pub never_moves: bool,
    /// Goes CANCELED one step after acceptance.
    pub cancel_after_accept: bool,
    /// Consumed one per OR21 call for this order, then normal.
    pub or21: Vec<Scripted>,
    /// Consumed one per OR11 call whose answer includes this order, then normal.
    pub or11: Vec<Scripted>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Scripted {
    Ok,
    Status500,
    Status502,
    Status503,
    /// 429 with `Retry-After` from `Faults::retry_after`.
    Throttle,
    /// OR21 applied, its answer delayed by `Faults::slow_delay`.
    SlowApplied,
    /// 200 with an HTML page.
    Html,
}

/// What `GET /sim/stats` reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SimStats {
    pub orders_by_state: BTreeMap<String, u64>,
    /// Per endpoint ("OR11", "OR21", "A01", "other"); requests with a wrong key count only
    /// under "unauthorized".
    pub requests: BTreeMap<String, u64>,
    pub or21_calls_per_order: BTreeMap<String, u64>,
    /// 204s that moved an order (accepted or refused).
    pub or21_accepted: u64,
    /// OR21 calls that found the order already decided: wasted or double accepts.
    pub or21_not_waiting: u64,
    /// Per kind: latency, rate_limit, status_500, status_502, status_503, throttle, slow, html,
    /// and cancel/stuck for acceptances of orders that will not move on.
    pub faults_injected: BTreeMap<String, u64>,
    /// 429 answers per endpoint, from `--rate-limit`, `--throttle-rate` and scripts alike.
    #[serde(default)]
    pub throttled: BTreeMap<String, u64>,
}

/// Seeded orders are created over the six hours before start-up, oldest first (well inside
/// Best Buy's 24-hour acceptance window).
const SEED_SPREAD_MS: u128 = 6 * 3600 * 1000;

/// The OR11 filters and paging, already validated.
#[derive(Debug)]
pub(crate) struct Listing {
    pub order_ids: Option<Vec<String>>,
    pub states: Option<HashSet<String>>,
    pub start_update: Option<DateTime<Utc>>,
    pub page: Option<(usize, usize)>,
    pub descending: bool,
}

/// One OR11 answer, ready to render outside the lock.
pub(crate) struct Page {
    pub orders: Vec<(Arc<Content>, Status)>,
    pub total_count: usize,
    /// A scripted answer from one of the orders on the page, if any had a script left.
    pub scripted: Option<Option<Injected>>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<&'static str, u64>,
    or21_calls: HashMap<String, u64>,
    or21_accepted: u64,
    or21_not_waiting: u64,
    faults: BTreeMap<&'static str, u64>,
    throttled: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub(crate) struct State {
    orders: Vec<Order>,
    index: HashMap<String, usize>,
    next_seq: u64,
    content_rng: StdRng,
    fates: Dice,
    pub dice: Dice,
    /// Requests per second per endpoint: `--rate-limit` at first, changed by
    /// `POST /sim/rate-limit`.
    rate_limit: Option<u32>,
    /// The rate limit's token buckets, one per endpoint, created on first use.
    buckets: BTreeMap<&'static str, TokenBucket>,
    counters: Counters,
}

impl State {
    pub fn new(config: &SimConfig, now: DateTime<Utc>) -> State {
        // Three independent streams from one seed, so order contents stay the same whatever
        // faults are switched on.
        let mut state = State {
            orders: Vec::with_capacity(config.orders),
            index: HashMap::with_capacity(config.orders),
            next_seq: 1,
            content_rng: StdRng::seed_from_u64(config.seed),
            fates: Dice::new(config.seed ^ 0x5eed_fa7e),
            dice: Dice::new(config.seed ^ 0xd1ce_0000),
            rate_limit: config.faults.rate_limit,
            buckets: BTreeMap::new(),
            counters: Counters::default(),
        };
        let count = config.orders as u128;
        for i in 0..config.orders {
            // At most SEED_SPREAD_MS, so the narrowing cannot truncate.
            let ago = (SEED_SPREAD_MS * (count - i as u128) / count) as i64;
            state.add(
                OrderSpec::default(),
                config,
                now - TimeDelta::milliseconds(ago),
            );
        }
        state
    }

    fn next_id(&mut self) -> String {
        loop {
            let id = format!("SIM-{:06}-A", self.next_seq);
            self.next_seq += 1;
            if !self.index.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn add(&mut self, spec: OrderSpec, config: &SimConfig, created: DateTime<Utc>) -> String {
        let id = match &spec.order_id {
            Some(id) => id.clone(),
            None => self.next_id(),
        };
        let created = spec.created_at.unwrap_or(created);
        let content = catalogue::generate(
            &mut self.content_rng,
            &config.catalogue,
            id.clone(),
            created,
            &spec,
        );
        let draw = self.fates.fate_draw();
        let faults = &config.faults;
        let behaviour = spec.behaviour;
        let fate = if behaviour.never_moves {
            Fate::Stuck
        } else if behaviour.cancel_after_accept || draw < faults.cancel_rate {
            Fate::Cancels
        } else if draw < faults.cancel_rate + faults.stuck_rate {
            Fate::Stuck
        } else {
            Fate::Moves
        };
        let order = Order::new(
            content,
            spec.state.unwrap_or_else(|| WAITING_ACCEPTANCE.to_owned()),
            spec.reason_code,
            fate,
            behaviour.or21,
            behaviour.or11,
        );
        match self.index.get(&id) {
            Some(&at) => self.orders[at] = order,
            None => {
                self.index.insert(id.clone(), self.orders.len());
                self.orders.push(order);
            }
        }
        id
    }

    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    pub fn order(&self, id: &str) -> Option<&Order> {
        self.index.get(id).map(|&at| &self.orders[at])
    }

    pub fn count_request(&mut self, key: &'static str) {
        *self.counters.requests.entry(key).or_default() += 1;
    }

    pub fn count_fault(&mut self, key: &'static str) {
        *self.counters.faults.entry(key).or_default() += 1;
    }

    /// Changes the rate limit from now on (`None`: none); the buckets start full.
    pub fn set_rate_limit(&mut self, rate: Option<u32>) {
        self.rate_limit = rate;
        self.buckets.clear();
    }

    /// False when the rate limit says this request is one too many for its endpoint; counted.
    pub fn within_rate_limit(&mut self, endpoint: Endpoint, now: Instant) -> bool {
        let Some(rate) = self.rate_limit else {
            return true;
        };
        let within = self
            .buckets
            .entry(endpoint.key())
            .or_insert_with(|| TokenBucket::new(rate, now))
            .take(rate, now);
        if !within {
            self.count_fault("rate_limit");
            self.count_throttled(endpoint);
        }
        within
    }

    fn count_throttled(&mut self, endpoint: Endpoint) {
        *self.counters.throttled.entry(endpoint.key()).or_default() += 1;
    }

    /// The fault for this request: the order's script first, else the dice. Counted.
    pub fn or21_fault(&mut self, config: &SimConfig, id: &str) -> Option<Injected> {
        *self.counters.or21_calls.entry(id.to_owned()).or_default() += 1;
        let scripted = self
            .index
            .get(id)
            .and_then(|&at| self.orders[at].or21_script.pop_front());
        let injected = match scripted {
            Some(script) => Injected::scripted(&script),
            None => self.dice.fault(&config.faults, Endpoint::Or21),
        };
        self.record(Endpoint::Or21, injected)
    }

    /// Counts an injected fault and passes it on.
    pub fn record(&mut self, endpoint: Endpoint, injected: Option<Injected>) -> Option<Injected> {
        if let Some(injected) = injected {
            self.count_fault(injected.key());
            if injected == Injected::Fail(Failure::Throttle) {
                self.count_throttled(endpoint);
            }
        }
        injected
    }

    /// OR21's decision, counted.
    pub fn decide(
        &mut self,
        config: &SimConfig,
        id: &str,
        decisions: &[(String, bool)],
        now: DateTime<Utc>,
    ) -> Result<(), AcceptError> {
        let at = *self.index.get(id).ok_or(AcceptError::OrderNotFound)?;
        match self.orders[at].decide(decisions, now, config.timing(), config.partial_acceptance) {
            Ok(outcome) => {
                self.counters.or21_accepted += 1;
                match outcome {
                    Accepted::Lines(Fate::Cancels) => self.count_fault("cancel"),
                    Accepted::Lines(Fate::Stuck) => self.count_fault("stuck"),
                    Accepted::Lines(Fate::Moves) | Accepted::Refused => {}
                }
                Ok(())
            }
            Err(error) => {
                if matches!(error, AcceptError::InvalidState(_)) {
                    self.counters.or21_not_waiting += 1;
                }
                Err(error)
            }
        }
    }

    /// OR11: the matching orders sorted by creation date then id, one page of them, and the
    /// script of the first order on the page that had one (every such order consumes one
    /// entry).
    pub fn list(&mut self, listing: &Listing, now: DateTime<Utc>, timing: Timing) -> Page {
        let mut matches: Vec<usize> = match &listing.order_ids {
            Some(ids) => {
                let mut seen = HashSet::with_capacity(ids.len());
                ids.iter()
                    .filter_map(|id| self.index.get(id).copied())
                    .filter(|at| seen.insert(*at))
                    .collect()
            }
            None => (0..self.orders.len()).collect(),
        };
        matches.retain(|&at| {
            let order = &self.orders[at];
            listing
                .states
                .as_ref()
                .is_none_or(|states| states.contains(order.state(now, timing)))
                && listing
                    .start_update
                    .is_none_or(|start| order.updated(now, timing) >= start)
        });
        matches.sort_by(|&a, &b| {
            let (a, b) = (&self.orders[a].content, &self.orders[b].content);
            a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id))
        });
        if listing.descending {
            matches.reverse();
        }
        let total_count = matches.len();
        if let Some((offset, max)) = listing.page {
            matches = matches.into_iter().skip(offset).take(max).collect();
        }
        let mut scripted = None;
        for &at in &matches {
            if let Some(script) = self.orders[at].or11_script.pop_front() {
                scripted.get_or_insert(Injected::scripted(&script));
            }
        }
        let orders = matches
            .into_iter()
            .map(|at| {
                let order = &self.orders[at];
                (Arc::clone(&order.content), order.status(now, timing))
            })
            .collect();
        Page {
            orders,
            total_count,
            scripted,
        }
    }

    pub fn stats(&self, now: DateTime<Utc>, timing: Timing) -> SimStats {
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for order in &self.orders {
            *by_state.entry(order.state(now, timing)).or_default() += 1;
        }
        let owned = |map: &BTreeMap<&str, u64>| {
            map.iter()
                .map(|(key, count)| ((*key).to_owned(), *count))
                .collect()
        };
        SimStats {
            orders_by_state: owned(&by_state),
            requests: owned(&self.counters.requests),
            or21_calls_per_order: self
                .counters
                .or21_calls
                .iter()
                .map(|(id, count)| (id.clone(), *count))
                .collect(),
            or21_accepted: self.counters.or21_accepted,
            or21_not_waiting: self.counters.or21_not_waiting,
            faults_injected: owned(&self.counters.faults),
            throttled: owned(&self.counters.throttled),
        }
    }
}
