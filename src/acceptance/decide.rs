//! Decide: for each batch of claimed orders still waiting, which lines to accept, refuse or leave
//! to a person, before any OR21.
//!
//! With `rules.enabled = false` and no person's decision pending, every line is accepted and the
//! database is asked nothing more than whether a decision is pending. Otherwise one short
//! transaction per batch (never across an HTTP call):
//!
//! 1. lock the batch's SKUs (advisory locks in ascending key order: deadlock-free between
//!    replicas, and valid whether the stock relation is a table or a view);
//! 2. read their stock rows and the units other orders' open reservations hold;
//! 3. decide each line: a pending review decision says what the person chose; otherwise the
//!    rules below, line by line, the most cautious action winning;
//! 4. reserve stock for the accepted lines of orders going to OR21 (an open reservation of the
//!    same line, left by a claim that died before OR21, is kept instead of taking more);
//! 5. write one `acceptance_decisions` row per line saying why.
//!
//! Any line in review puts the whole order in review: no OR21, outcome `in_review`.

use std::collections::HashMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::outcome::{Outcome, OutcomeSender, report};
use super::preflight::ToAccept;
use super::{Context, RunError};

use crate::config::RulesSettings;
use crate::db::OrderKey;
use crate::db::decisions::{self, LineDecisionRecord};
use crate::db::queue::Claim;
use crate::db::review::{self, ReviewDecision};
use crate::db::stock::{self, Reservation, StockColumns, StockRow};
use crate::marketplace::{LineDecision, OrderLine, OrderTerms, TaxMode};
use crate::rules::RuleAction;

/// An order ready for OR21: each line accepted or refused.
#[derive(Debug)]
pub struct Decided {
    pub claim: Claim,
    pub lines: Vec<LineDecision>,
    /// An earlier attempt's OR21 was answered 204: confirm, do not send again.
    pub accepted_before: bool,
}

/// What the decide stage keeps for the length of a run.
pub struct Decider {
    /// Set when rules are on: the optional columns of the stock relation.
    stock_columns: Option<StockColumns>,
}

impl Decider {
    /// With rules on, checks the stock relation once for the run and warns once about the rows
    /// the rules ignore.
    pub async fn for_run(ctx: &Context) -> Result<Self, RunError> {
        let rules = &ctx.settings.rules;
        if !rules.enabled {
            return Ok(Self {
                stock_columns: None,
            });
        }
        let columns = stock::inspect_stock_relation(&ctx.pool, &rules.stock_relation)
            .await
            .map_err(RunError::StockRelation)?;
        let unusable = stock::count_unusable_rows(&ctx.pool, &rules.stock_relation)
            .await
            .map_err(RunError::database("reading the stock relation"))?;
        if unusable > 0 {
            tracing::warn!(
                relation = %rules.stock_relation,
                rows = unusable,
                "stock rows with a NULL sku or a NULL or negative available are ignored: lines of their SKU count as unknown. Fix the rows (or the view) in the stock relation"
            );
        }
        Ok(Self {
            stock_columns: Some(columns),
        })
    }

    /// Decides a batch; orders in review go straight to the record stage.
    pub async fn decide(
        &self,
        ctx: &Context,
        orders: Vec<ToAccept>,
        outcomes: &OutcomeSender,
    ) -> Result<Vec<Decided>, RunError> {
        // An order whose OR21 was already answered 204 has had its decisions made and sent.
        let (confirm_only, to_decide): (Vec<ToAccept>, Vec<ToAccept>) =
            orders.into_iter().partition(|order| order.accepted_before);
        let mut decided: Vec<Decided> = confirm_only.into_iter().map(accept_every_line).collect();

        let keys: Vec<OrderKey> = to_decide
            .iter()
            .map(|o| OrderKey {
                shop: ctx.shop().to_string(),
                order_id: o.claim.order_id.clone(),
            })
            .collect();
        let mut reviews: HashMap<String, ReviewDecision> = review::open_decisions(&ctx.pool, &keys)
            .await
            .map_err(RunError::database("reading pending review decisions"))?
            .into_iter()
            .map(|review| (review.order_id.clone(), review))
            .collect();
        let mut by_person = Vec::with_capacity(reviews.len());
        let mut by_rules = Vec::with_capacity(to_decide.len());
        for order in to_decide {
            match reviews.remove(&order.claim.order_id) {
                Some(review) => by_person.push((order, review)),
                None => by_rules.push(order),
            }
        }
        // Rules off: the orders no person decided are accepted as before, outside any transaction.
        if self.stock_columns.is_none() {
            decided.extend(by_rules.drain(..).map(accept_every_line));
        }
        if by_person.is_empty() && by_rules.is_empty() {
            return Ok(decided);
        }
        let plans = self
            .decide_in_one_transaction(ctx, by_person, by_rules)
            .await
            .map_err(RunError::database("deciding order lines"))?;
        for plan in plans {
            match plan {
                Plan::Send(order) => decided.push(order),
                Plan::Review(outcome) => report(outcomes, outcome),
            }
        }
        Ok(decided)
    }

