//! The audit: every action, its outcome, who and from where, written after the action itself.
//!
//! The action's own rows (a review decision, a resolution) carry the person's name already; the
//! audit adds what was refused and from where. A write that fails is logged, not shown as the
//! action failing, because the action did happen.

use sqlx::PgPool;

use super::error::ConsoleError;
use crate::db::console::{self as store, NewAuditEntry};

/// What one action was about and how it ended.
pub struct Entry<'a> {
    pub actor: &'a str,
    pub address: &'a str,
    pub action: &'a str,
    pub subject: Option<&'a str>,
    pub detail: Option<&'a str>,
}

pub async fn record<T>(pool: &PgPool, entry: Entry<'_>, outcome: &Result<T, ConsoleError>) {
    let outcome_text = match outcome {
        Ok(_) => "ok".to_string(),
        Err(err) => err.to_string(),
    };
    let written = store::insert_audit(
        pool,
        &NewAuditEntry {
            actor: entry.actor,
            action: entry.action,
            subject: entry.subject,
            outcome: &outcome_text,
            detail: entry.detail,
            address: entry.address,
        },
    )
    .await;
    if let Err(err) = written {
        tracing::error!(
            actor = entry.actor,
            action = entry.action,
            subject = entry.subject,
            error = %err,
            "console: writing the audit row failed"
        );
    }
}
