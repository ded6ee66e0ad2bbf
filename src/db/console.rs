//! What the operator console (migration 9) stores and reads: accounts, sessions, failed logins,
//! the audit, and the page-sized reads of its lists. Every list is keyset-paginated over an
//! index, so a page costs the same with 1,000 orders or 10 million in the history.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::failures::FailureSummary;
use super::review::InReviewOrder;

// Accounts -------------------------------------------------------------------------------------

/// One console account, without its password hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConsoleUser {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// What a login needs to check a password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginAccount {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Stores a new account; fails on the unique name when it exists.
pub async fn insert_user(
    pool: &PgPool,
    name: &str,
    role: &str,
    password_hash: &str,
) -> Result<ConsoleUser, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO console_users (name, role, password_hash) VALUES ($1, $2, $3)
         RETURNING user_id, name, role, created_at, password_changed_at, disabled_at",
    )
    .bind(name)
    .bind(role)
    .bind(password_hash)
    .fetch_one(pool)
    .await
}

/// Every account, by name. Accounts are few (people at one order desk), so no pages.
pub async fn list_users(pool: &PgPool) -> Result<Vec<ConsoleUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, name, role, created_at, password_changed_at, disabled_at
         FROM console_users ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

pub async fn find_login_account(
    pool: &PgPool,
    name: &str,
) -> Result<Option<LoginAccount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, name, role, password_hash, disabled_at FROM console_users WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// Disables the account and ends its sessions; `false` when there is no such account.
pub async fn disable_user(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let user_id: Option<i64> = sqlx::query_scalar(
        "UPDATE console_users SET disabled_at = coalesce(disabled_at, now())
         WHERE name = $1 RETURNING user_id",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(user_id) = user_id {
        delete_sessions_of(&mut tx, user_id).await?;
    }
    tx.commit().await?;
    Ok(user_id.is_some())
}

/// Replaces the password and ends the account's sessions (whoever had it must log in again);
/// `false` when there is no such account.
pub async fn set_password(
    pool: &PgPool,
    name: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let user_id: Option<i64> = sqlx::query_scalar(
        "UPDATE console_users SET password_hash = $2, password_changed_at = now()
         WHERE name = $1 RETURNING user_id",
    )
    .bind(name)
    .bind(password_hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(user_id) = user_id {
        delete_sessions_of(&mut tx, user_id).await?;
    }
    tx.commit().await?;
    Ok(user_id.is_some())
}

async fn delete_sessions_of(conn: &mut sqlx::PgConnection, user_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

// Sessions -------------------------------------------------------------------------------------

/// The account behind a live session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionUser {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub csrf_token: String,
}

pub async fn insert_session(
    pool: &PgPool,
    token_sha256: &[u8],
    user_id: i64,
    csrf_token: &str,
    address: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO console_sessions (token_sha256, user_id, csrf_token, address)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_sha256)
    .bind(user_id)
    .bind(csrf_token)
    .bind(address)
    .execute(pool)
    .await?;
    Ok(())
}

/// The session's account if the session is live (used within `idle_secs`, created within
/// `absolute_secs`, account enabled), marking it used now; `None` otherwise.
pub async fn touch_session(
    pool: &PgPool,
    token_sha256: &[u8],
    idle_secs: f64,
    absolute_secs: f64,
) -> Result<Option<SessionUser>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE console_sessions s SET last_seen_at = now()
         FROM console_users u
         WHERE s.token_sha256 = $1 AND u.user_id = s.user_id AND u.disabled_at IS NULL
           AND s.last_seen_at > now() - make_interval(secs => $2)
           AND s.created_at > now() - make_interval(secs => $3)
         RETURNING u.user_id, u.name, u.role, s.csrf_token",
    )
    .bind(token_sha256)
    .bind(idle_secs)
    .bind(absolute_secs)
    .fetch_optional(pool)
    .await
}

