//! The rate gate: one per endpoint group (OR11, OR21, A01), shared by every call of the process.
//!
//! A 429 (or a 503 with `Retry-After`) closes its group's gate until the time the marketplace
//! named; every call of that group waits at the gate before it is sent, so one answer holds back
//! all of them instead of each call backing off alone. The waits of one run are bounded:
//! closings are charged to the run's allowance (`marketplace.retry_after_ceiling`), and one that
//! would go past it is refused — the call fails as transient and no call of the group is sent
//! until the time named. An optional pace (`marketplace.max_requests_per_second`) spaces the
//! calls of each group evenly.
//!
//! A marketplace that publishes no limit still shows it: with `marketplace.learn_pace`, each
//! closing sets a learned pace for its group, nine tenths of the rate at which the group's requests were answered since its gate
//! last opened. Honouring a long `Retry-After` in full would otherwise cost a whole wait per
//! burst: the calls held back all go when the gate opens, and the next 429 follows at once. The
//! learned pace only slows down, and starts afresh with each run.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::error::Endpoint;
use crate::config::GateSettings;

pub struct Gate {
    or11: Group,
    or21: Group,
    a01: Group,
    ceiling: Duration,
    /// `marketplace.learn_pace`.
    learns: bool,
    /// Closed time charged to the current run: the union of all groups' closings, since a call
    /// waits through overlapping closings at once.
    charged: Mutex<Charged>,
}

#[derive(Default, Clone, Copy)]
struct Charged {
    total: Duration,
    /// The end of the latest closing charged: time before it is paid for already.
    until: Option<Instant>,
}

struct Group {
    closing: Mutex<Closing>,
    pace: Option<DefaultDirectRateLimiter>,
    closings: AtomicU64,
    learned: Mutex<Learned>,
}

/// What the group's answers taught this run about the marketplace's limit.
struct Learned {
    /// Requests of the group answered without throttling since `since`.
    answered: u64,
    /// When the gate last opened, or when the run's first answer came: the start of the window
    /// the rate is measured over (time before the group's first call says nothing of its limit).
    since: Option<Instant>,
    /// When the latest closing began, until the gate reopens: the answers to requests already
    /// on their way are still coming in, and count for the window that ended then.
    window_end: Option<Instant>,
    /// Requests per second, and the pace that keeps to it.
    pace: Option<(f64, Arc<DefaultDirectRateLimiter>)>,
}

impl Learned {
    fn fresh() -> Self {
        Learned {
            answered: 0,
            since: None,
            window_end: None,
            pace: None,
        }
    }
}

/// The share of the answered rate a learned pace keeps to: a little under it, so the bucket the
/// marketplace keeps refills faster than it drains.
const LEARNED_SHARE: f64 = 0.9;

/// The group's latest closing.
#[derive(Default, Clone, Copy)]
struct Closing {
    /// When the latest closing began: answers to requests sent before it belong to it.
    began: Option<Instant>,
    until: Option<Instant>,
    /// False when the wait was refused as past the ceiling: calls fail at once until `until`.
    honoured: bool,
}

/// A call may go: when it went, and how long it waited at the gate.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub sent_at: Instant,
    pub waited: Duration,
}

/// The marketplace asked for a wait past `marketplace.retry_after_ceiling`.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub until: SystemTime,
    pub ceiling: Duration,
}

impl Refused {
    /// Why the call fails, for its error message.
    pub fn describe(&self) -> String {
        format!(
            "the marketplace asked to wait until {}, past what marketplace.retry_after_ceiling ({}) \
             leaves this run for waits at closed gates; nothing was sent",
            humantime::format_rfc3339_seconds(self.until),
            humantime::format_duration(self.ceiling)
        )
    }
}