    async fn decide_in_one_transaction(
        &self,
        ctx: &Context,
        by_person: Vec<(ToAccept, ReviewDecision)>,
        by_rules: Vec<ToAccept>,
    ) -> Result<Vec<Plan>, sqlx::Error> {
        let rules = &ctx.settings.rules;
        let all = || {
            by_person
                .iter()
                .map(|(order, _)| order)
                .chain(by_rules.iter())
        };
        let mut line_skus: Vec<&str> = all()
            .flat_map(|order| order.terms.lines.iter())
            .flat_map(|line| [line.offer_sku.as_deref(), line.product_sku.as_deref()])
            .flatten()
            .collect();
        line_skus.sort_unstable();
        line_skus.dedup();
        let ids: Vec<&str> = all().map(|o| o.claim.order_id.as_str()).collect();

        let mut tx = ctx.pool.begin().await?;
        // The stock is every shop's: its SKUs are what is locked, read and reserved, so two
        // marketplaces asking for the last unit queue on the same lock.
        let mapped = match self.stock_columns {
            Some(_) => stock::mapped_skus(&mut tx, ctx.shop(), &line_skus).await?,
            None => HashMap::new(),
        };
        let mut skus: Vec<&str> = line_skus
            .iter()
            .map(|sku| mapped.get(*sku).map_or(*sku, String::as_str))
            .collect();
        skus.sort_unstable();
        skus.dedup();
        stock::lock_skus(&mut tx, &skus).await?;
        let mut shelf = match self.stock_columns {
            Some(columns) => Shelf {
                rows: stock::stock_of(&mut tx, &rules.stock_relation, columns, &skus).await?,
                reserved: stock::reserved_units(
                    &mut tx,
                    ctx.shop(),
                    &skus,
                    &ids,
                    rules.reservation_ttl,
                )
                .await?,
                mapped,
                taken: HashMap::new(),
                counted: true,
            },
            None => Shelf::default(),
        };

        let mut plans = Vec::with_capacity(ids.len());
        let mut writes = Writes::default();
        for (order, review) in by_person {
            let lines = as_the_person_decided(&order.terms, &review, &shelf);
            plans.push(writes.plan(order, lines, &review.decided_by, &mut shelf));
        }
        for order in by_rules {
            let lines = by_the_rules(&order.terms, rules, &shelf);
            plans.push(writes.plan(order, lines, "rules", &mut shelf));
        }
        stock::reserve(&mut tx, ctx.shop(), &writes.reservations()).await?;
        stock::release_lines(&mut tx, ctx.shop(), &writes.releases()).await?;
        decisions::insert_line_decisions(&mut tx, ctx.shop(), &writes.records).await?;
        tx.commit().await?;
        Ok(plans)
    }
}

fn accept_every_line(order: ToAccept) -> Decided {
    Decided {
        lines: order
            .terms
            .lines
            .iter()
            .map(|line| LineDecision::accept(&line.order_line_id))
            .collect(),
        claim: order.claim,
        accepted_before: order.accepted_before,
    }
}

enum Plan {
    Send(Decided),
    Review(Outcome),
}

/// The stock of the batch's SKUs as this transaction sees it.
#[derive(Default)]
struct Shelf {
    rows: HashMap<String, StockRow>,
    /// Units held by other orders' open reservations, in every shop.
    reserved: HashMap<String, i64>,
    /// The shop's `offer_sku_map`: a line SKU with a row here is that stock SKU, and only that.
    mapped: HashMap<String, String>,
    /// Units promised to lines decided earlier in this batch.
    taken: HashMap<String, i64>,
    /// False with rules off: nothing was read, so nothing is known about the stock.
    counted: bool,
}

impl Shelf {
    /// The line's SKU: the stock SKU its shop maps its offer_sku (else product_sku) to, when it
    /// maps one; else its offer_sku when the stock relation knows it, else its product_sku when
    /// that is known, else (unknown) the offer_sku, or the product_sku if it has none.
    fn sku_of<'a>(&'a self, line: &'a OrderLine) -> Option<&'a str> {
        let offer = line.offer_sku.as_deref();
        let product = line.product_sku.as_deref();
        if let Some(from) = self.mapped_from(line) {
            return self.mapped.get(from).map(String::as_str);
        }
        [offer, product]
            .into_iter()
            .flatten()
            .find(|sku| self.rows.contains_key(*sku))
            .or(offer)
            .or(product)
    }

