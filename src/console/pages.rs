//! What the console shows: every GET. Each page reads a bounded amount (a page of a list over
//! its index, or one order), renders it with [`templates`], and never changes anything.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use maud::{Markup, html};

use super::session::{self, LOGIN_COOKIE, User};
use super::templates::{
    at, csrf_field, duration_words, encode, optional_at, or_dash, order_link, order_path, page,
    time_left,
};
use super::{ConsoleError, ConsoleState, chart};
use crate::config::{self, ScheduleSettings};
use crate::db::console::{self as store, InboxFilter};
use crate::db::failures::{self, FailureSummary};
use crate::db::review::{self, InReviewOrder, LineDecision, ReviewDecision};
use crate::db::{OrderKey, orders};
use crate::inbox;

/// Rows per page of the review queue (each order a card with its lines).
const REVIEW_PAGE: i64 = 25;
/// Decisions waiting for a run shown above the queue (there are few between two runs).
const QUEUED_SHOWN: i64 = 100;
/// Rows per page of the failure inbox and the audit.
const LIST_PAGE: i64 = 50;
/// API calls shown on an order's page, newest first.
const ORDER_API_CALLS: i64 = 50;
/// Characters of a failure's details shown in the inbox list; the rest is on its page.
const DETAILS_SHOWN: usize = 300;
/// Seconds between live refreshes of the overview, the queue and the inbox.
const REFRESH_SECONDS: u32 = 15;

type Params = Query<HashMap<String, String>>;

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// When the worker's schedule starts its next run after `now`; `None` if it cannot be read.
pub fn next_scheduled_run(
    schedule: &ScheduleSettings,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let six_fields = config::parse_cron(&schedule.cron).ok()?;
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&six_fields)
        .ok()?;
    cron.find_next_occurrence(&now.with_timezone(&schedule.timezone), false)
        .ok()
        .map(|next| next.with_timezone(&Utc))
}

fn next_run_words(state: &ConsoleState, now: DateTime<Utc>) -> String {
    match next_scheduled_run(&state.schedule, now) {
        Some(next) => format!(
            "the next scheduled run ({} UTC, in {}) carries it out",
            next.format("%H:%M"),
            duration_words((next - now).num_seconds())
        ),
        None => "the worker's next run carries it out".to_string(),
    }
}

// Login ----------------------------------------------------------------------------------------

/// The login form, with a fresh CSRF token in a cookie and in the form.
pub async fn login_form(State(state): State<ConsoleState>) -> Response {
    let token = session::new_token();
    let cookie = session::cookie(
        LOGIN_COOKIE,
        &token,
        std::time::Duration::from_secs(3600),
        state.secure_cookies(),
    );
    ([(header::SET_COOKIE, cookie)], login_page(&token, None)).into_response()
}

