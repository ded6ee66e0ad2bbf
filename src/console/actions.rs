//! What the console does: every POST. Each checks the form's Origin and CSRF token and the
//! person's role, then calls the same function the CLI calls (`review::queue_decision`,
//! `inbox::resolve_failure`, `inbox::retry_failure`), with the logged-in name as the decider or
//! resolver, and writes the audit whatever the outcome.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, html};
use secrecy::SecretString;

use super::accounts::{self, Role};
use super::audit::{self, Entry};
use super::forms::Fields;
use super::pages::{self, FilterParams};
use super::session::{self, ClientAddress, LOGIN_COOKIE, SESSION_COOKIE, User};
use super::templates::{order_link, page};
use super::{ConsoleError, ConsoleState};
use crate::db::console as store;
use crate::inbox::{self, InboxError};
use crate::review::{self, Decision, ReviewAction};

/// The longest note accepted: a sentence or a paragraph, not a document.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Failures a bulk action reads per query.
const BULK_BATCH: i64 = 500;

/// Runs `work` for `user` after the form's checks, and audits it whatever happens.
async fn act<T, F>(
    state: &ConsoleState,
    user: &User,
    headers: &HeaderMap,
    fields: &Fields,
    what: (&str, Option<&str>, Option<&str>),
    needs_role: Role,
    work: impl FnOnce() -> F,
) -> Result<T, ConsoleError>
where
    F: std::future::Future<Output = Result<T, ConsoleError>>,
{
    let (action, subject, detail) = what;
    let outcome = async {
        session::check_origin(headers, state.config.public_url.as_ref())?;
        user.check_csrf(fields.get("csrf"))?;
        match needs_role {
            Role::Admin => user.must_manage_users()?,
            Role::Operator => user.must_act()?,
            Role::Viewer => {}
        }
        work().await
    }
    .await;
    audit::record(
        &state.pool,
        Entry {
            actor: &user.name,
            address: &user.address,
            action,
            subject,
            detail,
        },
        &outcome,
    )
    .await;
    outcome
}

/// A note as given, or why it cannot be used.
fn note(fields: &Fields, required: bool, what: &str) -> Result<Option<String>, ConsoleError> {
    let note = fields.text("note");
    match &note {
        None if required => Err(ConsoleError::BadInput(format!(
            "{what} needs a note saying why; nothing was changed"
        ))),
        Some(text) if text.chars().count() > MAX_NOTE_CHARS => {
            Err(ConsoleError::BadInput(format!(
                "the note has {} characters; at most {MAX_NOTE_CHARS} are kept. Shorten it; nothing was changed",
                text.chars().count()
            )))
        }
        _ => Ok(note),
    }
}

fn done_page(title: &str, user: &User, body: Markup) -> Markup {
    page(title, user, None, html! { div.notice { (body) } })
}

// Login and logout -----------------------------------------------------------------------------