    /// The line SKU the shop's `offer_sku_map` translated, when it did.
    fn mapped_from<'a>(&self, line: &'a OrderLine) -> Option<&'a str> {
        [line.offer_sku.as_deref(), line.product_sku.as_deref()]
            .into_iter()
            .flatten()
            .find(|sku| self.mapped.contains_key(*sku))
    }

    fn reserved(&self, sku: &str) -> i64 {
        self.reserved.get(sku).copied().unwrap_or(0) + self.taken.get(sku).copied().unwrap_or(0)
    }
}

/// One line's decision and why.
#[derive(Debug, Clone, PartialEq)]
struct Judgement {
    order_line_id: String,
    action: RuleAction,
    rule: &'static str,
    sku: Option<String>,
    quantity: Option<u32>,
    available: Option<i64>,
    reserved: Option<i64>,
    unit_price: Option<Decimal>,
    floor_price: Option<Decimal>,
    reason: String,
}

/// A review decision: `accept` accepts the lines it names (all when none) and refuses the
/// others; `refuse` the other way round. Accepted lines reserve stock even beyond what is
/// available: the person overrides the count.
fn as_the_person_decided(
    terms: &OrderTerms,
    review: &ReviewDecision,
    shelf: &Shelf,
) -> Vec<Judgement> {
    let names = |line: &OrderLine| {
        review
            .lines
            .as_ref()
            .is_none_or(|lines| lines.contains(&line.order_line_id))
    };
    let note = review
        .note
        .as_deref()
        .map_or(String::new(), |note| format!(": {note}"));
    terms
        .lines
        .iter()
        .map(|line| {
            let accepted = names(line) == (review.action == "accept");
            let sku = shelf.sku_of(line);
            let (verb, action) = match accepted {
                true => ("accepted", RuleAction::Accept),
                false => ("refused", RuleAction::Refuse),
            };
            Judgement {
                order_line_id: line.order_line_id.clone(),
                action,
                rule: "review_decision",
                sku: sku.map(str::to_owned),
                quantity: line.quantity,
                available: sku
                    .and_then(|sku| shelf.rows.get(sku))
                    .map(|row| row.available),
                reserved: sku.filter(|_| shelf.counted).map(|sku| shelf.reserved(sku)),
                unit_price: None,
                floor_price: None,
                reason: format!(
                    "Line {} {verb} by {} in review (review #{}){note}.",
                    line.order_line_id, review.decided_by, review.review_id
                ),
            }
        })
        .collect()
}

/// Every line against the rules, as if the order were accepted whole: the stock a line takes is
/// counted for the lines after it in the same order.
fn by_the_rules(terms: &OrderTerms, rules: &RulesSettings, shelf: &Shelf) -> Vec<Judgement> {
    let total = order_total(terms);
    let mut taken_here: HashMap<&str, i64> = HashMap::new();
    terms
        .lines
        .iter()
        .map(|line| {
            let judgement =
                judge_line(line, terms.order_tax_mode, total, rules, shelf, &taken_here);
            if judgement.action == RuleAction::Accept
                && let (Some(sku), Some(quantity)) = (shelf.sku_of(line), line.quantity)
            {
                *taken_here.entry(sku).or_default() += i64::from(quantity);
            }
            judgement
        })
        .collect()
}