pub fn login_page(csrf: &str, problem: Option<&str>) -> Markup {
    super::templates::bare_page(
        "Log in",
        html! {
            @if let Some(problem) = problem { p.message { (problem) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label.field for="name" { "Name" }
                input #name type="text" name="name" autocomplete="username" required autofocus;
                label.field for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                p { button.primary type="submit" { "Log in" } }
            }
        },
    )
}

// Overview -------------------------------------------------------------------------------------

pub async fn overview(
    State(state): State<ConsoleState>,
    user: User,
) -> Result<Markup, ConsoleError> {
    let now = Utc::now();
    let pool = &state.pool;
    let statuses = store::count_live_statuses(pool).await?;
    let deadlines = store::nearest_deadlines(pool, 10).await?;
    let open_failures = failures::count_open_failures(pool, None).await?;
    let runs = store::recent_runs(pool, 10).await?;
    let live = crate::db::runs::live_runs(pool, None).await?;
    let days = state.chart.days(pool, now.date_naive()).await?;
    let in_review = statuses
        .iter()
        .find(|s| s.status == "in_review")
        .map_or(0, |s| s.orders);
    let next = next_scheduled_run(&state.schedule, now);
    let body = html! {
        div.cards {
            a.card href="/review" { div.big { (in_review) } "in review" }
            a.card href="/failures" { div.big { (open_failures) } "open failures" }
            div.card {
                div.big { (next.map_or_else(|| "-".to_string(), |n| n.format("%H:%M").to_string())) }
                "next scheduled run (UTC)"
            }
            @for status in statuses.iter().filter(|s| s.status != "in_review") {
                div.card { div.big { (status.orders) } (status.status) }
            }
            @for (index, (_, label, _)) in chart::SERIES.iter().enumerate().take(3) {
                div.card {
                    div.big { (days.iter().map(|(_, counts)| counts[index]).sum::<i64>()) }
                    (label) ", last " (chart::DAYS) " days"
                }
            }
        }
        h2 { "Nearest deadlines" }
        p.muted { "Orders still to be decided, first deadline first: the marketplace refuses an order left undecided its shop's acceptance window (24 h at Best Buy) after its creation." }
        @if deadlines.is_empty() { p { "No order is waiting for a decision." } } @else {
            table {
                thead { tr { th { "Order" } th { "Status" } th { "Deadline" } th { "Time left" } } }
                tbody {
                    @for order in &deadlines {
                        tr {
                            td { (order_link(&order.shop, &order.order_id)) }
                            td { (order.status) }
                            td { (at(order.deadline)) }
                            td { (time_left((order.deadline - now).num_seconds())) }
                        }
                    }
                }
            }
        }
        h2 { "Live runs" }
        p.muted { "Runs holding orders now: each proves it is alive with a heartbeat; one whose heartbeat is older than acceptance.lease loses its orders to the next claim." }
        (live_runs_table(&live, now))
        h2 { "Runs" }
        (runs_table(&runs, now))
        h2 { "Decisions per day, last " (chart::DAYS) " days (UTC)" }
        div.chart {
            (chart::svg(&days))
            div.legend {
                @for (status, label, _) in chart::SERIES {
                    span { span class={ "swatch s-" (status) } {} (label) }
                }
            }
        }
    };
    Ok(page("Overview", &user, Some(REFRESH_SECONDS), body))
}

fn live_runs_table(live: &[crate::db::runs::LiveRun], now: DateTime<Utc>) -> Markup {
    html! {
        @if live.is_empty() { p { "No run is working right now." } } @else {
            table {
                thead { tr {
                    th { "Run" } th { "Shop" } th { "Worker" } th { "Started" }
                    th { "Last heartbeat" } th.num { "Orders held" }
                } }
                tbody {
                    @for run in live {
                        tr {
                            td { "#" (run.run_id) }
                            td { (run.shop) }
                            td { (run.worker_id) }
                            td { (at(run.started_at)) }
                            td { @match run.heartbeat_at {
                                Some(beat) => { (duration_words((now - beat).num_seconds().max(0))) " ago" }
                                None => { "-" }
                            } }
                            td.num { (run.orders_held) }
                        }
                    }
                }
            }
        }
    }
}

fn runs_table(runs: &[crate::db::runs::RunRecord], now: DateTime<Utc>) -> Markup {
    html! {
        @if runs.is_empty() { p { "No run has been recorded yet." } } @else {
            table {
                thead { tr {
                    th { "Run" } th { "Shop" } th { "Worker" } th { "Started" } th { "Result" } th.num { "Took" }
                    th.num { "Imported" } th.num { "Claimed" } th.num { "Accepted" }
                    th.num { "Refused" } th.num { "In review" } th.num { "Cancelled" }
                    th.num { "Failed" } th.num { "API calls" }
                } }
                tbody {
                    @for run in runs {
                        tr {
                            td { "#" (run.run_id) }
                            td { (run.shop) }
                            td { (run.worker_id) }
                            td { (at(run.started_at)) }
                            td class=(result_class(&run.result)) {
                                (run.result)
                                @if let Some(error) = &run.error { div.muted { (error) } }
                            }
                            td.num {
                                (duration_words((run.finished_at.unwrap_or(now) - run.started_at).num_seconds()))
                                @if run.finished_at.is_none() { " so far" }
                            }
                            td.num { (run.imported) } td.num { (run.claimed) }
                            td.num { (run.accepted) } td.num { (run.refused) }
                            td.num { (run.in_review) } td.num { (run.cancelled) }
                            td.num { (run.failed) } td.num { (run.api_calls) }
                        }
                    }
                }
            }
        }
    }
}

fn result_class(result: &str) -> &'static str {
    match result {
        "completed" => "ok",
        "running" => "queued",
        _ => "bad",
    }
}

// Review queue ---------------------------------------------------------------------------------

