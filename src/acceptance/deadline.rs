//! Deadline: before a run claims anything, the orders still in review within
//! `rules.deadline_margin` of the marketplace's deadline (`marketplace.acceptance_window` after
//! the order's creation) get `rules.on_deadline`.
//! `accept` and `refuse` queue a decision exactly as `review accept|refuse` does, so this same
//! run claims and carries it out; `review` leaves the order to a person but makes it loud: one
//! open failure per order and a warning each run. Once the deadline has passed, such an order
//! goes back in the queue so this run reads its real state: the marketplace's automatic refusal
//! is recorded `refused` with its reason code instead of staying hidden behind `in_review`.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Context, RunError};
use crate::db::failures;
use crate::db::review::{self, InReviewOrder};
use crate::review::{DEADLINE_POLICY, DEADLINE_STAGE, Decision, ReviewAction, ReviewError};
use crate::rules::RuleAction;

/// Applies `rules.on_deadline` at `now` to every order in review close to its deadline.
pub async fn apply_policy(ctx: &Context, now: DateTime<Utc>) -> Result<(), RunError> {
    let rules = &ctx.settings.rules;
    let window = ctx.settings.marketplace.acceptance_window;
    let near = review::orders_in_review_near_deadline(
        &ctx.pool,
        ctx.shop(),
        now,
        rules.deadline_margin,
        window,
    )
    .await
    .map_err(RunError::database(
        "reading the orders in review near their deadline",
    ))?;
    let mut past_deadline = Vec::new();
    for order in near {
        match rules.on_deadline {
            RuleAction::Accept => decide(ctx, &order, ReviewAction::Accept, now).await?,
            RuleAction::Refuse => decide(ctx, &order, ReviewAction::Refuse, now).await?,
            RuleAction::Review => {
                flag_for_a_person(ctx, &order, now).await?;
                if order.deadline <= now {
                    past_deadline.push(order.order_id);
                }
            }
        }
    }
    read_again(ctx, &past_deadline).await
}

/// Puts orders still in review past their deadline back in the queue, so this run's preflight
/// reads what the marketplace made of them. One still waiting there is decided by the rules again.
async fn read_again(ctx: &Context, order_ids: &[String]) -> Result<(), RunError> {
    if order_ids.is_empty() {
        return Ok(());
    }
    let requeued = review::requeue_in_review(
        &ctx.pool,
        ctx.shop(),
        order_ids,
        "Deadline passed while in review: queued again to read the order's state at the marketplace.",
    )
    .await
    .map_err(RunError::database("queuing orders past their deadline"))?;
    tracing::warn!(
        orders = requeued,
        "orders still in review past their deadline are read again; the marketplace has likely refused them"
    );
    Ok(())
}

async fn decide(
    ctx: &Context,
    order: &InReviewOrder,
    action: ReviewAction,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let decision = Decision {
        shop: order.shop.clone(),
        order_id: order.order_id.clone(),
        action,
        lines: None,
        note: Some(format!(
            "still in review, and {}; rules.on_deadline = {}",
            deadline_phrase(order, now, ctx.settings.marketplace.acceptance_window),
            action.as_str()
        )),
        decided_by: DEADLINE_POLICY.to_string(),
    };
    match crate::review::queue_decision(&ctx.pool, &decision).await {
        Ok(queued) => {
            tracing::warn!(
                order_id = %order.order_id,
                review_id = queued.decision.review_id,
                action = action.as_str(),
                deadline = %order.deadline,
                "deadline policy decided an order left in review"
            );
            Ok(())
        }
        Err(ReviewError::Database { error, .. }) => Err(RunError::Database {
            doing: "queuing a deadline decision",
            source: error,
        }),
        // A person decided, or another run's policy did, since the list was read.
        Err(other) => {
            tracing::info!(order_id = %order.order_id, reason = %other, "deadline policy left the order as it is");
            Ok(())
        }
    }
}

async fn flag_for_a_person(
    ctx: &Context,
    order: &InReviewOrder,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let order_id = &order.order_id;
    let shop = crate::review::shop_flag(&order.shop);
    let details = format!(
        "Order {order_id}{shop} is still in review and {}. Decide it now: `order-acceptance review accept {order_id}{shop}` or `order-acceptance review refuse {order_id}{shop} --note TEXT` (see `order-acceptance review list`). rules.on_deadline = review leaves it to a person; accept or refuse lets the worker decide.",
        deadline_phrase(order, now, ctx.settings.marketplace.acceptance_window)
    );
    let payload = json!({
        "stage": DEADLINE_STAGE,
        "deadline": order.deadline,
        "on_deadline": "review",
    });
    let recorded = failures::record_once_per_stage(
        &ctx.pool,
        ctx.shop(),
        Some(order_id),
        DEADLINE_STAGE,
        &details,
        &payload,
    )
    .await
    .map_err(RunError::database("recording a deadline failure"))?;
    tracing::warn!(order_id = %order_id, deadline = %order.deadline, new_failure = recorded, "an order in review is close to the marketplace's deadline");
    Ok(())
}

/// Where the order stands against its deadline, for people.
fn deadline_phrase(
    order: &InReviewOrder,
    now: DateTime<Utc>,
    window: std::time::Duration,
) -> String {
    let at = order.deadline.format("%Y-%m-%d %H:%M:%S UTC");
    match (order.deadline - now).to_std() {
        Ok(left) => format!(
            "the marketplace refuses it at {at}, {} after its creation ({} left)",
            crate::config::window_text(window),
            humantime::format_duration(std::time::Duration::from_secs(left.as_secs()))
        ),
        Err(_) => format!(
            "its deadline passed at {at}: the marketplace has likely refused it already, which the run carrying out a decision records"
        ),
    }
}