fn judge_line(
    line: &OrderLine,
    tax_mode: Option<TaxMode>,
    order_total: Option<Decimal>,
    rules: &RulesSettings,
    shelf: &Shelf,
    taken_here: &HashMap<&str, i64>,
) -> Judgement {
    let id = &line.order_line_id;
    let sku = shelf.sku_of(line);
    let row = sku.and_then(|sku| shelf.rows.get(sku));
    let reserved = sku.map(|sku| shelf.reserved(sku) + taken_here.get(sku).copied().unwrap_or(0));
    let paid = paid_with_taxes(line, tax_mode);
    let unit_price = paid.map(|paid| paid.per_unit());
    let floor_price = row
        .and_then(|row| row.min_price)
        .map(|min| min.saturating_mul(Decimal::ONE - rules.max_price_drop));
    let judgement = |action, rule, reason| Judgement {
        order_line_id: id.clone(),
        action,
        rule,
        sku: sku.map(str::to_owned),
        quantity: line.quantity,
        available: row.map(|row| row.available),
        reserved,
        unit_price,
        floor_price,
        reason,
    };
    let relation = &rules.stock_relation;
    let sku_text = match shelf.mapped_from(line) {
        Some(offer) => format!(
            "{} (offer SKU {offer}, mapped by offer_sku_map)",
            sku.unwrap_or("(none)")
        ),
        None => sku.unwrap_or("(none)").to_string(),
    };

    let mut candidates = Vec::new();
    if let (Some(limit), Some(total)) = (rules.max_order_total, order_total)
        && total > limit
    {
        candidates.push(judgement(
            rules.order_total_above_limit,
            "order_total_above_limit",
            format!(
                "Line {id}: the order total {} is above rules.max_order_total {}.",
                money(total),
                money(limit)
            ),
        ));
    }
    let Some(quantity) = line.quantity.filter(|quantity| *quantity > 0) else {
        let unreadable = judgement(
            RuleAction::Review,
            "unreadable_line",
            format!("Line {id}: OR11 gives no quantity (or zero), so no rule can judge it."),
        );
        return most_cautious(candidates, unreadable);
    };
    let Some(row) = row else {
        let unknown = judgement(
            rules.unknown_sku,
            "unknown_sku",
            format!("Line {id}: SKU {sku_text} is not in {relation} (or its row is unusable)."),
        );
        return most_cautious(candidates, unknown);
    };
    if let Some(floor) = floor_price {
        match (paid, unit_price) {
            (Some(paid), Some(price)) if paid.is_below(floor) => candidates.push(judgement(
                rules.price_below_floor,
                "price_below_floor",
                format!(
                    "Line {id}: unit price {} (tax included) is below the floor {} for SKU {sku_text}.",
                    money(price),
                    money(floor)
                ),
            )),
            (Some(_), _) => {}
            _ => candidates.push(judgement(
                RuleAction::Review,
                "unreadable_line",
                format!(
                    "Line {id}: OR11 gives no price to hold against the floor {}.",
                    money(floor)
                ),
            )),
        }
    }
    let reserved = reserved.unwrap_or(0);
    // Backorders can reserve past the stock; what is left to promise never reads below zero.
    let free = (row.available - reserved).max(0);
    let (action, rule, reason) = if free >= i64::from(quantity) {
        (
            RuleAction::Accept,
            "in_stock",
            format!(
                "Line {id}: {quantity} of SKU {sku_text} in stock ({} available, {reserved} reserved).",
                row.available
            ),
        )
    } else if row.backorder {
        (
            rules.backorder,
            "backorder",
            format!(
                "Line {id}: {quantity} of SKU {sku_text} wanted, {free} free ({} available, {reserved} reserved); backorder allowed.",
                row.available
            ),
        )
    } else {
        (
            rules.insufficient_stock,
            "insufficient_stock",
            format!(
                "Line {id}: {quantity} of SKU {sku_text} wanted, {free} free ({} available, {reserved} reserved).",
                row.available
            ),
        )
    };
    most_cautious(candidates, judgement(action, rule, reason))
}

/// Review before refuse before accept; the first rule checked wins a tie.
fn most_cautious(earlier: Vec<Judgement>, last: Judgement) -> Judgement {
    let weight = |action: RuleAction| match action {
        RuleAction::Review => 2,
        RuleAction::Refuse => 1,
        RuleAction::Accept => 0,
    };
    earlier.into_iter().rev().fold(last, |best, candidate| {
        match weight(candidate.action) >= weight(best.action) {
            true => candidate,
            false => best,
        }
    })
}

/// What the customer pays for a line, tax included, and for how many units: the floor is held
/// against it without dividing, so the comparison is exact. Sums past what a decimal holds stay
/// at the largest decimal, which is above any floor and any limit: the cautious side.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Paid {
    amount: Decimal,
    quantity: Decimal,
}

impl Paid {
    /// Below a per-unit floor: `amount < floor × quantity`, exact for any price and quantity.
    fn is_below(self, floor: Decimal) -> bool {
        self.amount < floor.saturating_mul(self.quantity)
    }

    /// The unit price shown to people and stored with the decision: 4 decimals, rounded half
    /// away from zero as PostgreSQL's `round` does.
    fn per_unit(self) -> Decimal {
        stored(
            self.amount
                .checked_div(self.quantity)
                .unwrap_or(Decimal::MAX),
        )
    }
}

/// An amount as `acceptance_decisions` keeps it: 4 decimals, as it always has.
fn stored(amount: Decimal) -> Decimal {
    let mut amount = amount.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    amount.rescale(4);
    amount
}

/// An amount in a reason people read: 2 decimals, rounded half away from zero.
fn money(amount: Decimal) -> String {
    let rounded = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    format!("{rounded:.2}")
}

