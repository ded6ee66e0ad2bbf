//! The operator commands: the failure inbox (`failures list|show|resolve|retry`), one order's
//! story (`order`) and the state of the queue (`status`). The review queue's domain is
//! [`crate::review`] (and `review --now` is [`crate::acceptance::decide_now`]); their tables are
//! in [`render`] with the others.
//!
//! Each command returns a plain struct; [`render`] turns it into tables for people or JSON for
//! machines. Commands that depend on the time take `now`, so tests need no clock and no sleep.

pub mod render;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::failures::{self, Failure, FailureFilter, FailureSummary, Resolution};
use crate::db::orders::{self, ApiCallEntry, HistoryEntry, OrderHeader, PendingOrder, StatusCount};
use crate::db::review::{self, LineDecision, LineState, ReviewDecision, ShopWindows};
use crate::db::runs::{self, Holder, LiveRun, RunRecord};

/// Current statuses from which a person may put an order back in the queue. `accepting` is
/// not one: a run holds the order now and will record its outcome.
pub const RETRYABLE_STATUSES: [&str; 2] = ["acceptance_failed", "pending_acceptance"];

/// How many of the orders pending too long `status` names.
const PENDING_TOO_LONG_SHOWN: i64 = 5;

/// Why the acceptance deadline matters, printed next to the orders close to it.
pub fn deadline_note(acceptance_window: Duration) -> String {
    format!(
        "the marketplace refuses an order left undecided {} after its creation (marketplace.acceptance_window)",
        crate::config::window_text(acceptance_window)
    )
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("failure #{0} does not exist. See the ids with `order-acceptance failures list --all`")]
    FailureNotFound(i64),
    #[error(
        "failure #{failure_id} is already resolved (at {resolved_at}, by {}: {note}); nothing was changed",
        resolved_by.as_deref().unwrap_or("unknown")
    )]
    AlreadyResolved {
        failure_id: i64,
        resolved_at: DateTime<Utc>,
        resolved_by: Option<String>,
        note: String,
    },
    #[error(
        "failure #{0} names no order, so there is nothing to put back in the queue. Once it is handled, close it with `order-acceptance failures resolve {0} --note TEXT`"
    )]
    NoRelatedOrder(i64),
    #[error(
        "order {order_id} of failure #{failure_id} has no status history (or is not in the orders table), so the worker would not pick it up. Insert the order and a pending_acceptance row as an upstream system does, then resolve the failure"
    )]
    OrderHasNoStatus { failure_id: i64, order_id: String },
    #[error("cannot retry failure #{failure_id}: order {order_id} is {status}. {}", retry_refusal_advice(status, *failure_id, order_id))]
    NotRetryable {
        failure_id: i64,
        order_id: String,
        status: String,
    },
    #[error(
        "order {0} is not in the database. Check the id (it is the marketplace's order id, e.g. 123456789-A)"
    )]
    OrderNotFound(String),
    #[error(
        "order {order_id} is not in the database for shop {shop}. {}",
        match others.as_slice() {
            [] => "Check the id (it is the marketplace's order id) and the shop name".to_string(),
            shops => format!("It is there for shop {}: give that --shop", shops.join(", ")),
        }
    )]
    OrderNotInShop {
        order_id: String,
        shop: String,
        others: Vec<String>,
    },
    #[error(
        "order {order_id} exists in several shops ({}): say which with --shop NAME",
        shops.join(", ")
    )]
    OrderInSeveralShops {
        order_id: String,
        shops: Vec<String>,
    },
    #[error("{what} ({value}) is too long to subtract from the current time; use a shorter one")]
    DurationOutOfRange { what: &'static str, value: String },
    #[error(
        "{action} failed: {error}. Check that the database is reachable and up to date (`order-acceptance migrate`)"
    )]
    // Not a `source`: the message already carries it, and anyhow would print it twice.
    Database { action: String, error: sqlx::Error },
}

