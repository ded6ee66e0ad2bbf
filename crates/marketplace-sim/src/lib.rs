//! marketplace-sim: a Mirakl-compatible marketplace (OR11, OR21, A01) for demos, tests and
//! benchmarks, with per-order scripts and seeded random faults.
//!
//! Order states are computed from the clock when read, so no background task is needed. After
//! an OR21 204 accepting at least one line, an order reads WAITING_ACCEPTANCE for one `step`
//! (Mirakl's lag), then WAITING_DEBIT, WAITING_DEBIT_PAYMENT and SHIPPING one step apart. A
//! step of zero makes every transition immediate: the order reads SHIPPING right after the 204.
//! Orders fated to cancel read CANCELED one step after acceptance; stuck ones read
//! WAITING_ACCEPTANCE forever. Refusing every line makes an order REFUSED at once; refusing
//! only some makes those lines read REFUSED while the others follow the order (unless
//! `partial_acceptance` is off: then OR21 answers ORDER_PARTIAL_ACCEPTANCE_DISABLED). An order
//! still undecided `acceptance_deadline` after its creation reads REFUSED with
//! [`ACCEPTANCE_DEADLINE_REASON`].
//!
//! Once decided, an order refuses any further OR21 with ORDER_INVALID_STATE, even while it
//! still reads WAITING_ACCEPTANCE: that is a double accept, counted in `or21_not_waiting`.
//!
//! Orders draw their lines from a [`Catalogue`] (the built-in products unless `--skus` names
//! the seller's own), or take exact lines from [`OrderSpec::items`]. `--rate-limit` gives each
//! endpoint its own token bucket (`POST /sim/rate-limit` changes the limit while it runs); every 429
//! is counted per endpoint in [`SimStats::throttled`].
//!
//! One process can serve several marketplaces ([`Simulator::start_marketplaces`],
//! `--marketplaces a,b`): each [`Marketplace`] has its whole API under `/NAME` and its own
//! orders, faults, rate limit and counters, so one seller's shops on different marketplaces can
//! be simulated at once, with the same order ids on each.

mod catalogue;
mod control;
mod faults;
mod order;
mod routes;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use catalogue::{Catalogue, CatalogueError};
pub use faults::Faults;
pub use order::ACCEPTANCE_DEADLINE_REASON;
pub use state::{Behaviour, LineSpec, OrderSpec, Scripted, SimStats};

use order::Timing;

use state::State;

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The shop API key the `Authorization` header must carry, exactly.
    pub key: String,
    /// Orders seeded in WAITING_ACCEPTANCE at start-up.
    pub orders: usize,
    /// Seeds order contents, fates and faults: same seed, same run.
    pub seed: u64,
    /// Time between state transitions after acceptance.
    pub step: Duration,
    /// Orders still undecided in WAITING_ACCEPTANCE this long after creation read REFUSED with
    /// `ACCEPTANCE_DEADLINE_REASON`, and OR21 on them answers ORDER_INVALID_STATE.
    pub acceptance_deadline: Duration,
    /// OR21 may refuse some lines and accept the others; when false, a mixed decision answers
    /// ORDER_PARTIAL_ACCEPTANCE_DISABLED.
    pub partial_acceptance: bool,
    /// What generated orders draw their lines from.
    pub catalogue: Catalogue,
    pub faults: Faults,
}

impl SimConfig {
    /// No orders, seed 1, a 200 ms step, Best Buy's 24-hour acceptance deadline, partial
    /// acceptance on, the built-in products, no faults (`Retry-After` 1 s, slow answers 30 s
    /// when those faults are switched on).
    pub fn new(key: impl Into<String>) -> SimConfig {
        SimConfig {
            key: key.into(),
            orders: 0,
            seed: 1,
            step: Duration::from_millis(200),
            acceptance_deadline: Duration::from_secs(24 * 3600),
            partial_acceptance: true,
            catalogue: Catalogue::default(),
            faults: Faults::default(),
        }
    }

    pub(crate) fn timing(&self) -> Timing {
        Timing {
            step: self.step,
            acceptance_deadline: self.acceptance_deadline,
        }
    }
}

