//! `rate_gates`: the rate gate state the replicas of one shop share (closings and learned
//! paces, one row per shop and endpoint group), and what the rate learner reads beside it: how
//! many runs of the shop are live, and what the marketplace answered all of them lately.
//!
//! Times cross the table in the database's clock: a closing is written as "this long from
//! now()" and read back as "this long from now()", so replicas whose clocks disagree still agree
//! on when a gate opens. The values are returned as stored; the caller decides what to trust.

use sqlx::PgPool;

/// One group's row, with its times relative to the database's clock now.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RateGateRow {
    pub api_group: String,
    /// Seconds until `closed_until` (negative once past); `None` when no closing was written.
    pub closed_for_seconds: Option<f64>,
    pub learned_rate: Option<f64>,
    pub last_max_rate: Option<f64>,
    /// Seconds since the row was written (negative for a row written "in the future").
    pub age_seconds: f64,
    pub updated_by: String,
}

/// What one replica writes for one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewRateGate<'a> {
    pub shop: &'a str,
    pub api_group: &'a str,
    /// Seconds from now the gate stays closed, if it is.
    pub closed_for_seconds: Option<f64>,
    /// The learned pace and the rate it climbs back towards, if any.
    pub learned: Option<(f64, f64)>,
    pub updated_by: &'a str,
}

pub async fn load(pool: &PgPool, shop: &str) -> Result<Vec<RateGateRow>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT api_group,
               extract(epoch FROM closed_until - now())::float8 AS closed_for_seconds,
               learned_rate, last_max_rate,
               extract(epoch FROM now() - updated_at)::float8 AS age_seconds,
               updated_by
        FROM rate_gates
        WHERE shop = $1
        ORDER BY api_group
        "#,
    )
    .bind(shop)
    .fetch_all(pool)
    .await
}

/// Writes the group's row. A closing already stored that ends later stays: the marketplace
/// told another replica to wait that long.
pub async fn save(pool: &PgPool, row: &NewRateGate<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        INSERT INTO rate_gates (shop, api_group, closed_until, learned_rate, last_max_rate,
                                updated_at, updated_by)
        VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5, now(), $6)
        ON CONFLICT (shop, api_group) DO UPDATE SET
            closed_until = CASE
                WHEN rate_gates.closed_until > now()
                     AND rate_gates.closed_until > coalesce(EXCLUDED.closed_until, '-infinity')
                     AND rate_gates.closed_until < now() + interval '1 day'
                THEN rate_gates.closed_until
                ELSE EXCLUDED.closed_until END,
            learned_rate = coalesce(EXCLUDED.learned_rate, rate_gates.learned_rate),
            last_max_rate = coalesce(EXCLUDED.last_max_rate, rate_gates.last_max_rate),
            updated_at = now(),
            updated_by = EXCLUDED.updated_by
        "#,
    )
    .bind(row.shop)
    .bind(row.api_group)
    .bind(row.closed_for_seconds)
    .bind(row.learned.map(|(rate, _)| rate))
    .bind(row.learned.map(|(_, w_max)| w_max))
    .bind(row.updated_by)
    .execute(pool)
    .await?;
    Ok(())
}

/// How many runs of the shop are live now (the `live_runs` condition: not ended, not released,
/// heartbeat within its lease): the replicas the shop's learned rate is shared among.
pub async fn live_runs(pool: &PgPool, shop: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM acceptance_runs
         WHERE shop = $1 AND released_at IS NULL AND finished_at IS NULL AND held_until > now()",
    )
    .bind(shop)
    .fetch_one(pool)
    .await
}

/// What the marketplace answered the shop's calls of one endpoint group over a span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Answers {
    /// Answered below 500, 429 aside.
    pub served: i64,
    /// Answered 429. A 503 is left out: the table does not say whether it named a
    /// `Retry-After`, and the marketplace's errors are no evidence of a limit.
    pub throttled: i64,
}

/// The answers every replica of the shop recorded in `api_calls` for `endpoint` between `from`
/// and `to` seconds ago (database clock), unanswered calls left out: the evidence a closing is
/// judged by, since one replica sees only its part of a limit they share.
pub async fn answers(
    pool: &PgPool,
    shop: &str,
    endpoint: &str,
    from: f64,
    to: f64,
) -> Result<Answers, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT count(*) FILTER (WHERE status_code < 500 AND status_code <> 429) AS served,
               count(*) FILTER (WHERE status_code = 429) AS throttled
        FROM api_calls
        WHERE shop = $1
          AND endpoint = $2
          AND "timestamp" >= now() - make_interval(secs => $3)
          AND "timestamp" <= now() - make_interval(secs => $4)
          AND status_code IS NOT NULL
        "#,
    )
    .bind(shop)
    .bind(endpoint)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}
