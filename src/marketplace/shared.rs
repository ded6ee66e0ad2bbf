//! The rate gate state the replicas of one shop share through PostgreSQL (`rate_gates`):
//! closings the marketplace asked for and the paces learned, so that three replicas against one
//! limit behave as one client, and a fresh run starts from the pace learned recently.
//!
//! Read at the start of each run, written when a closing begins or a pace is learned — never
//! per request. Running replicas do not re-read each other's closings: each draws its own 429s
//! and its own gate holds it back; taking every other replica's stray 429 as well multiplied the
//! closed time by the number of replicas and stalled `bench/chaos`.
//!
//! A learned pace is the shop's, shared among its replicas: a closing is judged by what the
//! marketplace answered all of them over its window (their `api_calls` rows), and each process
//! paces at the shop's rate divided by the runs live now (`acceptance_runs`), counted at each
//! closing and every few seconds while paced. Neither read may hold a call long: one that fails
//! or is slow leaves the process to its own answers and a count of one (its own gate, as a lone
//! run), with a warning.
//!
//! A row is a hint from another process: one that is
//! missing is nothing to go by; one that cannot be right (a rate that is no rate, a closing past
//! this run's allowance, a row written "in the future" by a replica with another clock) is
//! ignored with a warning, and the local gate decides alone. A database that cannot be reached
//! costs a warning, never a call.

use std::time::Duration;

use sqlx::PgPool;

use super::error::Endpoint;
use super::gate::{Gate, ShopAnswers};
use super::learner::{CEILING, Evidence, FLOOR};
use crate::db::rate_gates::{self, NewRateGate, RateGateRow};

/// A pace learned longer ago than this is not taken: the limit may have changed since.
const RECENT: Duration = Duration::from_secs(15 * 60);
/// How far a row's clock may run ahead of the database's before it is not believed.
const CLOCK_SLACK: Duration = Duration::from_secs(60);
/// The longest a read for the learner may hold calls (a reopened gate waits for the verdict).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The most replicas a pace is divided among: far past any deployment; the floor decides then.
const MOST_REPLICAS: u32 = 1000;

/// What a row may be trusted for.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub endpoint: Endpoint,
    /// How long the gate stays closed from now, if it does.
    pub closed_for: Option<Duration>,
    /// How long ago the row was written (when its closing began, if it has one).
    pub written: Duration,
    /// The pace and the rate it climbs back towards.
    pub learned: Option<(f64, f64)>,
    /// What was wrong with the row, for the warning.
    pub problems: Vec<String>,
}

/// Checks a row against what a gate can hold: `ceiling` is `marketplace.retry_after_ceiling`.
/// `None` for a row of no known endpoint group.
pub fn check(row: &RateGateRow, ceiling: Duration) -> Option<Checked> {
    let endpoint = Endpoint::parse(&row.api_group)?;
    let mut checked = Checked {
        endpoint,
        closed_for: None,
        written: Duration::try_from_secs_f64(row.age_seconds).unwrap_or_default(),
        learned: None,
        problems: Vec::new(),
    };
    let ahead = -row.age_seconds;
    if !ahead.is_finite() || ahead > CLOCK_SLACK.as_secs_f64() {
        checked.problems.push(format!(
            "written {ahead:.0} s ahead of the database's clock (a replica with another clock?)"
        ));
        return Some(checked);
    }
    match row.closed_for_seconds {
        Some(wait) if wait.is_finite() && wait > ceiling.as_secs_f64() => {
            checked.problems.push(format!(
                "closed for {wait:.0} s more, past marketplace.retry_after_ceiling ({})",
                humantime::format_duration(ceiling)
            ));
        }
        Some(wait) if wait.is_finite() && wait > 0.0 => {
            checked.closed_for = Some(Duration::from_secs_f64(wait));
        }
        Some(wait) if !wait.is_finite() => {
            checked
                .problems
                .push("closed_until is not a time".to_owned());
        }
        _ => {}
    }
    let rate_ok = |rate: f64| rate.is_finite() && (FLOOR..CEILING).contains(&rate);
    match (row.learned_rate, row.last_max_rate) {
        (Some(rate), Some(w_max)) if rate_ok(rate) && rate_ok(w_max) => {
            if row.age_seconds <= RECENT.as_secs_f64() {
                checked.learned = Some((rate, w_max));
            }
        }
        (None, None) => {}
        (rate, w_max) => checked.problems.push(format!(
            "learned_rate {rate:?} and last_max_rate {w_max:?} are no pace (both between {FLOOR} and {CEILING} requests/s)"
        )),
    }
    Some(checked)
}