/// What to do instead of a retry, by the order's current status.
fn retry_refusal_advice(status: &str, failure_id: i64, order_id: &str) -> String {
    match status {
        "accepting" => format!(
            "A run holds it right now and will record the outcome; check `order-acceptance order {order_id}` after the run"
        ),
        "accepted" | "cancelled" => format!(
            "Nothing is left to accept; close the failure with `order-acceptance failures resolve {failure_id} --note TEXT`"
        ),
        _ => format!(
            "The worker only retries orders in {}; another system owns this status. Close the failure with `order-acceptance failures resolve {failure_id} --note TEXT` once handled",
            RETRYABLE_STATUSES.join(" or ")
        ),
    }
}

/// Wraps a database error with the action that failed.
fn db_error(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> InboxError {
    move |error| InboxError::Database {
        action: action.into(),
        error,
    }
}

/// `now` minus `duration`, for filters and thresholds given as durations.
pub fn time_before(
    now: DateTime<Utc>,
    duration: Duration,
    what: &'static str,
) -> Result<DateTime<Utc>, InboxError> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| now.checked_sub_signed(delta))
        .ok_or_else(|| InboxError::DurationOutOfRange {
            what,
            value: humantime::format_duration(duration).to_string(),
        })
}

/// The shop of order `order_id`: `named` when it has the order, else the only shop that has it.
/// Two marketplaces may use the same order id, so a person names the shop when it is ambiguous.
pub async fn shop_of_order(
    pool: &PgPool,
    order_id: &str,
    named: Option<&str>,
) -> Result<String, InboxError> {
    let shops = orders::shops_of_order(pool, order_id)
        .await
        .map_err(db_error(format!("looking up order {order_id}")))?;
    match (named, shops.as_slice()) {
        (Some(shop), found) if found.iter().any(|s| s == shop) => Ok(shop.to_string()),
        (Some(shop), _) => Err(InboxError::OrderNotInShop {
            order_id: order_id.to_string(),
            shop: shop.to_string(),
            others: shops,
        }),
        (None, []) => Err(InboxError::OrderNotFound(order_id.to_string())),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(InboxError::OrderInSeveralShops {
            order_id: order_id.to_string(),
            shops,
        }),
    }
}

/// Whether the database knows more than one shop, for the tables (see `several_shops`).
pub async fn several_shops(pool: &PgPool) -> Result<bool, InboxError> {
    let shops = runs::known_shops(pool)
        .await
        .map_err(db_error("reading the shops the database knows"))?;
    Ok(shops.len() > 1)
}

/// Who is acting: the name given, else the login name (`$USER`), else "unknown".
pub fn operator_name(given: Option<String>, login: Option<String>) -> String {
    given
        .into_iter()
        .chain(login)
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Whole seconds from `then` to `now`.
fn seconds_between(then: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - then).num_seconds()
}

// `failures list` ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct FailureList {
    /// The database knows more than one shop: every row names its shop, the default one too.
    #[serde(skip)]
    pub several_shops: bool,
    pub generated_at: DateTime<Utc>,
    pub include_resolved: bool,
    pub failures: Vec<ListedFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListedFailure {
    #[serde(flatten)]
    pub failure: FailureSummary,
    pub age_seconds: i64,
}

/// Failures matching `filter`, newest first, each with its age at `now`.
pub async fn list_failures(
    pool: &PgPool,
    filter: &FailureFilter,
    now: DateTime<Utc>,
) -> Result<FailureList, InboxError> {
    let rows = failures::list_failures(pool, filter)
        .await
        .map_err(db_error("listing failures"))?;
    Ok(FailureList {
        several_shops: several_shops(pool).await?,
        generated_at: now,
        include_resolved: filter.include_resolved,
        failures: rows
            .into_iter()
            .map(|failure| ListedFailure {
                age_seconds: seconds_between(failure.recorded_at, now),
                failure,
            })
            .collect(),
    })
}

// `failures show` ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    pub generated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub failure: Failure,
    pub age_seconds: i64,
}

/// Everything about one failure.
pub async fn show_failure(
    pool: &PgPool,
    failure_id: i64,
    now: DateTime<Utc>,
) -> Result<FailureReport, InboxError> {
    let failure = failures::find_failure(pool, failure_id)
        .await
        .map_err(db_error(format!("reading failure #{failure_id}")))?
        .ok_or(InboxError::FailureNotFound(failure_id))?;
    Ok(FailureReport {
        generated_at: now,
        age_seconds: seconds_between(failure.recorded_at, now),
        failure,
    })
}