/// What the handlers share.
pub(crate) struct Shared {
    config: SimConfig,
    state: Mutex<State>,
    shutdown: CancellationToken,
    /// Cancelled by [`Marketplace::release_slow_answers`]: slow answers go out at once.
    slow_released: CancellationToken,
}

impl Shared {
    fn new(config: SimConfig, shutdown: &CancellationToken) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::new(&config, Utc::now())),
            config,
            shutdown: shutdown.clone(),
            slow_released: CancellationToken::new(),
        })
    }

    /// The state; a handler that panicked mid-update cannot leave it worse than a torn counter,
    /// so poisoning is ignored rather than taking the whole simulator down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps, cut short by shutdown so slow answers do not hold it up, or by
    /// [`Marketplace::release_slow_answers`].
    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = self.shutdown.cancelled() => {}
            () = self.slow_released.cancelled() => {}
        }
    }

    fn add_orders(&self, specs: Vec<OrderSpec>) -> Vec<String> {
        let now = Utc::now();
        let mut state = self.lock();
        specs
            .into_iter()
            .map(|spec| state.add(spec, &self.config, now))
            .collect()
    }

    fn stats(&self) -> SimStats {
        self.lock().stats(Utc::now(), self.config.timing())
    }

    /// One order and its state now, detached from the lock for rendering.
    fn snapshot(&self, order_id: &str) -> Option<(Arc<catalogue::Content>, order::Status)> {
        let state = self.lock();
        let order = state.order(order_id)?;
        Some((
            Arc::clone(&order.content),
            order.status(Utc::now(), self.config.timing()),
        ))
    }
}

/// The longest marketplace name, as the worker's shop names.
const MAX_NAME: usize = 40;

/// Checks a marketplace name for `--marketplaces`: a plain identifier (a lowercase letter, then
/// up to 39 lowercase letters, digits or underscores), so it is one path segment as written.
pub fn marketplace_name(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_NAME;
    if plain {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "\"{}\" is not a marketplace name: use a lowercase letter, then up to {} lowercase letters, digits or underscores (examples: bestbuy_ca, other)",
            name.escape_default(),
            MAX_NAME - 1
        ))
    }
}

/// One marketplace a simulator serves: its own orders, faults, rate limit and counters.
pub struct Marketplace {
    /// `None` for the marketplace served at `/`.
    name: Option<String>,
    url: String,
    shared: Arc<Shared>,
}

impl Marketplace {
    /// The name it is served under (`/NAME`), `None` when served at `/`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `http://IP:PORT` or `http://IP:PORT/NAME`: the base URL a client appends `/api/...` to.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// In-process `POST /sim/orders`; returns the new ids. `lines` is clamped to 1..=100,
    /// `items` cut to 100 and quantities of 0 count as 1.
    pub fn add_orders(&self, specs: Vec<OrderSpec>) -> Vec<String> {
        self.shared.add_orders(specs)
    }

    /// In-process `POST /sim/rate-limit`: requests per second per endpoint from now on
    /// (`None`: no limit).
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.shared.lock().set_rate_limit(per_second);
    }

    /// In-process `GET /sim/stats`.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Sends the slow answers now, those held and any to come: a test holds an OR21's answer
    /// for exactly as long as it needs rather than for a `slow_delay` it hopes is long enough.
    pub fn release_slow_answers(&self) {
        self.shared.slow_released.cancel();
    }

    /// The Mirakl state code OR11 would show now.
    pub fn order_state(&self, order_id: &str) -> Option<String> {
        let state = self.shared.lock();
        state.order(order_id).map(|order| {
            order
                .state(Utc::now(), self.shared.config.timing())
                .to_owned()
        })
    }

    /// Each line's `order_line_state` as OR11 would show it now, in line order.
    pub fn line_states(&self, order_id: &str) -> Option<Vec<String>> {
        let (content, status) = self.shared.snapshot(order_id)?;
        Some(
            (0..content.lines.len())
                .map(|index| status.line(index).0.to_owned())
                .collect(),
        )
    }
}