/// The start of a run, and the first call of each group in it: takes the closings still under
/// way and the paces learned recently (of `only` that group, if given).
pub async fn load(gate: &Gate, pool: &PgPool, shop: &str, only: Option<Endpoint>) {
    let rows = read(gate, pool, shop).await.into_iter();
    for checked in rows.filter(|checked| only.is_none_or(|only| only == checked.endpoint)) {
        take(gate, &checked);
        if let Some((rate, w_max)) = checked.learned
            && gate.adopt(checked.endpoint, rate, w_max)
        {
            tracing::info!(
                endpoint = %checked.endpoint,
                rate,
                limit = w_max,
                "starting {} at the pace learned recently: {rate:.2} requests/s, climbing towards {w_max:.2}",
                checked.endpoint
            );
        }
    }
}

/// Writes what this process knows of `endpoint`.
pub async fn save(gate: &Gate, pool: &PgPool, shop: &str, endpoint: Endpoint, updated_by: &str) {
    let shared = gate.shared(endpoint);
    let closed_for_seconds = shared.closed_until.map(|until| {
        until
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_secs_f64()
    });
    let row = NewRateGate {
        shop,
        api_group: endpoint.as_str(),
        closed_for_seconds,
        learned: shared.learned,
        updated_by,
    };
    if let Err(err) = rate_gates::save(pool, &row).await {
        tracing::warn!(endpoint = %endpoint, error = %err, "could not share the {endpoint} rate gate with the other replicas in rate_gates; this process goes by its own gate");
    }
}

/// Counts the runs of the shop live now and tells the gate: the replicas its learned paces are
/// shared among. One when they cannot be counted: this process goes by its own gate.
pub async fn count_replicas(gate: &Gate, pool: &PgPool, shop: &str) {
    let counted = tokio::time::timeout(READ_TIMEOUT, rate_gates::live_runs(pool, shop)).await;
    let count = match counted {
        Ok(Ok(live)) => u32::try_from(live)
            .unwrap_or(MOST_REPLICAS)
            .clamp(1, MOST_REPLICAS),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not count the live runs of the shop (acceptance_runs); this process paces as if it ran alone and goes by its own gate");
            1
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = READ_TIMEOUT.as_millis() as u64,
                "counting the live runs of the shop (acceptance_runs) took too long; this process paces as if it ran alone and goes by its own gate"
            );
            1
        }
    };
    let before = gate.replicas();
    gate.set_replicas(count);
    if count != before {
        tracing::info!(
            replicas = count,
            "{count} run(s) of the shop live: learned paces are shared among them"
        );
    }
}

/// What the gate reads the shop's answers with: every replica's `api_calls` rows.
pub fn shop_answers(pool: PgPool, shop: String) -> Box<ShopAnswers> {
    Box::new(move |endpoint, from, to| {
        let (pool, shop) = (pool.clone(), shop.clone());
        Box::pin(async move { read_answers(&pool, &shop, endpoint, from, to).await })
    })
}

async fn read_answers(
    pool: &PgPool,
    shop: &str,
    endpoint: Endpoint,
    from: Duration,
    to: Duration,
) -> Option<Evidence> {
    let read = rate_gates::answers(
        pool,
        shop,
        endpoint.as_str(),
        from.as_secs_f64(),
        to.as_secs_f64(),
    );
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(answers)) => Some(Evidence {
            served: u64::try_from(answers.served).unwrap_or(0),
            throttled: u64::try_from(answers.throttled).unwrap_or(0),
        }),
        Ok(Err(err)) => {
            tracing::warn!(endpoint = %endpoint, error = %err, "could not read the shop's recent {endpoint} answers (api_calls); this closing is judged by this process's own answers");
            None
        }
        Err(_) => {
            tracing::warn!(endpoint = %endpoint, timeout_ms = READ_TIMEOUT.as_millis() as u64, "reading the shop's recent {endpoint} answers (api_calls) took too long; this closing is judged by this process's own answers");
            None
        }
    }
}