pub async fn delete_session(pool: &PgPool, token_sha256: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = $1")
        .bind(token_sha256)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes sessions past either timeout and failed logins older than `failure_window_secs`.
pub async fn delete_expired(
    pool: &PgPool,
    idle_secs: f64,
    absolute_secs: f64,
    failure_window_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM console_sessions
         WHERE last_seen_at <= now() - make_interval(secs => $1)
            OR created_at <= now() - make_interval(secs => $2)",
    )
    .bind(idle_secs)
    .bind(absolute_secs)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM console_login_failures WHERE at <= now() - make_interval(secs => $1)")
        .bind(failure_window_secs)
        .execute(pool)
        .await?;
    Ok(())
}

// Failed logins --------------------------------------------------------------------------------

/// Failed logins within the last `window_secs`: for this name, and from this address.
pub async fn recent_login_failures(
    pool: &PgPool,
    name: &str,
    address: &str,
    window_secs: f64,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM console_login_failures
            WHERE user_name = $1 AND at > now() - make_interval(secs => $3)),
           (SELECT count(*) FROM console_login_failures
            WHERE address = $2 AND at > now() - make_interval(secs => $3))",
    )
    .bind(name)
    .bind(address)
    .bind(window_secs)
    .fetch_one(pool)
    .await
}

pub async fn record_login_failure(
    pool: &PgPool,
    name: &str,
    address: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO console_login_failures (user_name, address) VALUES ($1, $2)")
        .bind(name)
        .bind(address)
        .execute(pool)
        .await?;
    Ok(())
}

/// After a good password: earlier failures of the name no longer count against it.
pub async fn clear_login_failures(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM console_login_failures WHERE user_name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

// Audit ----------------------------------------------------------------------------------------

/// An audit row to write.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
    pub address: &'a str,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub audit_id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub address: Option<String>,
}

pub async fn insert_audit(pool: &PgPool, entry: &NewAuditEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO console_audit (actor, action, subject, outcome, detail, address)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.subject)
    .bind(entry.outcome)
    .bind(entry.detail)
    .bind(entry.address)
    .execute(pool)
    .await?;
    Ok(())
}