impl Gate {
    pub fn new(settings: &GateSettings) -> Self {
        let group = || Group {
            closing: Mutex::new(Closing::default()),
            pace: settings.max_requests_per_second.map(pace),
            closings: AtomicU64::new(0),
            learned: Mutex::new(Learned::fresh()),
        };
        Gate {
            or11: group(),
            or21: group(),
            a01: group(),
            ceiling: settings.retry_after_ceiling,
            learns: settings.learn_pace,
            charged: Mutex::new(Charged::default()),
        }
    }

    /// A new run starts with the whole allowance, less what closings still under way will hold.
    pub fn start_run(&self) {
        let now = Instant::now();
        let until = [&self.or11, &self.or21, &self.a01]
            .into_iter()
            .filter_map(|group| {
                let closing = *lock(&group.closing);
                closing.honoured.then_some(closing.until?)
            })
            .filter(|until| *until > now)
            .max();
        *lock(&self.charged) = Charged {
            total: until.map_or(Duration::ZERO, |until| until - now),
            until,
        };
        for group in [&self.or11, &self.or21, &self.a01] {
            *lock(&group.learned) = Learned::fresh();
        }
    }

    /// A request of the group was answered without throttling: it counts towards the rate the
    /// marketplace allows.
    pub fn answered(&self, endpoint: Endpoint) {
        let mut learned = lock(&self.group(endpoint).learned);
        learned.answered += 1;
        learned.since.get_or_insert_with(Instant::now);
    }

    /// The learned pace of the group, in requests per second, if a closing set one this run.
    pub fn learned_rate(&self, endpoint: Endpoint) -> Option<f64> {
        lock(&self.group(endpoint).learned)
            .pace
            .as_ref()
            .map(|(rate, _)| *rate)
    }

    /// How many times the group's gate has closed: a new closing is a new throttling event.
    pub fn closings(&self, endpoint: Endpoint) -> u64 {
        self.group(endpoint).closings.load(Ordering::Relaxed)
    }

    /// Waits until the group's gate is open and the pace allows one more request.
    pub async fn pass(&self, endpoint: Endpoint) -> Result<Pass, Refused> {
        let group = self.group(endpoint);
        let started = Instant::now();
        loop {
            let closing = *lock(&group.closing);
            match closing.until {
                Some(until) if until > Instant::now() && !closing.honoured => {
                    return Err(self.refused(until));
                }
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
                _ => {}
            }
            if let Some(rate) = learn(group) {
                metrics::gauge!("marketplace_learned_rate_per_second", "endpoint" => endpoint.as_str())
                    .set(rate);
            }
            if let Some(pace) = &group.pace {
                pace.until_ready().await;
            }
            let learned = lock(&group.learned)
                .pace
                .as_ref()
                .map(|(_, pace)| Arc::clone(pace));
            if let Some(pace) = learned {
                pace.until_ready().await;
            }
            // The gate may have closed while this call waited for its turn.
            if lock(&group.closing)
                .until
                .is_none_or(|until| until <= Instant::now())
            {
                break;
            }
        }
        let waited = started.elapsed();
        if !waited.is_zero() {
            metrics::histogram!("marketplace_gate_wait_duration_seconds", "endpoint" => endpoint.as_str())
                .record(waited.as_secs_f64());
        }
        Ok(Pass {
            sent_at: Instant::now(),
            waited,
        })
    }

    /// True when the gate has closed since `sent_at`: a throttled answer to that request is
    /// part of that closing, not a new one.
    pub fn closed_since(&self, endpoint: Endpoint, sent_at: Instant) -> bool {
        lock(&self.group(endpoint).closing)
            .began
            .is_some_and(|began| began >= sent_at)
    }