async fn read(gate: &Gate, pool: &PgPool, shop: &str) -> Vec<Checked> {
    let rows = match rate_gates::load(pool, shop).await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(error = %err, "could not read the shared rate gates (rate_gates); this process goes by its own gate");
            return Vec::new();
        }
    };
    rows.iter()
        .filter_map(|row| {
            let checked = check(row, gate.ceiling())?;
            if !checked.problems.is_empty() {
                tracing::warn!(
                    endpoint = %checked.endpoint,
                    written_by = %row.updated_by,
                    problems = %checked.problems.join("; "),
                    "ignoring what rate_gates says of {}: {}; this process goes by its own gate (the row is rewritten at the next closing)",
                    checked.endpoint,
                    checked.problems.join("; ")
                );
            }
            Some(checked)
        })
        .collect()
}

fn take(gate: &Gate, checked: &Checked) {
    let Some(wait) = checked.closed_for else {
        return;
    };
    if gate.hold(checked.endpoint, wait, checked.written) {
        tracing::info!(
            endpoint = %checked.endpoint,
            wait_ms = wait.as_millis() as u64,
            "another replica was told to hold back {} calls: this process waits with it",
            checked.endpoint
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> RateGateRow {
        RateGateRow {
            api_group: "OR21".into(),
            closed_for_seconds: Some(3.0),
            learned_rate: Some(3.5),
            last_max_rate: Some(5.0),
            age_seconds: 2.0,
            updated_by: "replica-2".into(),
        }
    }

    const CEILING_10M: Duration = Duration::from_secs(600);

    #[test]
    fn a_sound_row_is_taken_whole() {
        let checked = check(&row(), CEILING_10M).expect("OR21");
        assert_eq!(checked.endpoint, Endpoint::OR21);
        assert_eq!(checked.closed_for, Some(Duration::from_secs(3)));
        assert_eq!(checked.written, Duration::from_secs(2));
        assert_eq!(checked.learned, Some((3.5, 5.0)));
        assert!(checked.problems.is_empty());
    }

    #[test]
    fn a_row_of_another_clock_is_ignored_whole() {
        let checked = check(
            &RateGateRow {
                age_seconds: -7200.0,
                ..row()
            },
            CEILING_10M,
        )
        .expect("OR21");
        assert_eq!((checked.closed_for, checked.learned), (None, None));
        assert!(checked.problems[0].contains("another clock"), "{checked:?}");
    }

    #[test]
    fn absurd_values_are_ignored_and_named() {
        let far = check(
            &RateGateRow {
                closed_for_seconds: Some(86_400.0 * 365.0),
                ..row()
            },
            CEILING_10M,
        )
        .expect("OR21");
        assert_eq!(far.closed_for, None);
        assert_eq!(far.learned, Some((3.5, 5.0)), "the pace is still sound");
        assert!(far.problems[0].contains("retry_after_ceiling"), "{far:?}");

        for (rate, w_max) in [
            (Some(f64::NAN), Some(5.0)),
            (Some(-1.0), Some(5.0)),
            (Some(1e12), Some(1e12)),
            (Some(0.1), Some(5.0)),
            (Some(3.0), None),
        ] {
            let checked = check(
                &RateGateRow {
                    learned_rate: rate,
                    last_max_rate: w_max,
                    ..row()
                },
                CEILING_10M,
            )
            .expect("OR21");
            assert_eq!(checked.learned, None, "{rate:?} {w_max:?}");
            assert_eq!(checked.problems.len(), 1, "{rate:?} {w_max:?}");
        }
    }

    #[test]
    fn an_old_pace_and_a_past_closing_are_nothing_to_go_by() {
        let checked = check(
            &RateGateRow {
                closed_for_seconds: Some(-30.0),
                age_seconds: 3600.0,
                ..row()
            },
            CEILING_10M,
        )
        .expect("OR21");
        assert_eq!((checked.closed_for, checked.learned), (None, None));
        assert!(checked.problems.is_empty(), "stale is not wrong");
        let unknown = RateGateRow {
            api_group: "P11".into(),
            ..row()
        };
        assert_eq!(check(&unknown, CEILING_10M), None);
    }
}