/// Audit rows newest first, those before `before` (an audit id) when given.
pub async fn audit_page(
    pool: &PgPool,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT audit_id, at, actor, action, subject, outcome, detail, address
         FROM console_audit
         WHERE $1::timestamptz IS NULL OR (at, audit_id) < ($1, $2)
         ORDER BY at DESC, audit_id DESC
         LIMIT $3",
    )
    .bind(before.map(|(at, _)| at))
    .bind(before.map_or(0, |(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await
}

// The review queue -----------------------------------------------------------------------------

/// Orders in review (of `shop`, or of every shop), oldest first, after the order `after` (its
/// creation time and id); deadlines with each shop's window as the worker last registered it.
pub async fn in_review_page(
    pool: &PgPool,
    shop: Option<&str>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<InReviewOrder>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(
        "SELECT cs.shop, cs.order_id, cs.order_created_at, cs.\"timestamp\" AS in_review_since,
                cs.order_created_at + acceptance_window(cs.shop) AS deadline, h.notes
         FROM order_current_status cs
         JOIN order_status_history h ON h.history_id = cs.history_id
         WHERE cs.status = 'in_review'
           AND ($1::timestamptz IS NULL OR (cs.order_created_at, cs.order_id) > ($1, $2))
           AND ($4::text IS NULL OR cs.shop = $4)
         ORDER BY cs.order_created_at, cs.order_id
         LIMIT $3",
    )
    .bind(after_at)
    .bind(after_id.unwrap_or_default())
    .bind(limit)
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Decisions queued and not yet carried out (of `shop`, or of every shop), oldest first: a
/// handful between two runs.
pub async fn queued_decisions(
    pool: &PgPool,
    shop: Option<&str>,
    limit: i64,
) -> Result<Vec<super::review::ReviewDecision>, sqlx::Error> {
    sqlx::query_as(
        "SELECT review_id, shop, order_id, action, lines, note, decided_by, decided_at,
                carried_out_at, outcome
         FROM review_decisions
         WHERE carried_out_at IS NULL AND ($2::text IS NULL OR shop = $2)
         ORDER BY decided_at, review_id
         LIMIT $1",
    )
    .bind(limit)
    .bind(shop)
    .fetch_all(pool)
    .await
}

// The failure inbox ----------------------------------------------------------------------------

/// Which open failures an inbox page or a bulk action covers. Every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxFilter {
    pub process_name: Option<String>,
    /// The payload's `stage` (e.g. validate, deadline, OR21).
    pub stage: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    pub shop: Option<String>,
    /// Only failures up to this id: a bulk action covers what its confirmation counted, not
    /// failures recorded after it.
    pub up_to_id: Option<i64>,
}

/// The filter's conditions on `process_failures f`, parameters $1 to $6. A macro, so each query
/// stays one static string.
macro_rules! inbox_where {
    () => {
        r#" f.resolved_at IS NULL
            AND ($1::text IS NULL OR f.process_name = $1)
            AND ($2::text IS NULL OR f.payload ->> 'stage' = $2)
            AND ($3::timestamptz IS NULL OR f."timestamp" >= $3)
            AND ($4::text IS NULL OR f.related_id = $4)
            AND ($5::bigint IS NULL OR f.failure_id <= $5)
            AND ($6::text IS NULL OR f.shop = $6) "#
    };
}

/// Binds the filter's parameters, $1 to $6, in [`inbox_where`]'s order.
macro_rules! bind_inbox_filter {
    ($query:expr, $filter:expr) => {
        $query
            .bind($filter.process_name.as_deref())
            .bind($filter.stage.as_deref())
            .bind($filter.since)
            .bind($filter.order_id.as_deref())
            .bind($filter.up_to_id)
            .bind($filter.shop.as_deref())
    };
}

/// Open failures matching `filter`, newest first, before `before` (time and id) when given.
pub async fn open_failures_page(
    pool: &PgPool,
    filter: &InboxFilter,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<FailureSummary>, sqlx::Error> {
    let query = sqlx::query_as(concat!(
        r#"SELECT f.failure_id, f.shop, f.related_id, f.process_name, f.details, f."timestamp",
                  f.retryable, f.resolved_at, cs.status AS order_status
           FROM process_failures f
           LEFT JOIN order_current_status cs ON cs.shop = f.shop AND cs.order_id = f.related_id
           WHERE "#,
        inbox_where!(),
        r#" AND ($7::timestamptz IS NULL OR (f."timestamp", f.failure_id) < ($7, $8))
           ORDER BY f."timestamp" DESC, f.failure_id DESC
           LIMIT $9"#
    ));
    bind_inbox_filter!(query, filter)
        .bind(before.map(|(at, _)| at))
        .bind(before.map_or(0, |(_, id)| id))
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// How many open failures match, and the newest id among them (what a bulk action covers).
pub async fn count_open_failures_matching(
    pool: &PgPool,
    filter: &InboxFilter,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    let query = sqlx::query_as(concat!(
        "SELECT count(*), max(f.failure_id) FROM process_failures f WHERE ",
        inbox_where!()
    ));
    bind_inbox_filter!(query, filter).fetch_one(pool).await
}

/// The ids of open failures matching `filter`, oldest first, after `after_id`, at most `limit`.
pub async fn open_failure_ids(
    pool: &PgPool,
    filter: &InboxFilter,
    after_id: i64,
    limit: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let query = sqlx::query_scalar(concat!(
        "SELECT f.failure_id FROM process_failures f WHERE ",
        inbox_where!(),
        " AND f.failure_id > $7 ORDER BY f.failure_id LIMIT $8"
    ));
    bind_inbox_filter!(query, filter)
        .bind(after_id)
        .bind(limit)
        .fetch_all(pool)
        .await
}

// The overview ---------------------------------------------------------------------------------

/// Orders per status among those still to be decided or left to a person: read through the
/// status index, so the cost follows the live orders, not the finished history.
pub async fn count_live_statuses(
    pool: &PgPool,
) -> Result<Vec<super::orders::StatusCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, count(*) AS orders FROM order_current_status
         WHERE status IN ('pending_acceptance', 'accepting', 'in_review', 'acceptance_failed')
         GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await
}

/// An order still to be decided, with the deadline the marketplace gives it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadlineOrder {
    pub shop: String,
    pub order_id: String,
    pub status: String,
    pub deadline: DateTime<Utc>,
}

/// The `limit` orders still to be decided whose deadlines come first: those in review and those
/// a claim will take, the first of each shop read from its own partial index, each with its
/// shop's window.
pub async fn nearest_deadlines(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<DeadlineOrder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT due.shop, due.order_id, due.status, due.deadline
         FROM shops s
         CROSS JOIN LATERAL (
             (SELECT shop, order_id, status, order_created_at + s.acceptance_window AS deadline
              FROM order_current_status WHERE shop = s.shop AND status = 'in_review'
              ORDER BY order_created_at, order_id LIMIT $1)
             UNION ALL
             (SELECT shop, order_id, status, order_created_at + s.acceptance_window
              FROM order_current_status WHERE shop = s.shop AND claimable_at IS NOT NULL
              ORDER BY order_created_at, order_id LIMIT $1)
         ) AS due
         ORDER BY due.deadline, due.order_id
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// History rows per UTC day and status from `from` (a day) on, for the decisions chart.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DayCount {
    pub day: NaiveDate,
    pub status: String,
    pub rows: i64,
}

/// Counted over the history's timestamp index: only the days asked for are read.
pub async fn decisions_per_day(
    pool: &PgPool,
    from: NaiveDate,
    until: NaiveDate,
) -> Result<Vec<DayCount>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT ("timestamp" AT TIME ZONE 'UTC')::date AS day, status, count(*) AS rows
           FROM order_status_history
           WHERE "timestamp" >= ($1::date::timestamp AT TIME ZONE 'UTC')
             AND "timestamp" < (($2::date + 1)::timestamp AT TIME ZONE 'UTC')
             AND status IN ('accepted', 'refused', 'cancelled', 'in_review', 'acceptance_failed')
           GROUP BY 1, 2"#,
    )
    .bind(from)
    .bind(until)
    .fetch_all(pool)
    .await
}