pub async fn login(
    State(state): State<ConsoleState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    session::check_origin(&headers, state.config.public_url.as_ref())?;
    let form_token = session::read_cookie(&headers, LOGIN_COOKIE)
        .filter(|cookie| {
            fields
                .get("csrf")
                .is_some_and(|given| session::same_secret(given, cookie))
        })
        .ok_or(ConsoleError::BadCsrf)?;
    let name: String = fields
        .get("name")
        .unwrap_or("")
        .trim()
        .chars()
        .take(64)
        .collect();
    let password = fields.get("password").unwrap_or("").to_string();
    let refuse = |status: StatusCode, message: &str| {
        (status, pages::login_page(&form_token, Some(message))).into_response()
    };
    let window = session::LOGIN_WINDOW.as_secs_f64();
    let (by_name, by_address) =
        store::recent_login_failures(&state.pool, &name, &address, window).await?;
    if by_name >= session::MAX_FAILURES_PER_NAME || by_address >= session::MAX_FAILURES_PER_ADDRESS
    {
        let message = format!(
            "Too many failed logins for this name or from this address in the last {} minutes. Wait, then try again; an admin can reset the password with `order-acceptance console user password NAME`.",
            session::LOGIN_WINDOW.as_secs() / 60
        );
        let outcome: Result<(), _> = Err(ConsoleError::TooManyLogins(message.clone()));
        audit_login(&state, &name, &address, "login_refused", &outcome).await;
        return Ok(refuse(StatusCode::TOO_MANY_REQUESTS, &message));
    }
    let account = store::find_login_account(&state.pool, &name).await?;
    let verified = check_password(account.clone(), password).await;
    let account = match (account, verified) {
        (Some(account), true) if account.disabled_at.is_none() => account,
        (Some(_), true) => {
            let message = "This account is disabled. Ask an admin to enable a new one.";
            let outcome: Result<(), _> = Err(ConsoleError::Forbidden(message.into()));
            audit_login(&state, &name, &address, "login_failed", &outcome).await;
            return Ok(refuse(StatusCode::FORBIDDEN, message));
        }
        _ => {
            store::record_login_failure(&state.pool, &name, &address).await?;
            let message = "Wrong name or password.";
            let outcome: Result<(), _> = Err(ConsoleError::Forbidden(message.into()));
            audit_login(&state, &name, &address, "login_failed", &outcome).await;
            return Ok(refuse(StatusCode::UNAUTHORIZED, message));
        }
    };
    store::delete_expired(
        &state.pool,
        state.config.session_idle.as_secs_f64(),
        state.config.session_absolute.as_secs_f64(),
        window,
    )
    .await?;
    store::clear_login_failures(&state.pool, &account.name).await?;
    let token = session::new_token();
    let csrf = session::new_token();
    store::insert_session(
        &state.pool,
        &session::token_digest(&token),
        account.user_id,
        &csrf,
        &address,
    )
    .await?;
    audit_login(
        &state,
        &account.name,
        &address,
        "login",
        &Ok::<(), ConsoleError>(()),
    )
    .await;
    let secure = state.secure_cookies();
    let cookies = [
        session::cookie(
            SESSION_COOKIE,
            &token,
            state.config.session_absolute,
            secure,
        ),
        session::expired_cookie(LOGIN_COOKIE, secure),
    ];
    let mut response = Redirect::to("/").into_response();
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Argon2 takes tens of milliseconds of CPU: off the async threads. An unknown name spends the
/// same time, so timing does not tell which names exist.
async fn check_password(account: Option<store::LoginAccount>, password: String) -> bool {
    tokio::task::spawn_blocking(move || match account {
        Some(account) => accounts::verify_password(&password, &account.password_hash),
        None => {
            accounts::verify_nothing(&password);
            false
        }
    })
    .await
    .unwrap_or(false)
}

async fn audit_login(
    state: &ConsoleState,
    name: &str,
    address: &str,
    action: &str,
    outcome: &Result<(), ConsoleError>,
) {
    let entry = Entry {
        actor: if name.is_empty() { "(no name)" } else { name },
        address,
        action,
        subject: None,
        detail: None,
    };
    audit::record(&state.pool, entry, outcome).await;
}

pub async fn logout(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    act(
        &state,
        &user,
        &headers,
        &fields,
        ("logout", None, None),
        Role::Viewer,
        || async {
            store::delete_session(&state.pool, &user.token_sha256).await?;
            Ok(())
        },
    )
    .await?;
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = session::expired_cookie(SESSION_COOKIE, state.secure_cookies()).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

// The review queue -----------------------------------------------------------------------------

pub async fn decide(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let order_id = fields.text("order_id").unwrap_or_default();
    let shop = fields
        .text("shop")
        .unwrap_or_else(|| crate::config::ShopName::DEFAULT.to_string());
    let action = match fields.get("action") {
        Some("accept") => Some(ReviewAction::Accept),
        Some("refuse") => Some(ReviewAction::Refuse),
        _ => None,
    };
    let lines: Vec<String> = fields
        .all("lines")
        .into_iter()
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect();
    let detail = format!(
        "{} {}",
        action.map_or("?", ReviewAction::as_str),
        match lines.is_empty() {
            true => "the whole order".to_string(),
            false => format!("lines {}", lines.join(", ")),
        }
    );
    let audit_action = match action {
        Some(ReviewAction::Refuse) => "review_refuse",
        _ => "review_accept",
    };
    let queued = act(
        &state,
        &user,
        &headers,
        &fields,
        (audit_action, Some(&order_id), Some(&detail)),
        Role::Operator,
        || async {
            let action = action.ok_or_else(|| {
                ConsoleError::BadInput("choose Accept or Refuse; nothing was changed".into())
            })?;
            if order_id.is_empty() {
                return Err(ConsoleError::BadInput("the form names no order".into()));
            }
            let note = note(&fields, action == ReviewAction::Refuse, "refusing")?;
            let decision = Decision {
                shop: shop.clone(),
                order_id: order_id.clone(),
                action,
                lines: (!lines.is_empty()).then(|| lines.clone()),
                note,
                decided_by: user.name.clone(),
            };
            Ok(review::queue_decision(&state.pool, &decision).await?)
        },
    )
    .await?;
    let now = Utc::now();
    let next = pages::next_scheduled_run(&state.schedule, now).map_or_else(
        || "The worker's next run carries it out.".to_string(),
        |next| {
            format!(
                "The next scheduled run, at {} UTC, carries it out.",
                next.format("%H:%M")
            )
        },
    );
    Ok(done_page(
        "Decision queued",
        &user,
        html! {
            p { "Review decision #" (queued.decision.review_id) " for " (order_link(&shop, &order_id)) ": " (detail) ". " (next) }
            p { a href="/review" { "Back to the review queue" } }
        },
    ))
}

// The failure inbox ----------------------------------------------------------------------------

fn failure_id(fields: &Fields) -> Result<i64, ConsoleError> {
    fields
        .get("id")
        .and_then(|id| id.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ConsoleError::BadInput("the form names no failure".into()))
}

pub async fn resolve(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let subject = fields.get("id").unwrap_or("").to_string();
    let note_text = fields.text("note");
    let resolution = act(
        &state,
        &user,
        &headers,
        &fields,
        ("failure_resolve", Some(&subject), note_text.as_deref()),
        Role::Operator,
        || async {
            let id = failure_id(&fields)?;
            let note = note(&fields, true, "resolving a failure")?.unwrap_or_default();
            Ok(inbox::resolve_failure(&state.pool, id, &note, &user.name).await?)
        },
    )
    .await?;
    Ok(done_page(
        "Failure resolved",
        &user,
        html! {
            p { "Failure #" (resolution.failure_id) " is resolved: " (resolution.resolution_note) }
            p { a href="/failures" { "Back to the failure inbox" } }
        },
    ))
}

pub async fn retry(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let subject = fields.get("id").unwrap_or("").to_string();
    let retried = act(
        &state,
        &user,
        &headers,
        &fields,
        ("failure_retry", Some(&subject), None),
        Role::Operator,
        || async {
            let id = failure_id(&fields)?;
            Ok(inbox::retry_failure(&state.pool, id, &user.name).await?)
        },
    )
    .await?;
    Ok(done_page(
        "Order back in the queue",
        &user,
        html! {
            p {
                "Order " (order_link(&retried.shop, &retried.order_id)) " (was " (retried.previous_status)
                ") is back in the queue; the next run takes it. Failure #" (retried.failure_id) " is resolved."
            }
            p { a href="/failures" { "Back to the failure inbox" } }
        },
    ))
}

/// What a bulk action did.
#[derive(Debug, Default)]
struct BulkOutcome {
    done: u64,
    /// Failures left as they were, by reason (e.g. "order X is accepted").
    skipped: Vec<(i64, String)>,
    /// Set when the database stopped answering partway.
    stopped: Option<String>,
}

pub async fn bulk(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let params: std::collections::HashMap<String, String> =
        ["process", "stage", "since", "order_id"]
            .iter()
            .filter_map(|name| fields.get(name).map(|v| (name.to_string(), v.to_string())))
            .collect();
    let filter_params = FilterParams::from_params(&params);
    let action = fields.get("action").unwrap_or("").to_string();
    let audit_action = match action.as_str() {
        "retry" => "failures_bulk_retry",
        _ => "failures_bulk_resolve",
    };
    let words = filter_params.words();
    let outcome = act(
        &state,
        &user,
        &headers,
        &fields,
        (audit_action, Some(&words), fields.get("note")),
        Role::Operator,
        || async {
            let up_to_id = fields
                .get("up_to_id")
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or_else(|| {
                    ConsoleError::BadInput(
                        "the confirmation is incomplete; start again from the inbox".into(),
                    )
                })?;
            let note = match action.as_str() {
                "resolve" => Some(note(&fields, true, "resolving failures")?.unwrap_or_default()),
                "retry" => None,
                _ => {
                    return Err(ConsoleError::BadInput(
                        "a bulk action is resolve or retry".into(),
                    ));
                }
            };
            let mut filter = filter_params.to_filter(Utc::now())?;
            filter.up_to_id = Some(up_to_id);
            Ok(run_bulk(&state, &user, &filter, note.as_deref()).await)
        },
    )
    .await?;
    let expected = fields.get("expected").unwrap_or("?");
    Ok(page(
        "Bulk action done",
        &user,
        None,
        html! {
            div.notice {
                p { (outcome.done) " of the " (expected) " failures confirmed were " (if action == "retry" { "retried" } else { "resolved" }) "." }
            }
            @if let Some(stopped) = &outcome.stopped {
                p.message { "Stopped partway: " (stopped) " The rest are still open; run the action again to finish." }
            }
            @if !outcome.skipped.is_empty() {
                h2 { (outcome.skipped.len()) " left as they were" }
                ul { @for (id, why) in outcome.skipped.iter().take(100) {
                    li { a href={ "/failure?id=" (id) } { "#" (id) } ": " (why) }
                } }
            }
            p { a href={ "/failures?" (filter_params.query()) } { "Back to the failure inbox" } }
        },
    ))
}

/// Each failure goes through the CLI's own `resolve_failure` / `retry_failure`, one transaction
/// each, so a bulk action is exactly many single ones.
async fn run_bulk(
    state: &ConsoleState,
    user: &User,
    filter: &store::InboxFilter,
    resolve_note: Option<&str>,
) -> BulkOutcome {
    let mut outcome = BulkOutcome::default();
    let mut after_id = 0;
    loop {
        let ids = match store::open_failure_ids(&state.pool, filter, after_id, BULK_BATCH).await {
            Ok(ids) => ids,
            Err(err) => {
                outcome.stopped = Some(format!("the database did not answer ({err})."));
                return outcome;
            }
        };
        let Some(&last) = ids.last() else {
            return outcome;
        };
        after_id = last;
        for id in ids {
            let result = match resolve_note {
                Some(note) => inbox::resolve_failure(&state.pool, id, note, &user.name)
                    .await
                    .map(|_| ()),
                None => inbox::retry_failure(&state.pool, id, &user.name)
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => outcome.done += 1,
                Err(InboxError::Database { error, .. }) => {
                    outcome.stopped = Some(format!("the database did not answer ({error})."));
                    return outcome;
                }
                Err(err) => outcome.skipped.push((id, err.to_string())),
            }
        }
    }
}

// Users ----------------------------------------------------------------------------------------

pub async fn add_user(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let name = fields.text("name").unwrap_or_default();
    let role_text = fields.get("role").unwrap_or("").to_string();
    let added = act(
        &state,
        &user,
        &headers,
        &fields,
        ("user_add", Some(&name), Some(&role_text)),
        Role::Admin,
        || async {
            let role = Role::parse(&role_text).ok_or_else(|| {
                ConsoleError::BadInput("the role is viewer, operator or admin".into())
            })?;
            let password = SecretString::from(fields.get("password").unwrap_or("").to_string());
            Ok(accounts::add_user(&state.pool, &name, role, &password).await?)
        },
    )
    .await?;
    Ok(done_page(
        "User added",
        &user,
        html! { p { (added.name) " can now log in as " (added.role) ". " a href="/users" { "Back to the users" } } },
    ))
}

pub async fn disable_user(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let name = fields.text("name").unwrap_or_default();
    act(
        &state,
        &user,
        &headers,
        &fields,
        ("user_disable", Some(&name), None),
        Role::Admin,
        || async {
            if name == user.name {
                return Err(ConsoleError::BadInput(
                    "you cannot disable yourself: another admin must".into(),
                ));
            }
            Ok(accounts::disable_user(&state.pool, &name).await?)
        },
    )
    .await?;
    Ok(done_page(
        "User disabled",
        &user,
        html! { p { (name) " can no longer log in; their sessions are ended. " a href="/users" { "Back to the users" } } },
    ))
}

pub async fn set_password(
    State(state): State<ConsoleState>,
    user: User,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Markup, ConsoleError> {
    let name = fields.text("name").unwrap_or_default();
    act(
        &state,
        &user,
        &headers,
        &fields,
        ("user_password", Some(&name), None),
        Role::Admin,
        || async {
            let password = SecretString::from(fields.get("password").unwrap_or("").to_string());
            Ok(accounts::change_password(&state.pool, &name, &password).await?)
        },
    )
    .await?;
    Ok(done_page(
        "Password changed",
        &user,
        html! { p { (name) "'s password is changed and their sessions are ended. " a href="/users" { "Back to the users" } } },
    ))
}
