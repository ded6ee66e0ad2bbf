//! The review queue: the orders a person must decide (`review list`), and the decisions that
//! hand them back to the worker (`review accept|refuse`, and the deadline policy).
//!
//! A decision is only queued here: a `review_decisions` row and a `pending_acceptance` history
//! row, in one transaction. The next run claims the order and carries the decision out through
//! the usual claim, OR21 and validation path, so there is no second way to OR21.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::OrderKey;
use crate::db::failures;
use crate::db::orders;
use crate::db::review::{
    self, InReviewOrder, LineDecision, NewReviewDecision, ReviewDecision, ShopWindows,
};

/// Who `decided_by` names when `rules.on_deadline` decided, not a person.
pub const DEADLINE_POLICY: &str = "deadline policy";

/// The `stage` in the payload of the failure that says an order in review is near its deadline.
pub const DEADLINE_STAGE: &str = "deadline";

/// The status a decision can be made in.
const IN_REVIEW: &str = "in_review";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(
        "order {0} is not in the database, or has no status history. Check the id (the marketplace's order id) in `order-acceptance review list`; nothing was changed"
    )]
    OrderNotFound(String),
    #[error(
        "order {order_id} is {status}, not in review, so there is nothing to decide; nothing was changed. See its story with `order-acceptance order {order_id}`"
    )]
    NotInReview { order_id: String, status: String },
    #[error(
        "order {order_id} is already decided: {action} by {decided_by} at {} (review decision #{review_id}), and the worker's next run carries it out; nothing was changed. See `order-acceptance order {order_id}`",
        decided_at.format("%Y-%m-%d %H:%M:%S UTC")
    )]
    AlreadyDecided {
        order_id: String,
        review_id: i64,
        action: String,
        decided_by: String,
        decided_at: DateTime<Utc>,
    },
    #[error(
        "order {order_id} was decided by someone else at the same moment; nothing was changed. See who with `order-acceptance order {order_id}`"
    )]
    DecidedMeanwhile { order_id: String },
    #[error(
        "order {order_id} has no line {}; its lines are {}. Nothing was changed: give --lines from that list, separated by commas",
        unknown.join(", "),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    UnknownLines {
        order_id: String,
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error(
        "{action} failed: {error}. Check that the database is reachable and up to date (`order-acceptance migrate`); nothing was changed"
    )]
    // Not a `source`: the message already carries it, and anyhow would print it twice.
    Database { action: String, error: sqlx::Error },
}

/// Wraps a database error with the action that failed.
fn db_error(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ReviewError {
    move |error| ReviewError::Database {
        action: action.into(),
        error,
    }
}

/// ` --shop NAME` for commands people are told to type about an order of `shop`; nothing for the
/// default shop, so a one-shop deployment's messages read as before.
pub fn shop_flag(shop: &str) -> String {
    match shop {
        crate::config::ShopName::DEFAULT => String::new(),
        other => format!(" --shop {other}"),
    }
}

/// What a person (or the deadline policy) decides about an order in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewAction {
    /// The lines named (all when none are) are accepted, the others refused.
    Accept,
    /// The lines named (all when none are) are refused, the others accepted.
    Refuse,
}

impl ReviewAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewAction::Accept => "accept",
            ReviewAction::Refuse => "refuse",
        }
    }
}

/// A decision to queue.
#[derive(Debug, Clone)]
pub struct Decision {
    pub shop: String,
    pub order_id: String,
    pub action: ReviewAction,
    /// The lines the action applies to; `None`: every line.
    pub lines: Option<Vec<String>>,
    pub note: Option<String>,
    pub decided_by: String,
}

/// A decision queued for the next run.
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    pub decision: ReviewDecision,
    /// The `pending_acceptance` history row that makes the order claimable.
    pub history_id: i64,
}

// `review accept|refuse` and the deadline policy -----------------------------------------------

/// Queues `decision` for the worker's next run, after checking, under the order's row lock,
/// that the order is in review, has no decision waiting, and has the lines named. Closes the
/// order's open deadline failure, since someone has now decided.
pub async fn queue_decision(pool: &PgPool, decision: &Decision) -> Result<Queued, ReviewError> {
    let order_id = decision.order_id.as_str();
    let shop = decision.shop.as_str();
    let action = || format!("deciding order {order_id} of shop {shop}");
    let mut tx = pool.begin().await.map_err(db_error(action()))?;
    let current = orders::lock_current_status(&mut tx, shop, order_id)
        .await
        .map_err(db_error(action()))?
        .ok_or_else(|| ReviewError::OrderNotFound(order_id.to_string()))?;
    // Before the status: a decision that won the lock has moved the order out of review, and
    // the one that lost must hear who decided, not only the status it left behind.
    if let Some(open) = review::open_decision(&mut tx, shop, order_id)
        .await
        .map_err(db_error(action()))?
    {
        return Err(already_decided(open));
    }
    if current.status != IN_REVIEW {
        return Err(ReviewError::NotInReview {
            order_id: order_id.to_string(),
            status: current.status,
        });
    }
    if let Some(lines) = &decision.lines {
        check_lines_belong(&mut tx, shop, order_id, lines).await?;
    }
    let row = review::insert_decision(
        &mut tx,
        &NewReviewDecision {
            shop,
            order_id,
            action: decision.action.as_str(),
            lines: decision.lines.as_deref(),
            note: decision.note.as_deref(),
            decided_by: &decision.decided_by,
        },
    )
    .await
    .map_err(|error| match is_one_open_violation(&error) {
        true => ReviewError::DecidedMeanwhile {
            order_id: order_id.to_string(),
        },
        false => db_error(action())(error),
    })?;
    let note = history_note(&row);
    let history_id = orders::insert_pending_row(&mut tx, shop, order_id, &current, &note)
        .await
        .map_err(db_error(action()))?;
    failures::resolve_open_of_stage(
        &mut tx,
        shop,
        Some(order_id),
        DEADLINE_STAGE,
        &note,
        &decision.decided_by,
    )
    .await
    .map_err(db_error(action()))?;
    tx.commit().await.map_err(db_error(action()))?;
    Ok(Queued {
        decision: row,
        history_id,
    })
}

