//! order-acceptance: accepts new Mirakl marketplace orders, with a full audit trail in PostgreSQL.
//!
//! Each stage of a run lives in its own module; `../shared/ARCHITECTURE.md` and
//! `docs/ARCHITECTURE.md` describe how they fit together.

pub mod config;
pub mod db;
pub mod healthcheck;
pub mod inbox;
pub mod scheduler;
pub mod telemetry;