/// The line's `price` (after promotions), else `price_unit` × quantity; the floor is
/// tax-included, so a TAX_EXCLUDED line gets its taxes added (missing taxes count as none).
/// `None` when OR11 gives no quantity or price.
fn paid_with_taxes(line: &OrderLine, tax_mode: Option<TaxMode>) -> Option<Paid> {
    let quantity = Decimal::from(line.quantity.filter(|q| *q > 0)?);
    let price = match line.price {
        Some(price) => price,
        None => line.price_unit?.saturating_mul(quantity),
    };
    let amount = match tax_mode {
        Some(TaxMode::TaxExcluded) => price.saturating_add(line.taxes.unwrap_or_default()),
        _ => price,
    };
    Some(Paid { amount, quantity })
}

/// Lines and shipping, tax included: OR11's total, plus the line and shipping taxes when the
/// order is TAX_EXCLUDED. `None` when no total is given and a line has no price.
fn order_total(terms: &OrderTerms) -> Option<Decimal> {
    let before_taxes = match terms.total_price {
        Some(total) => total,
        None => terms
            .lines
            .iter()
            .try_fold(terms.shipping_price.unwrap_or_default(), |sum, line| {
                Some(sum.saturating_add(line.total_price.or(line.price)?))
            })?,
    };
    Some(match terms.order_tax_mode {
        Some(TaxMode::TaxExcluded) => terms.lines.iter().fold(before_taxes, |sum, line| {
            sum.saturating_add(line.taxes.unwrap_or_default())
                .saturating_add(line.shipping_taxes.unwrap_or_default())
        }),
        _ => before_taxes,
    })
}

/// What the transaction writes, gathered while the batch is decided.
#[derive(Default)]
struct Writes {
    /// (order, line, sku, quantity) of accepted lines of orders going to OR21.
    reserve: Vec<(String, String, String, i32)>,
    /// (order, line, reason) of lines whose earlier reservation, if any, goes back.
    release: Vec<(String, String, &'static str)>,
    records: Vec<LineDecisionRecord>,
}

impl Writes {
    /// Turns an order's line judgements into its plan, and notes what to write for it.
    fn plan(
        &mut self,
        order: ToAccept,
        judgements: Vec<Judgement>,
        decided_by: &str,
        shelf: &mut Shelf,
    ) -> Plan {
        let id = order.claim.order_id.clone();
        let in_review = judgements.iter().any(|j| j.action == RuleAction::Review);
        for j in &judgements {
            let keeps_stock = j.action == RuleAction::Accept && !in_review;
            match (keeps_stock, &j.sku, j.quantity.filter(|q| *q > 0)) {
                (true, Some(sku), Some(quantity)) => {
                    *shelf.taken.entry(sku.clone()).or_default() += i64::from(quantity);
                    self.reserve.push((
                        id.clone(),
                        j.order_line_id.clone(),
                        sku.clone(),
                        i32::try_from(quantity).unwrap_or(i32::MAX),
                    ));
                }
                (true, ..) => {}
                (false, ..) => {
                    let reason = if in_review { "in_review" } else { "refused" };
                    self.release
                        .push((id.clone(), j.order_line_id.clone(), reason));
                }
            }
            self.records.push(LineDecisionRecord {
                order_id: id.clone(),
                order_line_id: j.order_line_id.clone(),
                attempt: order.claim.attempt,
                action: j.action.as_str(),
                rule: j.rule,
                sku: j.sku.clone(),
                quantity: j.quantity.and_then(|q| i32::try_from(q).ok()),
                available: j.available,
                reserved: j.reserved,
                unit_price: j.unit_price,
                floor_price: j.floor_price.map(stored),
                reason: j.reason.clone(),
                decided_by: decided_by.to_string(),
            });
        }
        if in_review {
            return Plan::Review(in_review_outcome(order.claim, &judgements));
        }
        Plan::Send(Decided {
            claim: order.claim,
            lines: judgements
                .iter()
                .map(|j| LineDecision {
                    order_line_id: j.order_line_id.clone(),
                    accepted: j.action == RuleAction::Accept,
                })
                .collect(),
            accepted_before: false,
        })
    }

    fn reservations(&self) -> Vec<Reservation<'_>> {
        self.reserve
            .iter()
            .map(|(order, line, sku, quantity)| Reservation {
                order_id: order,
                order_line_id: line,
                sku,
                quantity: *quantity,
            })
            .collect()
    }

    fn releases(&self) -> Vec<(&str, &str, &str)> {
        self.release
            .iter()
            .map(|(order, line, reason)| (order.as_str(), line.as_str(), *reason))
            .collect()
    }
}