// `failures resolve` ------------------------------------------------------------------------

/// Closes an open failure with a note; a resolved one is left as it is and reported.
pub async fn resolve_failure(
    pool: &PgPool,
    failure_id: i64,
    note: &str,
    resolved_by: &str,
) -> Result<Resolution, InboxError> {
    let action = || format!("resolving failure #{failure_id}");
    let mut tx = pool.begin().await.map_err(db_error(action()))?;
    lock_open_failure(&mut tx, failure_id).await?;
    let resolution = failures::mark_resolved(&mut tx, failure_id, note.trim(), resolved_by)
        .await
        .map_err(db_error(action()))?;
    tx.commit().await.map_err(db_error(action()))?;
    Ok(resolution)
}

/// Locks the failure for the rest of the transaction and checks that it is still open.
async fn lock_open_failure(
    conn: &mut sqlx::PgConnection,
    failure_id: i64,
) -> Result<failures::LockedFailure, InboxError> {
    let failure = failures::lock_failure(conn, failure_id)
        .await
        .map_err(db_error(format!("reading failure #{failure_id}")))?
        .ok_or(InboxError::FailureNotFound(failure_id))?;
    match failure.resolved_at {
        Some(resolved_at) => Err(InboxError::AlreadyResolved {
            failure_id,
            resolved_at,
            resolved_by: failure.resolved_by,
            note: failure.resolution_note.unwrap_or_default(),
        }),
        None => Ok(failure),
    }
}

// `failures retry` --------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct RetryOutcome {
    pub failure_id: i64,
    pub shop: String,
    pub order_id: String,
    /// The order's status before the retry.
    pub previous_status: String,
    /// The `pending_acceptance` history row that puts the order back in the queue.
    pub history_id: i64,
    pub resolution: Resolution,
}

/// Puts the failure's order back in the queue and resolves the failure, in one transaction.
pub async fn retry_failure(
    pool: &PgPool,
    failure_id: i64,
    requested_by: &str,
) -> Result<RetryOutcome, InboxError> {
    let action = || format!("retrying failure #{failure_id}");
    let mut tx = pool.begin().await.map_err(db_error(action()))?;
    let failure = lock_open_failure(&mut tx, failure_id).await?;
    let order_id = failure
        .related_id
        .filter(|id| !id.trim().is_empty())
        .ok_or(InboxError::NoRelatedOrder(failure_id))?;
    let current = orders::lock_current_status(&mut tx, &failure.shop, &order_id)
        .await
        .map_err(db_error(action()))?
        .ok_or_else(|| InboxError::OrderHasNoStatus {
            failure_id,
            order_id: order_id.clone(),
        })?;
    if !RETRYABLE_STATUSES.contains(&current.status.as_str()) {
        return Err(InboxError::NotRetryable {
            failure_id,
            order_id,
            status: current.status,
        });
    }
    let history_note = format!("Retry requested from failure #{failure_id} by {requested_by}.");
    let history_id =
        orders::insert_pending_row(&mut tx, &failure.shop, &order_id, &current, &history_note)
            .await
            .map_err(db_error(action()))?;
    let resolution_note = format!(
        "Retried by {requested_by}: order {order_id} put back in the queue (history #{history_id})."
    );
    let resolution = failures::mark_resolved(&mut tx, failure_id, &resolution_note, requested_by)
        .await
        .map_err(db_error(action()))?;
    tx.commit().await.map_err(db_error(action()))?;
    Ok(RetryOutcome {
        shop: failure.shop,
        failure_id,
        order_id,
        previous_status: current.status,
        history_id,
        resolution,
    })
}

