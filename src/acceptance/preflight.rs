//! Preflight: one OR11 read per 100 claimed orders before any OR21, so orders already decided
//! (accepted in the seller portal, refused, cancelled, or accepted by a run that died before
//! recording it) are recorded from their real state and never accepted twice.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::import::{FreshLines, stored_order};
use super::outcome::{Outcome, OutcomeSender, Reading, Retry, read, report};
use super::{Context, RunError};
use crate::db::api_calls;
use crate::db::queue::{self, Claim};
use crate::marketplace::{MarketplaceError, Order, OrderTerms, UnreadableOrder};

/// A claimed order still waiting for acceptance, with the lines OR21 must decide on.
#[derive(Debug)]
pub struct ToAccept {
    pub claim: Claim,
    pub terms: OrderTerms,
    /// An earlier attempt's OR21 was answered 204 (its run died before recording the outcome):
    /// the order only needs confirming, and OR21 is not sent again.
    pub accepted_before: bool,
}

pub struct Checked {
    pub to_accept: Vec<ToAccept>,
    /// The marketplace could not be read: the run stops claiming.
    pub marketplace_unreachable: bool,
}

pub async fn check(
    ctx: &Context,
    claims: Vec<Claim>,
    fresh: &FreshLines,
    outcomes: &OutcomeSender,
) -> Result<Checked, RunError> {
    let mut checked = Checked {
        to_accept: Vec::with_capacity(claims.len()),
        marketplace_unreachable: false,
    };
    let mut to_read = Vec::new();
    for claim in claims {
        // Only a first claim may trust the import's read: a later attempt means another run
        // held the order since, and may have accepted it before it died.
        match fresh.take(&claim.order_id).filter(|_| claim.attempt == 1) {
            Some(terms) => checked.to_accept.push(ToAccept {
                claim,
                terms,
                accepted_before: false,
            }),
            None => to_read.push(claim),
        }
    }
    if to_read.is_empty() {
        return Ok(checked);
    }

    let ids: Vec<String> = to_read.iter().map(|c| c.order_id.clone()).collect();
    match ctx.client.read_orders(&ids).await {
        Ok(read) => {
            let stored: Vec<_> = read.orders.iter().map(stored_order).collect();
            queue::refresh_orders(&ctx.pool, ctx.shop(), &stored)
                .await
                .map_err(RunError::database("refreshing stored orders"))?;
            let mut by_id: HashMap<String, Order> = read
                .orders
                .into_iter()
                .map(|o| (o.order_id.clone(), o))
                .collect();
            let mut unreadable: HashMap<String, UnreadableOrder> = read
                .unreadable
                .into_iter()
                .filter_map(|o| Some((o.order_id.clone()?, o)))
                .collect();
            let accepted_before = accepted_by_earlier_attempts(ctx, &to_read).await?;
            for claim in to_read {
                let accepted_before = accepted_before.contains(&claim.order_id);
                match by_id.remove(&claim.order_id) {
                    Some(order) => match decide(claim, order, accepted_before) {
                        Ok(ready) => checked.to_accept.push(ready),
                        Err(outcome) => report(outcomes, outcome),
                    },
                    None => match unreadable.remove(&claim.order_id) {
                        Some(order) => report(outcomes, unreadable_now(claim, order)),
                        None => report(outcomes, not_found(claim)),
                    },
                }
            }
        }
        Err(err @ MarketplaceError::Unauthorized { .. }) => {
            return Err(RunError::Unauthorized(err));
        }
        Err(err) => {
            checked.marketplace_unreachable = true;
            for claim in to_read {
                let details = format!(
                    "Order {} could not be read before accepting it: {err}. A later run tries again.",
                    claim.order_id
                );
                let payload = json!({"stage": "preflight", "error": err.to_string()});
                report(
                    outcomes,
                    Outcome::failed(claim, Retry::WhenDue, details, payload),
                );
            }
        }
    }
    Ok(checked)
}

/// Orders whose earlier attempt got a 204, by our own `api_calls`. Only retries can have one,
/// so first claims cost no query.
async fn accepted_by_earlier_attempts(
    ctx: &Context,
    claims: &[Claim],
) -> Result<HashSet<String>, RunError> {
    let retried: Vec<&str> = claims
        .iter()
        .filter(|c| c.attempt > 1)
        .map(|c| c.order_id.as_str())
        .collect();
    if retried.is_empty() {
        return Ok(HashSet::new());
    }
    let accepted = api_calls::orders_accepted_before(&ctx.pool, ctx.shop(), &retried)
        .await
        .map_err(RunError::database("looking up earlier acceptances"))?;
    Ok(accepted.into_iter().collect())
}