    /// Closes the group's gate for `wait` from now, or extends the closing under way. Refused
    /// (and the gate kept shut, so no call is sent until then) when the run's allowance cannot
    /// cover it.
    pub fn close(&self, endpoint: Endpoint, wait: Duration) -> Result<(), Refused> {
        let group = self.group(endpoint);
        let now = Instant::now();
        let until = now + wait;
        let mut closing = lock(&group.closing);
        let open_from = match closing.until {
            Some(current) if current > now => current,
            _ => now,
        };
        let fresh = open_from == now;
        if until <= open_from {
            return Ok(());
        }
        if !self.charge(now, until) {
            *closing = Closing {
                began: if fresh { Some(now) } else { closing.began },
                until: Some(until),
                honoured: false,
            };
            return Err(self.refused(until));
        }
        if fresh {
            *closing = Closing {
                began: Some(now),
                until: Some(until),
                honoured: true,
            };
            drop(closing);
            if self.learns {
                lock(&group.learned).window_end.get_or_insert(now);
            }
            group.closings.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("marketplace_gate_closings_total", "endpoint" => endpoint.as_str())
                .increment(1);
            tracing::warn!(
                endpoint = %endpoint,
                until = %humantime::format_rfc3339_millis(SystemTime::now() + wait),
                wait_ms = wait.as_millis() as u64,
                "the marketplace is throttling {endpoint}: every {endpoint} call of this process waits at the gate until then before sending or retrying"
            );
        } else {
            closing.until = Some(until);
        }
        Ok(())
    }

    /// Adds the part of `now..until` not charged yet to the run's closed time, unless that goes
    /// past the ceiling.
    fn charge(&self, now: Instant, until: Instant) -> bool {
        let mut charged = lock(&self.charged);
        let from = charged
            .until
            .map_or(now, |charged_until| charged_until.max(now));
        let more = until.saturating_duration_since(from);
        if charged.total + more > self.ceiling {
            return false;
        }
        charged.total += more;
        charged.until = Some(
            charged
                .until
                .map_or(until, |charged_until| charged_until.max(until)),
        );
        true
    }

    fn refused(&self, until: Instant) -> Refused {
        Refused {
            until: SystemTime::now() + until.saturating_duration_since(Instant::now()),
            ceiling: self.ceiling,
        }
    }

    fn group(&self, endpoint: Endpoint) -> &Group {
        match endpoint {
            Endpoint::OR11 => &self.or11,
            Endpoint::OR21 => &self.or21,
            Endpoint::A01 => &self.a01,
        }
    }
}

/// After a closing, once the gate is open again: sets the group's learned pace from the rate its
/// requests were answered at between its previous opening and this closing (over a second at
/// least, so a burst does not read as a rate), never faster than before, and starts counting
/// again. `None` when there is nothing new to learn.
fn learn(group: &Group) -> Option<f64> {
    let mut learned = lock(&group.learned);
    let end = learned.window_end.take()?;
    let window = learned
        .since
        .map_or(Duration::ZERO, |since| end.saturating_duration_since(since))
        .max(Duration::from_secs(1));
    let answered = std::mem::take(&mut learned.answered);
    learned.since = Some(Instant::now());
    if answered == 0 {
        return None;
    }
    let observed = (answered as f64 / window.as_secs_f64() * LEARNED_SHARE).max(MIN_LEARNED_RATE);
    let rate = learned
        .pace
        .as_ref()
        .map_or(observed, |(before, _)| before.min(observed));
    learned.pace = Some((rate, Arc::new(pace(rate))));
    Some(rate)
}

/// The slowest a learned pace goes: one request every 10 s still finds out when the limit eases.
const MIN_LEARNED_RATE: f64 = 0.1;