pub async fn review_queue(
    State(state): State<ConsoleState>,
    user: User,
    params: Params,
) -> Result<Markup, ConsoleError> {
    let now = Utc::now();
    let after = keyset_param(&params, "after_at", "after_id", |id| Some(id.to_string()))?;
    let shop = param(&params, "shop");
    let mut orders = store::in_review_page(&state.pool, shop, after, REVIEW_PAGE + 1).await?;
    let more = orders.len() > REVIEW_PAGE as usize;
    orders.truncate(REVIEW_PAGE as usize);
    let keys: Vec<OrderKey> = orders.iter().map(InReviewOrder::key).collect();
    let lines = review::latest_line_decisions(&state.pool, &keys).await?;
    let queued = review::open_decisions(&state.pool, &keys).await?;
    let total = review::count_in_review(&state.pool, shop).await?;
    let shop_query = shop.map_or_else(String::new, |shop| format!("&shop={}", encode(shop)));
    let waiting_for_run = store::queued_decisions(&state.pool, shop, QUEUED_SHOWN).await?;
    let body = html! {
        @if !waiting_for_run.is_empty() {
            h2 { "Decided, waiting for the next run" }
            p.muted { "These orders left the queue when they were decided; " (next_run_words(&state, now)) "." }
            @for decision in &waiting_for_run {
                p.queued { (order_link(&decision.shop, &decision.order_id)) " — " (queued_words(decision)) }
            }
            h2 { "In review" }
        }
        form.filters method="get" action="/review" {
            label { "Shop" input type="text" name="shop" value=[shop] placeholder="every shop"; }
            button type="submit" { "Filter" }
            @if shop.is_some() { a href="/review" { "Every shop" } }
        }
        p {
            (total) " orders in review, oldest first. Accept or refuse the whole order, or tick lines to "
            "apply the action to them only (the other lines get the opposite). A refusal needs a note. "
            "A decision is queued: " (next_run_words(&state, now)) "."
        }
        @if orders.is_empty() { p.notice { "Nothing to review." } }
        @for order in &orders {
            @let order_lines: Vec<&LineDecision> = lines.iter().filter(|l| l.shop == order.shop && l.order_id == order.order_id).collect();
            @let waiting = queued.iter().find(|q| q.shop == order.shop && q.order_id == order.order_id);
            section.order-card {
                h2 { (order_link(&order.shop, &order.order_id)) " · " (time_left((order.deadline - now).num_seconds())) " left" }
                p.muted {
                    "Created " (at(order.order_created_at)) " · in review since " (at(order.in_review_since))
                    " · deadline " (at(order.deadline))
                }
                @if let Some(notes) = &order.notes { p { (notes) } }
                @if let Some(decision) = waiting {
                    p.queued { (queued_words(decision)) " — " (next_run_words(&state, now)) "." }
                    (lines_table(&order_lines, None))
                } @else if user.role.may_act() {
                    form method="post" action="/review/decide" {
                        (csrf_field(&user))
                        input type="hidden" name="order_id" value=(order.order_id);
                        input type="hidden" name="shop" value=(order.shop);
                        (lines_table(&order_lines, Some(&order.order_id)))
                        label.field for={ "note-" (order.order_id) } { "Note (required to refuse)" }
                        textarea id={ "note-" (order.order_id) } name="note" maxlength="2000" {}
                        div.actions {
                            button.primary type="submit" name="action" value="accept" { "Accept" }
                            button.danger type="submit" name="action" value="refuse" { "Refuse" }
                        }
                    }
                } @else {
                    (lines_table(&order_lines, None))
                }
            }
        }
        @if more {
            @if let Some(last) = orders.last() {
                p.pager { a href={ "/review?after_at=" (encode(&last.order_created_at.to_rfc3339())) "&after_id=" (encode(&last.order_id)) (shop_query) } { "Next page →" } }
            }
        }
    };
    Ok(page("Review queue", &user, Some(REFRESH_SECONDS), body))
}

fn queued_words(decision: &ReviewDecision) -> String {
    let what = match &decision.lines {
        None => format!("{} the whole order", decision.action),
        Some(lines) => format!("{} lines {}", decision.action, lines.join(", ")),
    };
    let why = decision
        .note
        .as_deref()
        .map_or_else(String::new, |note| format!(": {note}"));
    format!(
        "Queued: {what} (review decision #{}, by {} at {}){why}",
        decision.review_id,
        decision.decided_by,
        at(decision.decided_at)
    )
}