/// Accept it, or record what the marketplace already decided.
fn decide(claim: Claim, order: Order, accepted_before: bool) -> Result<ToAccept, Outcome> {
    let payload = || json!({"stage": "preflight", "order": order.raw});
    match read(&order) {
        Reading::Waiting => {
            if order.order_lines.is_empty() {
                let details = format!(
                    "Order {} is WAITING_ACCEPTANCE but the marketplace lists no order lines, so OR21 cannot decide on them. Accept or refuse it in the seller portal.",
                    claim.order_id
                );
                return Err(Outcome::failed(claim, Retry::Never, details, payload()));
            }
            Ok(ToAccept {
                claim,
                terms: order.terms(),
                accepted_before,
            })
        }
        Reading::Accepted => {
            let note = format!(
                "Already {} at the marketplace before this run sent OR21: accepted elsewhere (e.g. in the seller portal) or by a run that stopped before recording it.",
                order.order_state
            );
            Err(Outcome::accepted_as_read(claim, &order, note))
        }
        Reading::Refused(ending) => Err(Outcome::refused(claim, ending)),
        Reading::Cancelled(ending) => Err(Outcome::cancelled(claim, ending)),
        Reading::Undecidable => {
            let details = format!(
                "Order {} is {} at the marketplace: it can be neither accepted nor counted as accepted. A later run reads it again.",
                claim.order_id, order.order_state
            );
            Err(Outcome::failed(claim, Retry::WhenDue, details, payload()))
        }
    }
}

/// OR11 lists the order in a shape the worker cannot act on: nothing is sent, and a later run
/// reads it again (the marketplace may correct it) until the attempts are used up.
fn unreadable_now(claim: Claim, order: UnreadableOrder) -> Outcome {
    let details = format!(
        "Order {} cannot be read from the marketplace's answer ({}); nothing was sent for it. A later run reads it again; check it in the seller portal.",
        claim.order_id, order.reason
    );
    let payload = json!({"stage": "preflight", "error": order.reason, "order": order.raw});
    Outcome::failed(claim, Retry::WhenDue, details, payload)
}

fn not_found(claim: Claim) -> Outcome {
    let details = format!(
        "Order {} was not found at the marketplace (OR11 did not return it). Check that it belongs to this shop (marketplace.shop_id) and that the id is right, then resolve this failure.",
        claim.order_id
    );
    let payload = json!({"stage": "preflight", "order_id": claim.order_id});
    Outcome::failed(claim, Retry::Never, details, payload)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sqlx::PgPool;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::acceptance::outcome::Verdict;
    use crate::config::{Needs, Settings};
    use crate::marketplace::MarketplaceClient;
    use marketplace_sim::{OrderSpec, SimConfig, Simulator};

    /// The race window: this run imported the order, another run claimed it first, sent OR21 and
    /// died; its lease ran out and this run claims it now, as attempt 2. The import's read is
    /// stale, so preflight must read the order again and must not send it to OR21.
    #[sqlx::test]
    async fn a_later_claim_does_not_trust_this_runs_import(pool: PgPool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sim = Simulator::start(SimConfig::new("key"), listener)
            .await
            .expect("sim");
        sim.add_orders(vec![OrderSpec {
            order_id: Some("X-1".into()),
            state: Some("SHIPPING".into()),
            ..OrderSpec::default()
        }]);
        let env = [
            ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
            ("MARKETPLACE_URL", sim.url().as_str()),
            ("MARKETPLACE_API_KEY", "key"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = Settings::load_from(None, Needs::Everything, env).expect("settings");
        let client =
            MarketplaceClient::new(&settings.marketplace, &settings.api_calls, pool.clone())
                .expect("client");
        let ctx = Context::new(pool, client, Arc::new(settings));

        let fresh = FreshLines::default();
        let stale = Order::from_json(serde_json::json!({
            "order_id": "X-1", "order_state": "WAITING_ACCEPTANCE",
            "order_lines": [{"order_line_id": "X-1-1"}]
        }))
        .expect("order");
        fresh.insert("X-1".into(), stale.terms());
        let claim = Claim {
            order_id: "X-1".into(),
            attempt: 2,
        };
        let (outcomes, mut recorded) = mpsc::unbounded_channel();
        let checked = check(&ctx, vec![claim], &fresh, &outcomes)
            .await
            .expect("preflight");

        assert!(checked.to_accept.is_empty(), "{:?}", checked.to_accept);
        let outcome = recorded.try_recv().expect("an outcome");
        assert!(
            matches!(&outcome.verdict, Verdict::Accepted { note, .. } if note.starts_with("Already SHIPPING")),
            "{outcome:?}"
        );
        assert_eq!(sim.stats().requests.get("OR11"), Some(&1));
    }
}
