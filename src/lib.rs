//! order-acceptance: accepts new Mirakl marketplace orders, with a full audit trail in PostgreSQL.
//!
//! Each stage of a run lives in its own module under `acceptance`; `docs/ARCHITECTURE.md`
//! describes how they fit together.

pub mod acceptance;
pub mod check;
pub mod config;
pub mod console;
pub mod db;
pub mod healthcheck;
pub mod inbox;
pub mod marketplace;
pub mod redact;
pub mod review;
pub mod rules;
pub mod scheduler;
pub mod server;
pub mod telemetry;
pub mod terminal;