/// The lines that sent an order to review; with `form_for`, a checkbox per line.
fn lines_table(lines: &[&LineDecision], form_for: Option<&str>) -> Markup {
    html! {
        table {
            thead { tr {
                @if form_for.is_some() { th { "Only" } }
                th { "Line" } th { "SKU" } th.num { "Qty" } th { "Rule" } th.num { "Available" }
                th.num { "Reserved" } th.num { "Price" } th.num { "Floor" } th { "Why" }
            } }
            tbody {
                @for line in lines {
                    tr {
                        @if let Some(order_id) = form_for {
                            td { input type="checkbox" name="lines" value=(line.order_line_id)
                                aria-label={ "line " (line.order_line_id) " of " (order_id) }; }
                        }
                        td { (line.order_line_id) }
                        td { (or_dash(line.sku.as_deref())) }
                        td.num { (or_dash(line.quantity)) }
                        td { (line.rule) " → " (line.action) }
                        td.num { (or_dash(line.available)) }
                        td.num { (or_dash(line.reserved)) }
                        td.num { (or_dash(line.unit_price.as_deref())) }
                        td.num { (or_dash(line.floor_price.as_deref())) }
                        td { (line.reason) }
                    }
                }
            }
        }
    }
}

/// A keyset position from two query parameters: a time (RFC 3339) and an id.
fn keyset_param<T>(
    params: &Params,
    at_name: &str,
    id_name: &str,
    parse_id: impl Fn(&str) -> Option<T>,
) -> Result<Option<(DateTime<Utc>, T)>, ConsoleError> {
    let (Some(at), Some(id)) = (param(params, at_name), param(params, id_name)) else {
        return Ok(None);
    };
    let bad = || {
        ConsoleError::BadInput(format!(
            "the page position ({at_name}, {id_name}) in the address is not one the console wrote; open the list from its first page"
        ))
    };
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| bad())?
        .with_timezone(&Utc);
    Ok(Some((at, parse_id(id).ok_or_else(bad)?)))
}

// Failure inbox --------------------------------------------------------------------------------

/// The inbox filter as it travels in addresses and forms.
#[derive(Debug, Clone, Default)]
pub struct FilterParams {
    pub process: Option<String>,
    pub stage: Option<String>,
    /// A duration: failures recorded within it (e.g. 2h, 3d).
    pub since: Option<String>,
    pub order_id: Option<String>,
    pub shop: Option<String>,
}

