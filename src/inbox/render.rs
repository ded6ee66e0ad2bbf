//! Turns command results into text: tables for people, JSON for machines.
//!
//! Every value in a table is escaped for the terminal before the table is laid out (so widths
//! stay right), and every text returned is escaped again as a whole (see [`crate::terminal`]).
//! Tables fit [`terminal::TABLE_WIDTH`] columns unless [`Width::Wide`] is asked for.

use chrono::{DateTime, Utc};
use comfy_table::Table;
use serde::Serialize;

use super::{
    AgedOrder, FailureList, FailureReport, NearestDeadline, OrderReport, RetryOutcome, StatusReport,
};
use crate::acceptance;
use crate::acceptance::DecidedNow;
use crate::config::ShopName;
use crate::db::failures::{FailureSummary, Resolution};
use crate::db::review::{LineDecision, LineState, ReviewDecision};
use crate::db::runs::{Holder, LiveRun, RunRecord};
use crate::review::{Queued, ReviewList};
use crate::terminal::{self, Width};

/// Longest details text shown on one line of a list.
const DETAILS_WIDTH: usize = 80;
/// Longest note or reason shown in a table cell that fits the terminal.
const NOTE_WIDTH: usize = 60;

/// Adds rows whose cells are escaped for the terminal.
trait EscapedRows {
    fn add_cells(&mut self, cells: Vec<String>) -> &mut Self;
}

impl EscapedRows for Table {
    fn add_cells(&mut self, cells: Vec<String>) -> &mut Self {
        self.add_row(
            cells
                .iter()
                .map(|cell| terminal::escape_lines(cell).into_owned())
                .collect::<Vec<_>>(),
        )
    }
}

/// An order as people name it: its id, and its shop when the database knows several (`several`)
/// or the shop is not the default one (two marketplaces may use the same id; a one-shop
/// deployment reads as before).
fn order_name(shop: &str, order_id: &str, several: bool) -> String {
    match (shop, several) {
        (ShopName::DEFAULT, false) => order_id.to_string(),
        (shop, _) => format!("{order_id} (shop {shop})"),
    }
}