fn already_decided(open: ReviewDecision) -> ReviewError {
    ReviewError::AlreadyDecided {
        order_id: open.order_id,
        review_id: open.review_id,
        action: open.action,
        decided_by: open.decided_by,
        decided_at: open.decided_at,
    }
}

fn is_one_open_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.constraint() == Some("review_decisions_one_open_per_shop"))
}

async fn check_lines_belong(
    conn: &mut sqlx::PgConnection,
    shop: &str,
    order_id: &str,
    lines: &[String],
) -> Result<(), ReviewError> {
    let known = review::stored_line_ids(conn, shop, order_id)
        .await
        .map_err(db_error(format!("reading the lines of order {order_id}")))?
        .unwrap_or_default();
    let unknown: Vec<String> = lines
        .iter()
        .filter(|line| !known.contains(line))
        .cloned()
        .collect();
    match unknown.is_empty() {
        true => Ok(()),
        false => Err(ReviewError::UnknownLines {
            order_id: order_id.to_string(),
            unknown,
            known,
        }),
    }
}

/// The history note of a queued decision: who decided what, and why.
fn history_note(decision: &ReviewDecision) -> String {
    let what = match (decision.action.as_str(), &decision.lines) {
        (action, None) => format!("{action} every line"),
        ("accept", Some(lines)) => {
            format!("accept lines {} (the others refused)", lines.join(", "))
        }
        (action, Some(lines)) => {
            format!("{action} lines {} (the others accepted)", lines.join(", "))
        }
    };
    let why = decision
        .note
        .as_deref()
        .map_or_else(String::new, |note| format!(": {note}"));
    format!(
        "Review decision #{} by {}: {what}{why}. The next run carries it out.",
        decision.review_id, decision.decided_by
    )
}

// `review list` --------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct ReviewList {
    /// The database knows more than one shop: every row names its shop, the default one too.
    #[serde(skip)]
    pub several_shops: bool,
    pub generated_at: DateTime<Utc>,
    pub orders: Vec<ReviewedOrder>,
    /// Why the deadlines matter (`marketplace.acceptance_window`).
    pub deadline_note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewedOrder {
    #[serde(flatten)]
    pub order: InReviewOrder,
    /// Seconds from `generated_at` to the deadline; negative once it has passed.
    pub time_left_seconds: i64,
    /// The decisions of the claim that sent the order to review: the rule behind each line.
    pub lines: Vec<LineDecision>,
    /// A decision already waiting for the next run.
    pub queued: Option<ReviewDecision>,
}

/// Orders in review at `now` (of `shop`, or of every shop), oldest first, with their lines, any
/// decision waiting, and their deadline each shop's window after creation. `deadline_note` is
/// the sentence that says why the deadlines matter.
pub async fn list_in_review(
    pool: &PgPool,
    shop: Option<&str>,
    windows: ShopWindows<'_>,
    deadline_note: String,
    now: DateTime<Utc>,
) -> Result<ReviewList, ReviewError> {
    let action = || "listing the orders in review".to_string();
    let in_review = review::orders_in_review(pool, shop, windows)
        .await
        .map_err(db_error(action()))?;
    let keys: Vec<OrderKey> = in_review.iter().map(InReviewOrder::key).collect();
    let mut decisions = review::latest_line_decisions(pool, &keys)
        .await
        .map_err(db_error(action()))?;
    let mut queued = review::open_decisions(pool, &keys)
        .await
        .map_err(db_error(action()))?;
    let orders = in_review
        .into_iter()
        .map(|order| {
            let same = |shop: &str, id: &str| shop == order.shop && id == order.order_id;
            ReviewedOrder {
                time_left_seconds: (order.deadline - now).num_seconds(),
                lines: take_matching(&mut decisions, |d| same(&d.shop, &d.order_id)),
                queued: take_matching(&mut queued, |d| same(&d.shop, &d.order_id))
                    .into_iter()
                    .next(),
                order,
            }
        })
        .collect();
    let several_shops = crate::db::runs::known_shops(pool)
        .await
        .map_err(db_error(action()))?
        .len()
        > 1;
    Ok(ReviewList {
        several_shops,
        generated_at: now,
        orders,
        deadline_note,
    })
}

/// Moves the items matching `belongs` out of `items`, keeping their order.
fn take_matching<T>(items: &mut Vec<T>, belongs: impl Fn(&T) -> bool) -> Vec<T> {
    let (taken, rest) = std::mem::take(items).into_iter().partition(belongs);
    *items = rest;
    taken
}