impl FilterParams {
    pub fn from_params(params: &HashMap<String, String>) -> Self {
        let get = |name: &str| {
            params
                .get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        FilterParams {
            process: get("process"),
            stage: get("stage"),
            since: get("since"),
            order_id: get("order_id"),
            shop: get("shop"),
        }
    }

    pub fn to_filter(&self, now: DateTime<Utc>) -> Result<InboxFilter, ConsoleError> {
        let since = match &self.since {
            None => None,
            Some(text) => {
                let duration = humantime::parse_duration(text).map_err(|_| {
                    ConsoleError::BadInput(format!(
                        "\"since\" must be a duration such as 30m, 2h or 3d, not {text:?}"
                    ))
                })?;
                Some(inbox::time_before(now, duration, "since")?)
            }
        };
        Ok(InboxFilter {
            process_name: self.process.clone(),
            stage: self.stage.clone(),
            since,
            order_id: self.order_id.clone(),
            shop: self.shop.clone(),
            up_to_id: None,
        })
    }

    /// `name=value&…` for the fields set, encoded.
    pub fn query(&self) -> String {
        [
            ("process", &self.process),
            ("stage", &self.stage),
            ("since", &self.since),
            ("order_id", &self.order_id),
            ("shop", &self.shop),
        ]
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect::<Vec<_>>()
        .join("&")
    }

    pub fn is_empty(&self) -> bool {
        self.query().is_empty()
    }

    /// The filter as hidden fields, for the bulk confirmation.
    pub fn hidden_fields(&self) -> Markup {
        html! {
            @for (name, value) in [("process", &self.process), ("stage", &self.stage), ("since", &self.since), ("order_id", &self.order_id)] {
                @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
            }
        }
    }

    pub fn words(&self) -> String {
        let parts: Vec<String> = [
            ("process", &self.process),
            ("stage", &self.stage),
            ("recorded within", &self.since),
            ("order", &self.order_id),
        ]
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
        .collect();
        match parts.is_empty() {
            true => "every open failure".to_string(),
            false => format!("open failures with {}", parts.join(", ")),
        }
    }
}

pub async fn failure_inbox(
    State(state): State<ConsoleState>,
    user: User,
    params: Params,
) -> Result<Markup, ConsoleError> {
    let now = Utc::now();
    let filter_params = FilterParams::from_params(&params);
    let filter = filter_params.to_filter(now)?;
    let before = keyset_param(&params, "before_at", "before_id", |id| {
        id.parse::<i64>().ok()
    })?;
    let mut rows = store::open_failures_page(&state.pool, &filter, before, LIST_PAGE + 1).await?;
    let more = rows.len() > LIST_PAGE as usize;
    rows.truncate(LIST_PAGE as usize);
    let (matching, _) = store::count_open_failures_matching(&state.pool, &filter).await?;
    let query = filter_params.query();
    let body = html! {
        form.filters method="get" action="/failures" {
            label { "Process" input type="text" name="process" value=[filter_params.process.as_deref()] placeholder="OrderAcceptance"; }
            label { "Stage" input type="text" name="stage" value=[filter_params.stage.as_deref()] placeholder="validate, deadline…"; }
            label { "Recorded within" input type="text" name="since" value=[filter_params.since.as_deref()] placeholder="2h, 3d"; }
            label { "Order id" input type="text" name="order_id" value=[filter_params.order_id.as_deref()]; }
            label { "Shop" input type="text" name="shop" value=[filter_params.shop.as_deref()] placeholder="every shop"; }
            button type="submit" { "Filter" }
            @if !filter_params.is_empty() { a href="/failures" { "Clear" } }
        }
        p {
            strong { (matching) } " " (filter_params.words()) ", newest first."
            @if user.role.may_act() && matching > 0 {
                " "
                a href={ "/failures/bulk?action=resolve&" (query) } { "Resolve all " (matching) "…" }
                " · "
                a href={ "/failures/bulk?action=retry&" (query) } { "Retry all " (matching) "…" }
            }
        }
        (failure_rows(&rows, now))
        @if more {
            @if let Some(last) = rows.last() {
                p.pager { a href={ "/failures?" (query) "&before_at=" (encode(&last.recorded_at.to_rfc3339())) "&before_id=" (last.failure_id) } { "Older →" } }
            }
        }
    };
    Ok(page("Failure inbox", &user, Some(REFRESH_SECONDS), body))
}

fn failure_rows(rows: &[FailureSummary], now: DateTime<Utc>) -> Markup {
    html! {
        @if rows.is_empty() { p.notice { "No open failure matches." } } @else {
            table {
                thead { tr {
                    th { "Failure" } th { "Recorded" } th { "Order" } th { "Order status" }
                    th { "Process" } th { "Details" } th { "Retried by itself" }
                } }
                tbody {
                    @for failure in rows {
                        tr {
                            td { a href={ "/failure?id=" (failure.failure_id) } { "#" (failure.failure_id) } }
                            td { (duration_words((now - failure.recorded_at).num_seconds())) " ago" }
                            td { @if let Some(id) = &failure.related_id { (order_link(&failure.shop, id)) } @else { "-" } }
                            td { (or_dash(failure.order_status.as_deref())) }
                            td { (failure.process_name) }
                            td { (shorten(failure.details.as_deref().unwrap_or("-"), DETAILS_SHOWN)) }
                            td { @if failure.retryable { "yes" } @else { "no: a person decides" } }
                        }
                    }
                }
            }
        }
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

pub async fn failure_detail(
    State(state): State<ConsoleState>,
    user: User,
    params: Params,
) -> Result<Markup, ConsoleError> {
    let id = param(&params, "id")
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or_else(|| ConsoleError::BadInput("give the failure's id: /failure?id=123".into()))?;
    let report = inbox::show_failure(&state.pool, id, Utc::now()).await?;
    let failure = &report.failure;
    let payload = failure
        .payload
        .as_ref()
        .map(|p| serde_json::to_string_pretty(p).unwrap_or_else(|_| p.to_string()));
    let body = html! {
        table {
            tr { th { "Recorded" } td { (at(failure.recorded_at)) " (" (duration_words(report.age_seconds)) " ago)" } }
            tr { th { "Process" } td { (failure.process_name) } }
            tr { th { "Order" } td { @if let Some(id) = &failure.related_id { (order_link(&failure.shop, id)) } @else { "-" } } }
            tr { th { "Order status" } td { (or_dash(failure.order_status.as_deref())) " " span.muted { (optional_at(failure.order_status_at)) } } }
            tr { th { "Retried by itself" } td { @if failure.retryable { "yes: a later run retries the order" } @else { "no: a person decides" } } }
            tr { th { "Details" } td { (failure.details.as_deref().unwrap_or("-")) } }
            @if let Some(resolved_at) = failure.resolved_at {
                tr { th { "Resolved" } td.ok {
                    (at(resolved_at)) " by " (failure.resolved_by.as_deref().unwrap_or("unknown")) ": "
                    (failure.resolution_note.as_deref().unwrap_or(""))
                } }
            }
        }
        h2 { "Payload" }
        @if let Some(payload) = payload { pre { (payload) } } @else { p { "None." } }
        @if failure.resolved_at.is_none() && user.role.may_act() {
            h2 { "Work it" }
            form method="post" action="/failures/resolve" {
                (csrf_field(&user))
                input type="hidden" name="id" value=(failure.failure_id);
                label.field for="note" { "What was done about it (required)" }
                textarea #note name="note" maxlength="2000" required {}
                div.actions { button.primary type="submit" { "Resolve" } }
            }
            form method="post" action="/failures/retry" {
                (csrf_field(&user))
                input type="hidden" name="id" value=(failure.failure_id);
                div.actions {
                    button type="submit" { "Retry: put the order back in the queue" }
                    span.muted { "Only for an order in acceptance_failed or pending_acceptance; resolves the failure." }
                }
            }
        }
    };
    Ok(page(
        &format!("Failure #{}", failure.failure_id),
        &user,
        None,
        body,
    ))
}

/// The confirmation of a bulk action: how many failures match, and the button that does it.
pub async fn bulk_confirm(
    State(state): State<ConsoleState>,
    user: User,
    params: Params,
) -> Result<Markup, ConsoleError> {
    user.must_act()?;
    let action = match param(&params, "action") {
        Some("resolve") => "resolve",
        Some("retry") => "retry",
        _ => {
            return Err(ConsoleError::BadInput(
                "a bulk action is resolve or retry".to_string(),
            ));
        }
    };
    let filter_params = FilterParams::from_params(&params);
    let filter = filter_params.to_filter(Utc::now())?;
    let (count, newest) = store::count_open_failures_matching(&state.pool, &filter).await?;
    let body = html! {
        @if count == 0 { p.notice { "No open failure matches " (filter_params.words()) "." } } @else {
            p.message {
                "This will " (action) " " strong { (count) } " failures: " (filter_params.words())
                ", up to failure #" (newest.unwrap_or(0)) ". Failures recorded after this page was shown are left alone. "
                @if action == "retry" {
                    "Each order in acceptance_failed or pending_acceptance goes back in the queue and its failure is resolved; the others are left open and counted."
                } @else {
                    "Each is closed with the note below."
                }
            }
            form method="post" action="/failures/bulk" {
                (csrf_field(&user))
                input type="hidden" name="action" value=(action);
                input type="hidden" name="up_to_id" value=(newest.unwrap_or(0));
                input type="hidden" name="expected" value=(count);
                (filter_params.hidden_fields())
                @if action == "resolve" {
                    label.field for="note" { "Note (required)" }
                    textarea #note name="note" maxlength="2000" required {}
                }
                div.actions {
                    button.danger type="submit" { (if action == "resolve" { "Resolve " } else { "Retry " }) (count) " failures" }
                    a href={ "/failures?" (filter_params.query()) } { "Cancel" }
                }
            }
        }
    };
    Ok(page(&format!("Bulk {action}"), &user, None, body))
}

// One order ------------------------------------------------------------------------------------

pub async fn order(
    State(state): State<ConsoleState>,
    user: User,
    params: Params,
) -> Result<Markup, ConsoleError> {
    let order_id = param(&params, "id")
        .ok_or_else(|| ConsoleError::BadInput("give the order id: /order?id=…".into()))?;
    let report = inbox::order_report(&state.pool, order_id, param(&params, "shop")).await?;
    let shop = report.order.shop.as_str();
    let calls =
        store::order_api_calls_with_bodies(&state.pool, shop, order_id, ORDER_API_CALLS).await?;
    let body = html! {
        p {
            "Shop " strong { (shop) } " · "
            "Current status: " strong { (or_dash(report.current_status.as_deref())) }
            " · stored " (at(report.order.created_at))
            " · created at the marketplace " (optional_at(report.order.placed_at))
        }
        h2 { "Timeline" }
        table {
            thead { tr { th { "#" } th { "At" } th { "Status" } th.num { "Attempt" } th { "Note" } th { "Worker" } th { "Next attempt" } } }
            tbody { @for row in &report.history { tr {
                td { (row.history_id) } td { (at(row.at)) } td { (row.status) } td.num { (or_dash(row.attempt)) }
                td { (row.notes.as_deref().unwrap_or("")) } td { (or_dash(row.worker_id.as_deref())) }
                td { (optional_at(row.next_attempt_at)) }
            } } }
        }
        h2 { "Review decisions" }
        @if report.review_decisions.is_empty() { p.muted { "None." } } @else {
            table {
                thead { tr { th { "#" } th { "Decided" } th { "By" } th { "Action" } th { "Lines" } th { "Note" } th { "Carried out" } } }
                tbody { @for d in &report.review_decisions { tr {
                    td { (d.review_id) } td { (at(d.decided_at)) } td { (d.decided_by) } td { (d.action) }
                    td { (d.lines.as_ref().map_or_else(|| "all".to_string(), |l| l.join(", "))) }
                    td { (d.note.as_deref().unwrap_or("")) }
                    td { @match d.carried_out_at {
                        Some(t) => { (at(t)) ": " (d.outcome.as_deref().unwrap_or("")) },
                        None => span.queued { "queued for the next run" },
                    } }
                } } }
            }
        }
        h2 { "Line decisions" }
        @if report.line_decisions.is_empty() { p.muted { "None (rules off, or not claimed yet)." } } @else {
            @let lines: Vec<&LineDecision> = report.line_decisions.iter().collect();
            (lines_table(&lines, None))
        }
        h2 { "Line states" }
        @match &report.line_states {
            None => p.muted { "No final outcome yet." },
            Some(states) => table {
                thead { tr { th { "Line" } th { "SKU" } th.num { "Qty" } th { "State" } th { "Accepted" } } }
                tbody { @for line in states { tr {
                    td { (or_dash(line.order_line_id.as_deref())) } td { (or_dash(line.offer_sku.as_deref())) }
                    td.num { (or_dash(line.quantity)) } td { (or_dash(line.state.as_deref())) }
                    td { (or_dash(line.accepted)) }
                } } }
            },
        }
        h2 { "Failures" }
        @if report.failures.is_empty() { p.muted { "None." } } @else { (failure_rows(&report.failures, Utc::now())) }
        h2 { "API calls" }
        p.muted { "Newest first, at most " (ORDER_API_CALLS) ". The API key is never stored, so never shown." }
        @if calls.is_empty() { p.muted { "None." } }
        @for call in &calls {
            details {
                summary {
                    (at(call.at)) " · " (call.endpoint) " " (call.method.as_deref().unwrap_or("")) " "
                    (call.path.as_deref().unwrap_or("")) " → "
                    (call.status_code.map_or_else(|| "no response".to_string(), |c| c.to_string()))
                    @if let Some(ms) = call.duration_ms { " in " (ms) " ms" }
                    @if let Some(error) = &call.error { " · " span.bad { (error) } }
                }
                h3 { "Request" }
                pre { (call.request_payload.as_ref().map_or_else(|| "-".to_string(), |p| serde_json::to_string_pretty(p).unwrap_or_default())) }
                h3 { "Response" @if call.response_truncated { " (cut at the stored size)" } }
                pre { (call.response_body.as_deref().unwrap_or("-")) }
            }
        }
    };
    Ok(page(&format!("Order {order_id}"), &user, None, body))
}

/// From the search box: the order's page when it exists.
pub async fn search(
    State(state): State<ConsoleState>,
    _user: User,
    params: Params,
) -> Result<Response, ConsoleError> {
    let order_id = param(&params, "order_id")
        .ok_or_else(|| ConsoleError::BadInput("type an order id to search for".into()))?;
    // The same id in several shops: the order page asks which.
    match orders::shops_of_order(&state.pool, order_id)
        .await?
        .as_slice()
    {
        [] => Err(ConsoleError::NotFound(format!(
            "There is no order {order_id:?}. Order ids are the marketplace's (e.g. 123456789-A), matched exactly"
        ))),
        [shop] => Ok(Redirect::to(&order_path(shop, order_id)).into_response()),
        shops => Err(ConsoleError::Conflict(format!(
            "Order {order_id:?} exists in several shops ({}): open it from the review queue or the inbox, or add &shop=NAME to its address",
            shops.join(", ")
        ))),
    }
}

// Audit and users ------------------------------------------------------------------------------

pub async fn audit(
    State(state): State<ConsoleState>,
    user: User,
    params: Params,
) -> Result<Markup, ConsoleError> {
    let before = keyset_param(&params, "before_at", "before_id", |id| {
        id.parse::<i64>().ok()
    })?;
    let mut rows = store::audit_page(&state.pool, before, LIST_PAGE + 1).await?;
    let more = rows.len() > LIST_PAGE as usize;
    rows.truncate(LIST_PAGE as usize);
    let body = html! {
        p { "Every action taken in the console, newest first: who, when, what, from where, and how it ended." }
        table {
            thead { tr { th { "When" } th { "Who" } th { "From" } th { "Action" } th { "About" } th { "Outcome" } th { "Detail" } } }
            tbody { @for row in &rows { tr {
                td { (at(row.at)) } td { (row.actor) } td { (or_dash(row.address.as_deref())) }
                td { (row.action) } td { (or_dash(row.subject.as_deref())) }
                td class=(if row.outcome == "ok" { "ok" } else { "bad" }) { (row.outcome) }
                td { (shorten(row.detail.as_deref().unwrap_or(""), DETAILS_SHOWN)) }
            } } }
        }
        @if more { @if let Some(last) = rows.last() {
            p.pager { a href={ "/audit?before_at=" (encode(&last.at.to_rfc3339())) "&before_id=" (last.audit_id) } { "Older →" } }
        } }
    };
    Ok(page("Audit", &user, None, body))
}

pub async fn users(State(state): State<ConsoleState>, user: User) -> Result<Markup, ConsoleError> {
    user.must_manage_users()?;
    let accounts = store::list_users(&state.pool).await?;
    let body = html! {
        table {
            thead { tr { th { "Name" } th { "Role" } th { "Created" } th { "Password changed" } th { "State" } th { "" } } }
            tbody { @for account in &accounts { tr {
                td { (account.name) } td { (account.role) } td { (at(account.created_at)) }
                td { (at(account.password_changed_at)) }
                td { @match account.disabled_at { Some(t) => span.bad { "disabled " (at(t)) }, None => span.ok { "active" } } }
                td {
                    @if account.disabled_at.is_none() && account.name != user.name {
                        form.inline method="post" action="/users/disable" {
                            (csrf_field(&user))
                            input type="hidden" name="name" value=(account.name);
                            button.danger type="submit" { "Disable" }
                        }
                    }
                    form.inline method="post" action="/users/password" {
                        (csrf_field(&user))
                        input type="hidden" name="name" value=(account.name);
                        input type="password" name="password" autocomplete="new-password" placeholder="new password" required
                            aria-label={ "new password for " (account.name) };
                        button type="submit" { "Set password" }
                    }
                }
            } } }
        }
        h2 { "Add a user" }
        form method="post" action="/users/add" {
            (csrf_field(&user))
            label.field for="new-name" { "Name" }
            input #new-name type="text" name="name" required;
            label.field for="new-role" { "Role" }
            select #new-role name="role" {
                option value="viewer" { "viewer: reads" }
                option value="operator" selected { "operator: decides reviews, works the inbox" }
                option value="admin" { "admin: also manages users" }
            }
            label.field for="new-password" { "Password (at least " (super::accounts::MIN_PASSWORD_CHARS) " characters)" }
            input #new-password type="password" name="password" autocomplete="new-password" required;
            div.actions { button.primary type="submit" { "Add" } }
        }
    };
    Ok(page("Users", &user, None, body))
}