/// One request every 1/rate seconds, without bursts: a marketplace's published limit is a rate.
fn pace(rate: f64) -> DefaultDirectRateLimiter {
    // The config check keeps the rate within 0.01..=10 000, so the period is a valid one.
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

/// The gate's state stays consistent across a panic elsewhere: every update is one assignment.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(ceiling: Duration) -> Gate {
        Gate::new(&GateSettings {
            retry_after_ceiling: ceiling,
            max_requests_per_second: None,
            learn_pace: true,
        })
    }

    #[test]
    fn closings_of_all_groups_share_the_run_allowance() {
        let gate = gate(Duration::from_secs(3));
        assert!(gate.close(Endpoint::OR21, Duration::from_secs(2)).is_ok());
        assert!(
            gate.close(Endpoint::A01, Duration::from_secs(2)).is_ok(),
            "overlapping closings are charged once: 2 s in all"
        );
        let refused = gate.close(Endpoint::OR11, Duration::from_secs(4));
        assert!(refused.is_err(), "4 s from now is past the 3 s ceiling");
        assert_eq!(gate.closings(Endpoint::OR21), 1);
        assert_eq!(
            gate.closings(Endpoint::OR11),
            0,
            "a refused wait is no closing"
        );
    }

    #[test]
    fn a_new_run_gets_the_allowance_back_less_the_closings_under_way() {
        let gate = gate(Duration::from_secs(10));
        assert!(gate.close(Endpoint::OR21, Duration::from_secs(6)).is_ok());
        gate.start_run();
        // Nearly 6 s of the OR21 closing are still ahead: a closing to 9 s from now adds about
        // 3 s and fits the 10 s; one to 11 s from now would add 2 s more and does not.
        assert!(gate.close(Endpoint::A01, Duration::from_secs(9)).is_ok());
        assert!(gate.close(Endpoint::OR11, Duration::from_secs(11)).is_err());
    }

    #[test]
    fn a_closing_learns_nine_tenths_of_the_answered_rate_and_only_slows_down() {
        let gate = gate(Duration::from_secs(600));
        gate.start_run();
        for _ in 0..10 {
            gate.answered(Endpoint::OR21);
        }
        assert!(gate.close(Endpoint::OR21, Duration::from_secs(5)).is_ok());
        assert_eq!(
            gate.learned_rate(Endpoint::OR21),
            None,
            "learned when the gate reopens"
        );
        // An answer to a request sent before the closing still counts for the window it ended.
        gate.answered(Endpoint::OR21);
        let reopened = learn(&gate.or21).expect("a pace");
        let learned = gate.learned_rate(Endpoint::OR21).expect("a pace");
        assert_eq!(reopened, learned);
        assert!(
            (learned - 9.9).abs() < 1e-9,
            "11 answers within a second: {learned}"
        );
        assert_eq!(
            gate.learned_rate(Endpoint::OR11),
            None,
            "each group learns its own"
        );

        for _ in 0..100 {
            gate.answered(Endpoint::OR21);
        }
        lock(&gate.or21.learned).window_end = Some(Instant::now());
        assert_eq!(
            learn(&gate.or21),
            Some(learned),
            "a faster rate later does not speed the pace up"
        );
        assert_eq!(
            learn(&gate.or21),
            None,
            "no closing since, nothing to learn"
        );
        assert_eq!(gate.learned_rate(Endpoint::OR21), Some(learned));

        gate.start_run();
        assert_eq!(
            gate.learned_rate(Endpoint::OR21),
            None,
            "each run starts afresh"
        );
    }

    #[test]
    fn without_learn_pace_a_closing_teaches_nothing() {
        let gate = Gate::new(&GateSettings {
            retry_after_ceiling: Duration::from_secs(600),
            max_requests_per_second: None,
            learn_pace: false,
        });
        for _ in 0..10 {
            gate.answered(Endpoint::OR21);
        }
        assert!(gate.close(Endpoint::OR21, Duration::from_secs(5)).is_ok());
        assert_eq!(learn(&gate.or21), None);
        assert_eq!(gate.learned_rate(Endpoint::OR21), None);
    }

    #[test]
    fn an_answer_within_a_closing_extends_it_without_a_new_one() {
        let gate = gate(Duration::from_secs(60));
        let sent_at = Instant::now();
        assert!(!gate.closed_since(Endpoint::OR21, sent_at));
        assert!(gate.close(Endpoint::OR21, Duration::from_secs(1)).is_ok());
        assert!(gate.closed_since(Endpoint::OR21, sent_at));
        assert!(gate.close(Endpoint::OR21, Duration::from_secs(2)).is_ok());
        assert_eq!(gate.closings(Endpoint::OR21), 1);
    }
}