/// Runs still running, then the last `limit` runs, newest first.
pub async fn recent_runs(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<super::runs::RunRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, shop, worker_id, started_at, finished_at, result, imported, claimed,
                accepted, refused, cancelled, in_review, failed, retry_scheduled, api_calls, lost,
                error
         FROM acceptance_runs
         ORDER BY started_at DESC, run_id DESC
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

// One order ------------------------------------------------------------------------------------

/// An API call with its bodies, for the order page. The key is never stored, so never here.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiCallBodies {
    pub call_id: i64,
    pub at: DateTime<Utc>,
    pub endpoint: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status_code: Option<i32>,
    pub duration_ms: Option<i32>,
    pub error: Option<String>,
    pub request_payload: Option<serde_json::Value>,
    pub response_body: Option<String>,
    pub response_truncated: bool,
}

/// The order's API calls with their bodies, newest first, at most `limit`.
pub async fn order_api_calls_with_bodies(
    pool: &PgPool,
    shop: &str,
    order_id: &str,
    limit: i64,
) -> Result<Vec<ApiCallBodies>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT call_id, "timestamp" AS at, endpoint, method, path, status_code, duration_ms,
                  error, request_payload, response_body, response_truncated
           FROM api_calls WHERE related_id = $1 AND shop = $3
           ORDER BY "timestamp" DESC, call_id DESC
           LIMIT $2"#,
    )
    .bind(order_id)
    .bind(limit)
    .bind(shop)
    .fetch_all(pool)
    .await
}
