//! Configuration: built-in defaults < config file < `ORDER_ACCEPTANCE__SECTION__KEY` variables <
//! the well-known `DATABASE_URL`, `MARKETPLACE_URL` and `MARKETPLACE_API_KEY`.
//!
//! One room per concern: [`settings`] holds the typed values the worker reads, `load` merges the
//! layers, `raw` mirrors the file before checking, `validate` checks every value and reports all
//! problems at once, `shops` resolves the named `[shops.NAME]` tables, and `limits` derives the validation deadline and the fence from the
//! settings.

mod limits;
mod load;
mod raw;
mod settings;
mod shops;
mod validate;

pub use settings::*;
pub use validate::{next_runs, parse_cron};

/// What a command needs: the worker needs everything; commands that only read the database
/// (`migrate`, the failure inbox, `status`) need no marketplace key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Everything,
    DatabaseOnly,
}

/// Every problem found in the configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}\nFix these in the config file or the environment and start again.", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub(crate) fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}