/// A running simulator: one marketplace at `/` ([`Simulator::start`]), or several, each under
/// `/NAME` ([`Simulator::start_marketplaces`]).
pub struct Simulator {
    pub addr: SocketAddr,
    marketplaces: Vec<Marketplace>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl Simulator {
    /// Seeds the orders and serves one marketplace at `/` on `listener` in a spawned task.
    pub async fn start(config: SimConfig, listener: TcpListener) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Shared::new(config, &shutdown);
        let app = routes::router(Arc::clone(&shared));
        let marketplace = Marketplace {
            name: None,
            url: format!("http://{addr}"),
            shared,
        };
        Ok(Simulator::serve(
            addr,
            listener,
            app,
            vec![marketplace],
            shutdown,
        ))
    }

    /// Serves several marketplaces on `listener`, each its whole API (OR11, OR21, A01 and the
    /// `/sim` routes) under `/NAME`, each with its own orders seeded from its own config: with
    /// the same config, the same order ids on every marketplace. Names must be plain
    /// identifiers ([`marketplace_name`]), at least one and each once.
    pub async fn start_marketplaces(
        marketplaces: Vec<(String, SimConfig)>,
        listener: TcpListener,
    ) -> std::io::Result<Simulator> {
        check_names(marketplaces.iter().map(|(name, _)| name.as_str()))
            .map_err(|problem| std::io::Error::new(std::io::ErrorKind::InvalidInput, problem))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let mut app = axum::Router::new();
        let mut served = Vec::with_capacity(marketplaces.len());
        for (name, config) in marketplaces {
            let shared = Shared::new(config, &shutdown);
            app = app.nest(&format!("/{name}"), routes::router(Arc::clone(&shared)));
            served.push(Marketplace {
                url: format!("http://{addr}/{name}"),
                name: Some(name),
                shared,
            });
        }
        let names: Vec<String> = served
            .iter()
            .filter_map(|marketplace| marketplace.name.clone())
            .collect();
        let app = app.fallback(move || routes::no_marketplace(names.clone()));
        Ok(Simulator::serve(addr, listener, app, served, shutdown))
    }

    fn serve(
        addr: SocketAddr,
        listener: TcpListener,
        app: axum::Router,
        marketplaces: Vec<Marketplace>,
        shutdown: CancellationToken,
    ) -> Simulator {
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Simulator {
            addr,
            marketplaces,
            shutdown,
            server,
        }
    }

    /// `http://IP:PORT`: the base URL of the marketplace served at `/`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every marketplace served, in the order given.
    pub fn marketplaces(&self) -> &[Marketplace] {
        &self.marketplaces
    }

    /// The marketplace served under `/NAME`.
    pub fn marketplace(&self, name: &str) -> Option<&Marketplace> {
        self.marketplaces
            .iter()
            .find(|marketplace| marketplace.name() == Some(name))
    }

    /// The first marketplace: the only one of a simulator from [`Simulator::start`].
    fn first(&self) -> &Marketplace {
        // Both constructors serve at least one marketplace.
        &self.marketplaces[0]
    }

    /// [`Marketplace::add_orders`] on the first marketplace.
    pub fn add_orders(&self, specs: Vec<OrderSpec>) -> Vec<String> {
        self.first().add_orders(specs)
    }

    /// [`Marketplace::set_rate_limit`] on the first marketplace.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.first().set_rate_limit(per_second);
    }

    /// [`Marketplace::stats`] of the first marketplace.
    pub fn stats(&self) -> SimStats {
        self.first().stats()
    }

    /// [`Marketplace::release_slow_answers`] on the first marketplace.
    pub fn release_slow_answers(&self) {
        self.first().release_slow_answers();
    }

    /// [`Marketplace::order_state`] on the first marketplace.
    pub fn order_state(&self, order_id: &str) -> Option<String> {
        self.first().order_state(order_id)
    }

    /// [`Marketplace::line_states`] on the first marketplace.
    pub fn line_states(&self, order_id: &str) -> Option<Vec<String>> {
        self.first().line_states(order_id)
    }

    /// Stops accepting connections, cuts slow answers short and waits for the server task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "marketplace-sim server failed"),
            Err(error) => tracing::warn!(%error, "marketplace-sim server task failed"),
        }
    }
}

/// Every name a plain identifier, at least one, none twice.
fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        marketplace_name(name)?;
        if !seen.insert(name) {
            return Err(format!("marketplace \"{name}\" is named twice"));
        }
    }
    match seen.is_empty() {
        true => Err("name at least one marketplace".to_owned()),
        false => Ok(()),
    }
}
