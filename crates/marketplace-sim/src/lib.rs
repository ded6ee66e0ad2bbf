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
}

impl Shared {
    /// The state; a handler that panicked mid-update cannot leave it worse than a torn counter,
    /// so poisoning is ignored rather than taking the whole simulator down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps, cut short by shutdown so slow answers do not hold it up.
    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = self.shutdown.cancelled() => {}
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

/// A running simulator.
pub struct Simulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Simulator {
    /// Seeds the orders and serves on `listener` in a spawned task.
    pub async fn start(config: SimConfig, listener: TcpListener) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&config, Utc::now())),
            config,
            shutdown: CancellationToken::new(),
        });
        let app = routes::router(Arc::clone(&shared));
        let stop = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(Simulator {
            addr,
            shared,
            server,
        })
    }

    /// `http://IP:PORT`, the base URL a client appends `/api/...` to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Stops accepting connections, cuts slow answers short and waits for the server task.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "marketplace-sim server failed"),
            Err(error) => tracing::warn!(%error, "marketplace-sim server task failed"),
        }
    }
}
