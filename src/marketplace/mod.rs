//! The Mirakl marketplace: OR11 (list orders), OR21 (accept), A01 (account).
//!
//! [`MarketplaceClient`] is the only way the worker talks to the marketplace, so timeouts,
//! retries, the rate gate, size caps and the `api_calls` audit trail apply to every call alike.

mod client;
mod error;
mod gate;
mod learner;
mod limit;
mod path;
mod retry;
mod shared;
mod types;

pub use client::{Fence, MarketplaceClient};
pub use error::{Endpoint, MarketplaceError};
pub use limit::{AdaptiveLimit, Slot};
pub use retry::RetryPolicy;
pub use types::{
    Account, LineDecision, Order, OrderLine, OrderState, OrderTerms, OrdersPage, OrdersRead,
    TaxMode, UnreadableOrder,
};