// `order` -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct OrderReport {
    /// The database knows more than one shop: every row names its shop, the default one too.
    #[serde(skip)]
    pub several_shops: bool,
    pub order: OrderHeader,
    /// From `order_current_status`, what the claim reads; `None` for an order with no history.
    pub current_status: Option<String>,
    pub history: Vec<HistoryEntry>,
    pub failures: Vec<FailureSummary>,
    pub api_calls: Vec<ApiCallEntry>,
    /// Why each line was accepted, refused or sent to review, every claim's decisions.
    pub line_decisions: Vec<LineDecision>,
    /// What people (or the deadline policy) decided while the order was in review.
    pub review_decisions: Vec<ReviewDecision>,
    /// The lines as the latest final outcome (accepted, refused, cancelled) saw them.
    pub line_states: Option<Vec<LineState>>,
    /// The run of the order's latest claim, and whether it is alive.
    pub held_by: Option<Holder>,
}

/// One order's timeline, line decisions, review decisions, failures and API calls. `shop`: the
/// shop named, or the only one that has the order (see [`shop_of_order`]).
pub async fn order_report(
    pool: &PgPool,
    order_id: &str,
    shop: Option<&str>,
) -> Result<OrderReport, InboxError> {
    let shop = shop_of_order(pool, order_id, shop).await?;
    let shop = shop.as_str();
    let action = || format!("reading order {order_id} of shop {shop}");
    let order = orders::find_order(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?
        .ok_or_else(|| InboxError::OrderNotFound(order_id.to_string()))?;
    let history = orders::order_history(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let failures = failures::failures_for_order(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let api_calls = orders::order_api_calls(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let current_status = orders::current_status(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let line_decisions = review::order_line_decisions(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let review_decisions = review::order_review_decisions(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let line_states = review::latest_line_states(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    let held_by = runs::holder_of(pool, shop, order_id)
        .await
        .map_err(db_error(action()))?;
    Ok(OrderReport {
        several_shops: several_shops(pool).await?,
        held_by,
        current_status,
        order,
        history,
        failures,
        api_calls,
        line_decisions,
        review_decisions,
        line_states,
    })
}

// `status` ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The database knows more than one shop: every row names its shop, the default one too.
    #[serde(skip)]
    pub several_shops: bool,
    pub generated_at: DateTime<Utc>,
    /// The shop the report is about; `None`: every shop.
    pub shop: Option<String>,
    /// Orders per current status.
    pub statuses: Vec<StatusCount>,
    pub pending: PendingSummary,
    pub open_failures: i64,
    /// Runs holding orders now: their last heartbeat and how many orders each holds.
    pub live_runs: Vec<LiveRun>,
    pub last_run: Option<RunRecord>,
    /// Each shop's last run: a shop whose marketplace refused its key or was down shows here.
    pub last_run_per_shop: Vec<RunRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingSummary {
    /// Orders still to be decided: pending_acceptance, accepting, acceptance_failed due for an
    /// automatic retry, and in_review (a person decides).
    pub total: i64,
    /// Of the total: orders waiting for a person in `order-acceptance review list`.
    pub in_review: i64,
    pub oldest: Option<AgedOrder>,
    /// The marketplace's deadline of the oldest of them, the first to come.
    pub nearest_deadline: Option<NearestDeadline>,
    /// `alerts.pending_after`, in seconds.
    pub alert_after_seconds: u64,
    pub too_long_count: i64,
    /// The oldest few of them.
    pub too_long: Vec<AgedOrder>,
    pub deadline_note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgedOrder {
    pub shop: String,
    pub order_id: String,
    pub status: String,
    pub order_created_at: DateTime<Utc>,
    pub age_seconds: i64,
}

/// The first deadline to come among the orders still to be decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearestDeadline {
    pub shop: String,
    pub order_id: String,
    pub status: String,
    /// `marketplace.acceptance_window` after the marketplace created the order.
    pub deadline: DateTime<Utc>,
    /// Negative once the deadline has passed.
    pub seconds_left: i64,
}

impl NearestDeadline {
    fn of(oldest: &AgedOrder, now: DateTime<Utc>, window: Duration) -> Self {
        let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
        let deadline = oldest
            .order_created_at
            .checked_add_signed(window)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Self {
            shop: oldest.shop.clone(),
            order_id: oldest.order_id.clone(),
            status: oldest.status.clone(),
            deadline,
            seconds_left: seconds_between(now, deadline),
        }
    }
}

impl AgedOrder {
    fn at(order: PendingOrder, now: DateTime<Utc>) -> Self {
        Self {
            age_seconds: seconds_between(order.order_created_at, now),
            shop: order.shop,
            order_id: order.order_id,
            status: order.status,
            order_created_at: order.order_created_at,
        }
    }
}

/// The state of the queue at `now`, of `shop` or of every shop; orders pending longer than
/// `pending_after` are named, and deadlines are each shop's window (`windows`, the first being
/// the default shop's) after each order's creation.
pub async fn status_report(
    pool: &PgPool,
    shop: Option<&str>,
    windows: ShopWindows<'_>,
    pending_after: Duration,
    now: DateTime<Utc>,
) -> Result<StatusReport, InboxError> {
    let action = || "reading the queue status".to_string();
    let cutoff = time_before(now, pending_after, "alerts.pending_after")?;
    let statuses = orders::count_by_status(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let total = orders::count_pending_orders(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let oldest = orders::oldest_pending_order(pool, shop)
        .await
        .map_err(db_error(action()))?
        .map(|order| AgedOrder::at(order, now));
    let nearest_deadline = nearest_deadline(pool, shop, windows, now).await?;
    let in_review = review::count_in_review(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let too_long_count = orders::count_pending_created_before(pool, shop, cutoff)
        .await
        .map_err(db_error(action()))?;
    let too_long = orders::pending_created_before(pool, shop, cutoff, PENDING_TOO_LONG_SHOWN)
        .await
        .map_err(db_error(action()))?;
    let open_failures = failures::count_open_failures(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let last_run = runs::last_run(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let last_run_per_shop = runs::last_run_per_shop(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let live_runs = runs::live_runs(pool, shop)
        .await
        .map_err(db_error(action()))?;
    let window_of_note = shop
        .and_then(|name| windows.iter().find(|(s, _)| *s == name))
        .or(windows.first())
        .map_or(Duration::from_secs(24 * 3600), |(_, window)| *window);
    Ok(StatusReport {
        several_shops: several_shops(pool).await?,
        shop: shop.map(str::to_string),
        live_runs,
        generated_at: now,
        statuses,
        pending: PendingSummary {
            total,
            in_review,
            nearest_deadline,
            oldest,
            alert_after_seconds: pending_after.as_secs(),
            too_long_count,
            too_long: too_long
                .into_iter()
                .map(|order| AgedOrder::at(order, now))
                .collect(),
            deadline_note: deadline_note(window_of_note),
        },
        open_failures,
        last_run,
        last_run_per_shop,
    })
}

/// The first deadline to come: each shop's oldest pending order plus that shop's window, the
/// earliest of them. A shop not in `windows` (no longer configured) counts with 24 h.
async fn nearest_deadline(
    pool: &PgPool,
    shop: Option<&str>,
    windows: ShopWindows<'_>,
    now: DateTime<Utc>,
) -> Result<Option<NearestDeadline>, InboxError> {
    let action = || "reading the nearest deadline".to_string();
    let mut shops: Vec<&str> = windows.iter().map(|(name, _)| *name).collect();
    let others = orders::shops_with_pending_orders(pool)
        .await
        .map_err(db_error(action()))?;
    for other in &others {
        if !shops.contains(&other.as_str()) {
            shops.push(other);
        }
    }
    let mut nearest: Option<NearestDeadline> = None;
    for name in shops
        .into_iter()
        .filter(|name| shop.is_none_or(|s| s == *name))
    {
        let Some(oldest) = orders::oldest_pending_order(pool, Some(name))
            .await
            .map_err(db_error(action()))?
        else {
            continue;
        };
        let window = windows
            .iter()
            .find(|(s, _)| *s == name)
            .map_or(Duration::from_secs(24 * 3600), |(_, window)| *window);
        let deadline = NearestDeadline::of(&AgedOrder::at(oldest, now), now, window);
        if nearest
            .as_ref()
            .is_none_or(|n| deadline.deadline < n.deadline)
        {
            nearest = Some(deadline);
        }
    }
    Ok(nearest)
}