/// A whole text for people, escaped once more for what is not in a table.
fn finish(text: String) -> String {
    match terminal::escape_lines(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// A long free text (a note, a reason, details): its first line cut to `limit` characters when
/// the table must fit, all of it when wide.
fn long_text(text: Option<&str>, limit: usize, width: Width) -> String {
    match width {
        Width::Fit => one_line(text, limit),
        Width::Wide => text.unwrap_or("-").to_string(),
    }
}

/// Pretty JSON of any command result.
pub fn json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(value)
}

/// An age for people: the two largest units, e.g. `45s`, `3m 20s`, `2h 5m`, `1d 4h`.
/// A negative age (clocks apart) reads as `0s`.
pub fn humanise_age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|(size, _)| seconds >= *size) else {
        return "0s".to_string();
    };
    let mut parts = Vec::with_capacity(2);
    let mut rest = seconds;
    for (size, unit) in &units[first..(first + 2).min(units.len())] {
        let count = rest / size;
        rest %= size;
        if count > 0 {
            parts.push(format!("{count}{unit}"));
        }
    }
    parts.join(" ")
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The first line of `text`, cut to `width` characters.
fn one_line(text: Option<&str>, width: usize) -> String {
    let line = text.unwrap_or("").lines().next().unwrap_or("").trim();
    if line.chars().count() <= width {
        return line.to_string();
    }
    let cut: String = line.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

fn optional_number(value: Option<i32>) -> String {
    value.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// A stock count: the database caps counts at `i32::MAX`, which is no count a person can use
/// (a stock view's "unlimited" or a clamp), so it reads as unknown.
fn stock_count(value: Option<i32>) -> String {
    optional_number(value.filter(|n| *n != i32::MAX))
}

fn table(header: &[&str], width: Width) -> Table {
    let mut table = terminal::table(width);
    table.set_header(header.to_vec());
    table
}

/// A two-column table of labels and values.
fn fields(rows: Vec<(&str, String)>, width: Width) -> Table {
    let mut table = terminal::table(width);
    for (label, value) in rows {
        table.add_cells(vec![label.to_string(), value]);
    }
    table
}

/// `failures list`.
pub fn failure_list(list: &FailureList, width: Width) -> String {
    if list.failures.is_empty() {
        let which = if list.include_resolved { "" } else { "open " };
        return format!("No {which}failures match.");
    }
    // A shop column once there is more than the default shop to tell apart.
    let with_shop = list.several_shops;
    let mut header = vec!["ID", "ORDER", "PROCESS", "AGE", "ORDER STATUS"];
    if with_shop {
        header.insert(1, "SHOP");
    }
    if list.include_resolved {
        header.push("STATE");
    }
    header.push("DETAILS");
    let mut rows = table(&header, width);
    for listed in &list.failures {
        let mut row = failure_row(
            &listed.failure,
            listed.age_seconds,
            list.include_resolved,
            width,
        );
        if with_shop {
            row.insert(1, listed.failure.shop.clone());
        }
        rows.add_cells(row);
    }
    let count = list.failures.len();
    finish(format!("{rows}\n{count} failure(s), newest first."))
}

fn failure_row(
    failure: &FailureSummary,
    age_seconds: i64,
    with_state: bool,
    width: Width,
) -> Vec<String> {
    let mut row = vec![
        failure.failure_id.to_string(),
        or_dash(failure.related_id.as_deref()),
        failure.process_name.clone(),
        humanise_age(age_seconds),
        or_dash(failure.order_status.as_deref()),
    ];
    if with_state {
        let state = if failure.resolved_at.is_some() {
            "resolved"
        } else {
            "open"
        };
        row.push(state.to_string());
    }
    row.push(long_text(failure.details.as_deref(), DETAILS_WIDTH, width));
    row
}

/// `failures show`: the fields as a table, then the details and the payload in full.
pub fn failure(report: &FailureReport, width: Width) -> String {
    let failure = &report.failure;
    let order_status = match (&failure.order_status, failure.order_status_at) {
        (Some(status), Some(at)) => format!("{status} (since {})", timestamp(at)),
        _ => "- (no status history)".to_string(),
    };
    let resolution = match failure.resolved_at {
        Some(at) => format!(
            "resolved {} by {}: {}",
            timestamp(at),
            or_dash(failure.resolved_by.as_deref()),
            or_dash(failure.resolution_note.as_deref())
        ),
        None => "open".to_string(),
    };
    let summary = fields(
        vec![
            ("Failure", format!("#{}", failure.failure_id)),
            ("Process", failure.process_name.clone()),
            ("Order", or_dash(failure.related_id.as_deref())),
            (
                "Recorded",
                format!(
                    "{} ({} ago)",
                    timestamp(failure.recorded_at),
                    humanise_age(report.age_seconds)
                ),
            ),
            ("Order status", order_status),
            (
                "Retryable",
                if failure.retryable {
                    "yes: a later run retries the order by itself".to_string()
                } else {
                    "no: left to a person".to_string()
                },
            ),
            ("Resolution", resolution),
        ],
        width,
    );
    let payload = match &failure.payload {
        Some(value) => serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()),
        None => "(none)".to_string(),
    };
    finish(format!(
        "{summary}\n\nDetails:\n{}\n\nPayload:\n{payload}",
        failure.details.as_deref().unwrap_or("(none)")
    ))
}

/// `failures resolve`.
pub fn resolution(resolution: &Resolution) -> String {
    finish(resolution_text(resolution))
}

fn resolution_text(resolution: &Resolution) -> String {
    format!(
        "Failure #{} resolved at {} by {}: {}",
        resolution.failure_id,
        timestamp(resolution.resolved_at),
        or_dash(resolution.resolved_by.as_deref()),
        resolution.resolution_note
    )
}

/// `failures retry`.
pub fn retry(outcome: &RetryOutcome) -> String {
    finish(retry_text(outcome))
}

fn retry_text(outcome: &RetryOutcome) -> String {
    format!(
        "Order {} is back in the queue: history row #{} (pending_acceptance, was {}). The next run picks it up.\n{}",
        order_name(&outcome.shop, &outcome.order_id, false),
        outcome.history_id,
        outcome.previous_status,
        resolution(&outcome.resolution)
    )
}

/// `order`: current status, then the timeline, the failures and the API calls.
pub fn order(report: &OrderReport, width: Width) -> String {
    let order = &report.order;
    let mut out = format!(
        "Order {}: {}\nStored {}; placed {}\n",
        order_name(&order.shop, &order.order_id, report.several_shops),
        report
            .current_status
            .as_deref()
            .unwrap_or("no status history"),
        timestamp(order.created_at),
        order.placed_at.map_or_else(
            || match &order.created_date_problem {
                Some(problem) => format!("unknown ({problem}: the deadline counts from storage)"),
                None => "unknown".to_string(),
            },
            timestamp
        ),
    );
    if let Some(held_by) = &report.held_by {
        out.push_str(&format!("Last claimed by {}\n", holder(held_by)));
    }

    out.push_str("\nTimeline:\n");
    let mut timeline = table(&["TIME", "STATUS", "ATTEMPT", "NOTE"], width);
    for entry in &report.history {
        timeline.add_cells(vec![
            timestamp(entry.at),
            entry.status.clone(),
            optional_number(entry.attempt),
            long_text(entry.notes.as_deref(), NOTE_WIDTH, width),
        ]);
    }
    out.push_str(&section(
        timeline,
        report.history.is_empty(),
        "no history rows",
    ));

    out.push_str("\nLine decisions:\n");
    out.push_str(&section(
        line_decisions(&report.line_decisions, true, width),
        report.line_decisions.is_empty(),
        "none",
    ));

    out.push_str("\nReview decisions:\n");
    out.push_str(&section(
        review_decisions(&report.review_decisions, width),
        report.review_decisions.is_empty(),
        "none",
    ));

    if let Some(states) = &report.line_states {
        out.push_str("\nLine states (latest outcome):\n");
        out.push_str(&section(
            line_states(states, width),
            states.is_empty(),
            "none",
        ));
    }

    out.push_str("\nFailures:\n");
    let mut failures = table(&["ID", "TIME", "STATE", "DETAILS"], width);
    for failure in &report.failures {
        failures.add_cells(vec![
            failure.failure_id.to_string(),
            timestamp(failure.recorded_at),
            if failure.resolved_at.is_some() {
                "resolved".to_string()
            } else {
                "open".to_string()
            },
            long_text(failure.details.as_deref(), NOTE_WIDTH, width),
        ]);
    }
    out.push_str(&section(failures, report.failures.is_empty(), "none"));

    out.push_str("\nAPI calls:\n");
    let mut calls = table(
        &["TIME", "ENDPOINT", "STATUS", "DURATION", "ATTEMPT", "ERROR"],
        width,
    );
    for call in &report.api_calls {
        calls.add_cells(vec![
            timestamp(call.at),
            call.endpoint.clone(),
            call.status_code
                .map_or_else(|| "no response".to_string(), |code| code.to_string()),
            call.duration_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
            optional_number(call.attempt),
            long_text(call.error.as_deref(), NOTE_WIDTH, width),
        ]);
    }
    out.push_str(&section(calls, report.api_calls.is_empty(), "none"));
    finish(out)
}

/// `acceptance_decisions` rows; `with_time` adds when and by whom (the `order` view).
fn line_decisions(decisions: &[LineDecision], with_time: bool, width: Width) -> Table {
    let mut header = vec![
        "LINE",
        "SKU",
        "QTY",
        "ACTION",
        "RULE",
        "AVAILABLE",
        "RESERVED",
        "PRICE",
        "FLOOR",
        "REASON",
    ];
    if with_time {
        header.extend(["BY", "TIME"]);
    }
    let mut rows = table(&header, width);
    for decision in decisions {
        let mut row = vec![
            decision.order_line_id.clone(),
            or_dash(decision.sku.as_deref()),
            optional_number(decision.quantity),
            decision.action.clone(),
            decision.rule.clone(),
            stock_count(decision.available),
            stock_count(decision.reserved),
            or_dash(decision.unit_price.as_deref()),
            or_dash(decision.floor_price.as_deref()),
            long_text(Some(&decision.reason), NOTE_WIDTH, width),
        ];
        if with_time {
            row.extend([decision.decided_by.clone(), timestamp(decision.decided_at)]);
        }
        rows.add_cells(row);
    }
    rows
}

fn review_decisions(decisions: &[ReviewDecision], width: Width) -> Table {
    let mut rows = table(
        &["ID", "TIME", "BY", "ACTION", "LINES", "NOTE", "CARRIED OUT"],
        width,
    );
    for decision in decisions {
        rows.add_cells(vec![
            format!("#{}", decision.review_id),
            timestamp(decision.decided_at),
            decision.decided_by.clone(),
            decision.action.clone(),
            decided_lines(decision.lines.as_deref()),
            long_text(decision.note.as_deref(), NOTE_WIDTH, width),
            carried_out(decision),
        ]);
    }
    rows
}

fn decided_lines(lines: Option<&[String]>) -> String {
    lines.map_or_else(|| "all".to_string(), |lines| lines.join(", "))
}

fn carried_out(decision: &ReviewDecision) -> String {
    match decision.carried_out_at {
        Some(at) => format!(
            "{} ({})",
            timestamp(at),
            or_dash(decision.outcome.as_deref())
        ),
        None => "waiting for the next run".to_string(),
    }
}

fn line_states(states: &[LineState], width: Width) -> Table {
    let mut rows = table(&["LINE", "SKU", "QTY", "STATE", "ACCEPTED"], width);
    for line in states {
        rows.add_cells(vec![
            or_dash(line.order_line_id.as_deref()),
            or_dash(line.offer_sku.as_deref()),
            line.quantity
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            or_dash(line.state.as_deref()),
            line.accepted.map_or_else(
                || "-".to_string(),
                |accepted| if accepted { "yes" } else { "no" }.to_string(),
            ),
        ]);
    }
    rows
}

fn section(table: Table, empty: bool, empty_text: &str) -> String {
    if empty {
        format!("  ({empty_text})\n")
    } else {
        format!("{table}\n")
    }
}

/// `status`.
pub fn status(report: &StatusReport, width: Width) -> String {
    finish(status_text(report, width))
}

fn status_text(report: &StatusReport, width: Width) -> String {
    let mut counts = table(&["STATUS", "ORDERS"], width);
    for count in &report.statuses {
        counts.add_cells(vec![count.status.clone(), count.orders.to_string()]);
    }
    let pending = &report.pending;
    let of_shop = report
        .shop
        .as_ref()
        .map_or_else(String::new, |shop| format!(" of shop {shop}"));
    let mut out = format!(
        "Status{of_shop} at {}\n\nOrders by current status:\n{}",
        timestamp(report.generated_at),
        section(counts, report.statuses.is_empty(), "no orders")
    );
    out.push_str(&format!(
        "\nPending (still to be decided): {}, of which in review (a person decides): {}\n",
        pending.total, pending.in_review
    ));
    if let Some(oldest) = &pending.oldest {
        out.push_str(&format!(
            "Oldest pending: {}\n",
            aged(oldest, report.several_shops)
        ));
    }
    if let Some(nearest) = &pending.nearest_deadline {
        out.push_str(&format!(
            "Nearest deadline: {}\n",
            deadline(nearest, report.several_shops)
        ));
    }
    if pending.in_review > 0 {
        out.push_str("  (decide the orders in review: `order-acceptance review list`)\n");
    }
    out.push_str(&format!(
        "Pending longer than {}: {} ({})\n",
        humanise_age(i64::try_from(pending.alert_after_seconds).unwrap_or(i64::MAX)),
        pending.too_long_count,
        pending.deadline_note
    ));
    for order in &pending.too_long {
        out.push_str(&format!("  - {}\n", aged(order, report.several_shops)));
    }
    if pending.too_long_count > pending.too_long.len() as i64 {
        out.push_str("  (the rest: SELECT * FROM orders_pending_too_long)\n");
    }
    out.push_str(&format!(
        "\nOpen failures: {} (see `order-acceptance failures list`)\n",
        report.open_failures
    ));
    out.push_str(&format!(
        "\nLive runs (heartbeat within their lease): {}\n",
        report.live_runs.len()
    ));
    for run in &report.live_runs {
        out.push_str(&format!("  - {}\n", live_run(run, report.generated_at)));
    }
    match report.last_run_per_shop.as_slice() {
        runs if runs.len() > 1 => {
            out.push_str("\nLast run of each shop:\n");
            for run in runs {
                out.push_str(&format!("  {}: {}\n", run.shop, last_run(Some(run))));
            }
        }
        _ => out.push_str(&format!(
            "\nLast run: {}\n",
            last_run(report.last_run.as_ref())
        )),
    }
    out
}

fn live_run(run: &LiveRun, now: DateTime<Utc>) -> String {
    let beat = run.heartbeat_at.map_or_else(
        || "-".to_string(),
        |at| format!("{} ago", humanise_age((now - at).num_seconds().max(0))),
    );
    let shop = match run.shop.as_str() {
        ShopName::DEFAULT => String::new(),
        shop => format!(" (shop {shop})"),
    };
    format!(
        "#{}{shop} on {}: started {}, last heartbeat {beat}, {} order(s) held",
        run.run_id,
        run.worker_id,
        timestamp(run.started_at),
        run.orders_held
    )
}

/// Which run held the order's latest claim, and whether it still does.
fn holder(holder: &Holder) -> String {
    let state = match (holder.alive, holder.finished_at, holder.released_at) {
        (true, _, _) => "alive".to_string(),
        (false, _, Some(at)) => format!(
            "released at {} (its heartbeat went stale: crashed, frozen or cut off)",
            timestamp(at)
        ),
        (false, Some(at), None) => format!("ended at {}", timestamp(at)),
        (false, None, None) => "heartbeat stale: the next claim takes its orders".to_string(),
    };
    let beat = holder
        .heartbeat_at
        .map_or_else(|| "-".to_string(), timestamp);
    format!(
        "run #{} on {} ({state}; last heartbeat {beat})",
        holder.run_id, holder.worker_id
    )
}

fn aged(order: &AgedOrder, several: bool) -> String {
    format!(
        "{} ({}, created {}, {} ago)",
        order_name(&order.shop, &order.order_id, several),
        order.status,
        timestamp(order.order_created_at),
        humanise_age(order.age_seconds)
    )
}

fn deadline(nearest: &NearestDeadline, several: bool) -> String {
    format!(
        "{} for {} ({}), {}",
        timestamp(nearest.deadline),
        order_name(&nearest.shop, &nearest.order_id, several),
        nearest.status,
        time_left(nearest.seconds_left)
    )
}

/// Time to a deadline for people: `3h 10m left`, or `passed 5m ago`.
fn time_left(seconds: i64) -> String {
    if seconds >= 0 {
        format!("{} left", humanise_age(seconds))
    } else {
        format!("passed {} ago", humanise_age(-seconds))
    }
}

/// `review list`.
pub fn review_list(list: &ReviewList, width: Width) -> String {
    finish(review_list_text(list, width))
}

fn review_list_text(list: &ReviewList, width: Width) -> String {
    if list.orders.is_empty() {
        return "No orders in review.".to_string();
    }
    let mut out = String::new();
    for reviewed in &list.orders {
        let order = &reviewed.order;
        out.push_str(&format!(
            "Order {}: deadline {} ({}); created {}, in review since {}\n",
            order_name(&order.shop, &order.order_id, list.several_shops),
            timestamp(order.deadline),
            time_left(reviewed.time_left_seconds),
            timestamp(order.order_created_at),
            timestamp(order.in_review_since),
        ));
        if let Some(queued) = &reviewed.queued {
            out.push_str(&format!(
                "  Decided: {} {} by {} at {}; the next run carries it out\n",
                queued.action,
                decided_lines(queued.lines.as_deref()),
                queued.decided_by,
                timestamp(queued.decided_at)
            ));
        }
        out.push_str(&section(
            line_decisions(&reviewed.lines, false, width),
            reviewed.lines.is_empty(),
            "no line decisions recorded",
        ));
        out.push('\n');
    }
    out.push_str(&format!(
        "{} order(s) in review, oldest first. Decide with `order-acceptance review accept ID [--lines L1,L2] [--shop NAME]` or `order-acceptance review refuse ID --note TEXT [--shop NAME]`; {}.",
        list.orders.len(),
        list.deadline_note
    ));
    out
}

/// `review accept|refuse`.
pub fn queued(queued: &Queued) -> String {
    finish(queued_text(queued))
}

fn queued_text(queued: &Queued) -> String {
    format!(
        "{}\nHistory row #{} (pending_acceptance): the next run carries it out.",
        decision_line(&queued.decision),
        queued.history_id
    )
}

/// One review decision in a sentence: which order, what, who, why.
fn decision_line(decision: &ReviewDecision) -> String {
    format!(
        "Review decision #{} queued for order {}: {} {} by {}{}.",
        decision.review_id,
        order_name(&decision.shop, &decision.order_id, false),
        decision.action,
        decided_lines(decision.lines.as_deref()),
        decision.decided_by,
        decision
            .note
            .as_deref()
            .map_or_else(String::new, |note| format!(" ({note})"))
    )
}

/// `review accept|refuse --now`: the decision, the run's summary, and what became of the order.
pub fn decided_now(decided: &DecidedNow, width: Width) -> String {
    finish(decided_now_text(decided, width))
}

fn decided_now_text(decided: &DecidedNow, width: Width) -> String {
    let order_id = &decided.queued.decision.order_id;
    let outcome = match &decided.outcome {
        Some(now) => format!(
            "Order {order_id} is now {}: {}",
            now.status,
            or_dash(now.notes.as_deref())
        ),
        None => format!("Order {order_id} has no status history."),
    };
    format!(
        "{}\nCarried out at once by a run over this order:\n{}\n{outcome}",
        decision_line(&decided.queued.decision),
        acceptance::summary_table("run", &decided.run, width)
    )
}

fn last_run(run: Option<&RunRecord>) -> String {
    let Some(run) = run else {
        return "none yet".to_string();
    };
    let end = run
        .finished_at
        .map_or_else(|| "still running".to_string(), timestamp);
    let mut text = format!(
        "#{} on {}: {}, started {}, ended {}\n  imported {}, claimed {}, accepted {}, refused {}, cancelled {}, in review {}, failed {}, retry scheduled {}, lost claims {}, API calls {}",
        run.run_id,
        run.worker_id,
        run.result,
        timestamp(run.started_at),
        end,
        run.imported,
        run.claimed,
        run.accepted,
        run.refused,
        run.cancelled,
        run.in_review,
        run.failed,
        run.retry_scheduled,
        run.lost,
        run.api_calls
    );
    if let Some(error) = &run.error {
        text.push_str(&format!("\n  error: {error}"));
    }
    text
}