/// The note names each line a person must look at and why.
fn in_review_outcome(claim: Claim, judgements: &[Judgement]) -> Outcome {
    let why: Vec<&str> = judgements
        .iter()
        .filter(|j| j.action == RuleAction::Review)
        .map(|j| j.reason.as_str())
        .collect();
    let note = format!(
        "In review: a person must decide (`order-acceptance review list`). {}",
        why.join(" ")
    );
    let lines: Value = judgements
        .iter()
        .map(|j| {
            json!({
                "order_line_id": j.order_line_id,
                "offer_sku": j.sku,
                "quantity": j.quantity,
                "state": "WAITING_ACCEPTANCE",
                "accepted": null,
                "action": j.action.as_str(),
                "rule": j.rule,
            })
        })
        .collect();
    Outcome::in_review(claim, note, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Needs, Settings};
    use crate::marketplace::OrderState;
    use rust_decimal::dec;

    fn rules(overrides: &[(&str, &str)]) -> RulesSettings {
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
            ("ORDER_ACCEPTANCE__RULES__ENABLED", "true"),
        ]
        .iter()
        .chain(overrides)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Settings::load_from(None, Needs::DatabaseOnly, env)
            .expect("settings")
            .rules
    }

    fn line(id: &str, sku: &str, quantity: u32, price_unit: Decimal) -> OrderLine {
        OrderLine {
            order_line_id: id.into(),
            order_line_state: OrderState::WaitingAcceptance,
            offer_sku: Some(sku.into()),
            product_sku: None,
            quantity: Some(quantity),
            price_unit: Some(price_unit),
            price: Some(price_unit * Decimal::from(quantity)),
            shipping_price: Some(dec!(0.0)),
            total_price: Some(price_unit * Decimal::from(quantity)),
            taxes: None,
            shipping_taxes: None,
        }
    }

    fn terms(lines: Vec<OrderLine>) -> OrderTerms {
        OrderTerms {
            order_tax_mode: Some(TaxMode::TaxIncluded),
            shipping_price: Some(dec!(0.0)),
            total_price: None,
            lines,
        }
    }

    fn shelf(rows: &[(&str, i64, Option<Decimal>, bool)]) -> Shelf {
        Shelf {
            rows: rows
                .iter()
                .map(|(sku, available, min_price, backorder)| {
                    let row = StockRow {
                        available: *available,
                        min_price: *min_price,
                        backorder: *backorder,
                    };
                    (sku.to_string(), row)
                })
                .collect(),
            taken: HashMap::new(),
            counted: true,
            reserved: HashMap::new(),
            mapped: HashMap::new(),
        }
    }

    fn verdicts(judgements: &[Judgement]) -> Vec<(&str, &str)> {
        judgements
            .iter()
            .map(|j| (j.action.as_str(), j.rule))
            .collect()
    }

    #[test]
    fn each_rule_gives_its_default_action() {
        let rules = rules(&[]);
        let shelf = shelf(&[
            ("IN", 5, None, false),
            ("SHORT", 1, None, false),
            ("BACK", 0, None, true),
            ("FLOOR", 9, Some(dec!(100.0)), false),
        ]);
        let order = terms(vec![
            line("L1", "IN", 2, dec!(10.0)),
            line("L2", "NOWHERE", 1, dec!(10.0)),
            line("L3", "SHORT", 2, dec!(10.0)),
            line("L4", "BACK", 3, dec!(10.0)),
            line("L5", "FLOOR", 1, dec!(99.99)),
        ]);
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [
                ("accept", "in_stock"),
                ("review", "unknown_sku"),
                ("review", "insufficient_stock"),
                ("accept", "backorder"),
                ("review", "price_below_floor"),
            ]
        );
    }

    #[test]
    fn two_lines_of_one_sku_share_its_stock() {
        let rules = rules(&[("ORDER_ACCEPTANCE__RULES__INSUFFICIENT_STOCK", "refuse")]);
        let shelf = shelf(&[("A", 3, None, false)]);
        let order = terms(vec![
            line("L1", "A", 2, dec!(1.0)),
            line("L2", "A", 2, dec!(1.0)),
        ]);
        let judged = by_the_rules(&order, &rules, &shelf);
        assert_eq!(
            verdicts(&judged),
            [("accept", "in_stock"), ("refuse", "insufficient_stock")]
        );
        assert_eq!(judged[1].reserved, Some(2));
    }

    #[test]
    fn the_floor_is_tax_included_so_tax_excluded_prices_get_their_taxes() {
        let rules = rules(&[("ORDER_ACCEPTANCE__RULES__MAX_PRICE_DROP", "0.1")]);
        let shelf = shelf(&[("A", 9, Some(dec!(100.0)), false)]);
        // 85 before taxes, 10 of taxes per unit: 95 with taxes, above the floor of 90.
        let mut taxed = line("L1", "A", 2, dec!(85.0));
        taxed.taxes = Some(dec!(20.0));
        let mut order = terms(vec![taxed]);
        order.order_tax_mode = Some(TaxMode::TaxExcluded);
        let judged = by_the_rules(&order, &rules, &shelf);
        assert_eq!(verdicts(&judged), [("accept", "in_stock")]);
        assert_eq!(judged[0].unit_price, Some(dec!(95.0)));
        assert_eq!(judged[0].floor_price, Some(dec!(90.0)));

        order.order_tax_mode = Some(TaxMode::TaxIncluded);
        let judged = by_the_rules(&order, &rules, &shelf);
        assert_eq!(verdicts(&judged), [("review", "price_below_floor")]);
    }

    #[test]
    fn a_zero_quantity_line_goes_to_review_instead_of_reserving_nothing() {
        let rules = rules(&[]);
        let shelf = shelf(&[("A", 9, None, false)]);
        let order = terms(vec![line("L1", "A", 0, dec!(5.0))]);
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [("review", "unreadable_line")]
        );
    }

    #[test]
    fn the_floor_is_held_against_the_price_paid_after_promotions() {
        let rules = rules(&[]);
        let shelf = shelf(&[("A", 9, Some(dec!(100.0)), false)]);
        // Listed at 110 a unit, but a promotion brings the line of two down to 180.
        let mut promoted = line("L1", "A", 2, dec!(110.0));
        promoted.price = Some(dec!(180.0));
        let judged = by_the_rules(&terms(vec![promoted]), &rules, &shelf);
        assert_eq!(verdicts(&judged), [("review", "price_below_floor")]);
        assert_eq!(judged[0].unit_price, Some(dec!(90.0)));
    }

    #[test]
    fn an_order_above_the_limit_sends_every_line_to_its_action() {
        let rules = rules(&[("ORDER_ACCEPTANCE__RULES__MAX_ORDER_TOTAL", "100")]);
        let shelf = shelf(&[("A", 9, None, false)]);
        let order = terms(vec![
            line("L1", "A", 1, dec!(60.0)),
            line("L2", "A", 1, dec!(60.0)),
        ]);
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [
                ("review", "order_total_above_limit"),
                ("review", "order_total_above_limit")
            ]
        );
    }

    #[test]
    fn the_most_cautious_rule_wins_and_unreadable_lines_go_to_review() {
        let rules = rules(&[
            ("ORDER_ACCEPTANCE__RULES__UNKNOWN_SKU", "refuse"),
            ("ORDER_ACCEPTANCE__RULES__MAX_ORDER_TOTAL", "1"),
        ]);
        let shelf = shelf(&[]);
        let mut no_quantity = line("L2", "A", 1, dec!(5.0));
        no_quantity.quantity = None;
        let order = terms(vec![line("L1", "A", 1, dec!(5.0)), no_quantity]);
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [
                ("review", "order_total_above_limit"),
                ("review", "order_total_above_limit")
            ]
        );
        let rules = rules_without_limit();
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [("refuse", "unknown_sku"), ("review", "unreadable_line")]
        );
    }

    fn rules_without_limit() -> RulesSettings {
        rules(&[("ORDER_ACCEPTANCE__RULES__UNKNOWN_SKU", "refuse")])
    }

    #[test]
    fn lines_match_on_offer_sku_then_product_sku() {
        let shelf = shelf(&[("P-1", 1, None, false)]);
        let mut both = line("L1", "O-1", 1, dec!(1.0));
        both.product_sku = Some("P-1".into());
        assert_eq!(shelf.sku_of(&both), Some("P-1"));
        let only_offer = line("L2", "O-2", 1, dec!(1.0));
        assert_eq!(shelf.sku_of(&only_offer), Some("O-2"));
    }

    /// Amounts a float gets wrong: a floor of 399.995 against a price of exactly 399.995, and
    /// taxes of 0.10 + 0.20 on a total of 100.00 against a limit of 100.30.
    #[test]
    fn money_compares_exactly_where_floats_would_not() {
        let rules = rules(&[]);
        let shelf = shelf(&[("A", 9, Some(dec!(399.995)), false)]);
        let order = terms(vec![line("L1", "A", 1, dec!(399.995))]);
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [("accept", "in_stock")]
        );

        let shelf = self::shelf(&[("A", 9, None, false)]);
        let mut rules = rules_without_limit();
        rules.max_order_total = Some(dec!(100.30));
        let mut first = line("L1", "A", 1, dec!(60.00));
        first.taxes = Some(dec!(0.10));
        let mut second = line("L2", "A", 1, dec!(40.00));
        second.taxes = Some(dec!(0.20));
        let mut order = terms(vec![first, second]);
        order.order_tax_mode = Some(TaxMode::TaxExcluded);
        assert_eq!(order_total(&order), Some(dec!(100.30)));
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [("accept", "in_stock"), ("accept", "in_stock")]
        );
    }

    /// An amount past what a decimal holds reads as the largest one: the order is above any
    /// limit and its lines above any floor, never taken for an order without a total.
    #[test]
    fn amounts_past_what_a_decimal_holds_stay_huge_not_a_panic() {
        let mut huge = line("L1", "A", 3, Decimal::ONE);
        huge.price = Some(Decimal::MAX);
        huge.total_price = Some(Decimal::MAX);
        huge.taxes = Some(Decimal::MAX);
        let paid = paid_with_taxes(&huge, Some(TaxMode::TaxExcluded));
        assert_eq!(paid.map(|paid| paid.amount), Some(Decimal::MAX));
        let mut order = terms(vec![huge.clone(), huge]);
        order.order_tax_mode = Some(TaxMode::TaxExcluded);
        assert_eq!(order_total(&order), Some(Decimal::MAX));

        let mut rules = rules_without_limit();
        rules.max_order_total = Some(dec!(1000));
        let shelf = shelf(&[("A", 9, Some(dec!(10)), false)]);
        assert_eq!(
            verdicts(&by_the_rules(&order, &rules, &shelf)),
            [
                ("review", "order_total_above_limit"),
                ("review", "order_total_above_limit")
            ]
        );
    }

    mod exact_money {
        use proptest::prelude::*;

        use super::*;

        /// Cents and hundredths as integers: the arithmetic the decimals must agree with.
        fn cents(amount: i64) -> Decimal {
            Decimal::new(amount, 2)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// The floor rule fires exactly when the price paid (taxes added for TAX_EXCLUDED)
            /// is below min_price × (1 − max_price_drop) per unit, counted in integers.
            #[test]
            fn the_floor_agrees_with_integer_arithmetic(
                price_cents in 0i64..100_000_000,
                tax_cents in 0i64..10_000_000,
                floor_cents in 0i64..1_000_000,
                drop_percent in 0i64..100,
                quantity in 1u32..50,
                tax_excluded in any::<bool>(),
            ) {
                let mut rules = rules_without_limit();
                rules.max_price_drop = Decimal::new(drop_percent, 2);
                let shelf = shelf(&[("A", 1_000, Some(cents(floor_cents)), false)]);
                let mut line = line("L1", "A", quantity, Decimal::ZERO);
                line.price = Some(cents(price_cents));
                line.taxes = Some(cents(tax_cents));
                let mut order = terms(vec![line]);
                if tax_excluded {
                    order.order_tax_mode = Some(TaxMode::TaxExcluded);
                }
                let paid = price_cents + if tax_excluded { tax_cents } else { 0 };
                // paid / q < floor × (100 − drop) / 100, with every side multiplied out.
                let below = i128::from(paid) * 100
                    < i128::from(floor_cents) * i128::from(100 - drop_percent) * i128::from(quantity);
                let judged = by_the_rules(&order, &rules, &shelf);
                let rule = if below { "price_below_floor" } else { "in_stock" };
                prop_assert_eq!(judged[0].rule, rule);
            }

            /// The order total with taxes split over any number of lines is the exact sum, and
            /// the limit rule fires exactly when it is above the limit.
            #[test]
            fn the_order_limit_agrees_with_integer_arithmetic(
                lines in prop::collection::vec((0i64..10_000_000, 0i64..1_000_000, 0i64..100_000), 1..8),
                shipping_cents in 0i64..100_000,
                limit_cents in 1i64..100_000_000,
            ) {
                let mut rules = rules_without_limit();
                rules.max_order_total = Some(cents(limit_cents));
                let shelf = shelf(&[("A", 1_000_000, None, false)]);
                let mut order = terms(
                    lines
                        .iter()
                        .enumerate()
                        .map(|(index, (price, taxes, shipping_taxes))| {
                            let mut line = line(&format!("L{index}"), "A", 1, cents(*price));
                            line.taxes = Some(cents(*taxes));
                            line.shipping_taxes = Some(cents(*shipping_taxes));
                            line
                        })
                        .collect(),
                );
                order.order_tax_mode = Some(TaxMode::TaxExcluded);
                order.shipping_price = Some(cents(shipping_cents));
                let total: i64 = shipping_cents
                    + lines.iter().map(|(p, t, s)| p + t + s).sum::<i64>();
                prop_assert_eq!(order_total(&order), Some(cents(total)));
                let judged = by_the_rules(&order, &rules, &shelf);
                let rule = if total > limit_cents { "order_total_above_limit" } else { "in_stock" };
                prop_assert!(judged.iter().all(|j| j.rule == rule), "{:?}", verdicts(&judged));
            }
        }
    }
}
