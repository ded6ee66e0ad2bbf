//! When to try a marketplace call again, and how long to wait first.
//!
//! The delays come from backon's exponential back-off with jitter. The loop itself lives in the
//! client (one visible `loop`, not a combinator chain) because two things backon's `Retryable`
//! does not model cleanly decide each wait: a throttled answer's wait is spent at the shared rate
//! gate (`gate.rs`), for its `Retry-After` in full, and the budget counts wall-clock time
//! (attempts included) except the time spent at the gate.

use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::RetrySettings;

/// The retry settings of one client, shared by all its calls.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    builder: ExponentialBuilder,
    max_delay: Duration,
    budget: Duration,
}

impl RetryPolicy {
    pub fn new(settings: &RetrySettings) -> Self {
        let retries = settings.attempts.saturating_sub(1) as usize;
        let builder = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(settings.initial_delay)
            .with_max_delay(settings.max_delay)
            .with_max_times(retries);
        RetryPolicy {
            builder,
            max_delay: settings.max_delay,
            budget: settings.budget,
        }
    }

    /// A fresh schedule for one call, starting now.
    pub fn start(&self) -> RetrySchedule {
        RetrySchedule {
            backoff: self.builder.build(),
            max_delay: self.max_delay,
            budget: self.budget,
            started: Instant::now(),
            at_gate: Duration::ZERO,
        }
    }
}

/// The remaining retries of one call.
#[derive(Debug)]
pub struct RetrySchedule {
    backoff: ExponentialBackoff,
    max_delay: Duration,
    budget: Duration,
    started: Instant,
    /// Time spent waiting at the rate gate: not counted against the budget.
    at_gate: Duration,
}

impl RetrySchedule {
    /// How long to sleep before the next attempt, or `None` when the attempts or the budget are
    /// used up. `retry_after` (from the marketplace) wins over the back-off delay; either is
    /// capped at `max_delay`. Throttled answers go through [`RetrySchedule::next_closing`].
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let backoff_delay = self.backoff.next()?;
        // backon's jitter adds up to one more delay on top, which may pass max_delay.
        let delay = retry_after.unwrap_or(backoff_delay).min(self.max_delay);
        if self.spent() + delay > self.budget {
            return None;
        }
        Some(delay)
    }

    /// After a throttled answer (429, or 503 with `Retry-After`): uses up an attempt and says
    /// how long the gate stays closed — the marketplace's `Retry-After` in full (the gate
    /// applies the ceiling), else the back-off delay. `None` when the attempts or the budget
    /// are used up. The wait itself is spent at the gate, so it does not count.
    pub fn next_closing(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let backoff_delay = self.backoff.next()?;
        if !self.within_budget() {
            return None;
        }
        Some(retry_after.unwrap_or_else(|| backoff_delay.min(self.max_delay)))
    }

    /// Takes time spent waiting at the gate off the budget.
    pub fn waited_at_gate(&mut self, waited: Duration) {
        self.at_gate += waited;
    }

    pub fn within_budget(&self) -> bool {
        self.spent() <= self.budget
    }

    fn spent(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.at_gate)
    }
}

/// Reads `Retry-After` in either form HTTP allows: delay-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        // A date in the past means "now".
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    // Past any ceiling either way; capped so that adding it to a clock can never overflow.
    Some(wait.min(LONGEST_RETRY_AFTER))
}

/// The longest `Retry-After` taken as given: a day, far past any sensible ceiling.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn settings(attempts: u32, budget: Duration) -> RetrySettings {
        RetrySettings {
            attempts,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            budget,
        }
    }

    #[test]
    fn attempts_count_the_first_one() {
        let mut schedule = RetryPolicy::new(&settings(3, Duration::from_secs(60))).start();
        assert!(schedule.next_delay(None).is_some());
        assert!(schedule.next_delay(None).is_some());
        assert_eq!(schedule.next_delay(None), None);
    }

    #[test]
    fn delays_are_capped_and_retry_after_wins() {
        let mut schedule = RetryPolicy::new(&settings(10, Duration::from_secs(60))).start();
        for _ in 0..5 {
            let delay = schedule.next_delay(None).unwrap();
            assert!(delay <= Duration::from_millis(40), "{delay:?}");
        }
        assert_eq!(
            schedule.next_delay(Some(Duration::from_millis(25))),
            Some(Duration::from_millis(25))
        );
        assert_eq!(
            schedule.next_delay(Some(Duration::from_secs(3600))),
            Some(Duration::from_millis(40))
        );
    }

    #[test]
    fn a_closing_honours_retry_after_in_full_and_uses_an_attempt() {
        let mut schedule = RetryPolicy::new(&settings(3, Duration::from_secs(60))).start();
        assert_eq!(
            schedule.next_closing(Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(3600)),
            "not capped at max_delay: the gate applies the ceiling"
        );
        let backoff = schedule.next_closing(None).unwrap();
        assert!(backoff <= Duration::from_millis(40), "{backoff:?}");
        assert_eq!(schedule.next_closing(Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn the_budget_stops_retries() {
        let mut schedule = RetryPolicy::new(&settings(10, Duration::from_millis(5))).start();
        assert_eq!(schedule.next_delay(None), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));

        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));

        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&earlier).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));

        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("10000000000000000000"),
        );
        assert_eq!(retry_after(&headers, now), Some(LONGEST_RETRY_AFTER));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }
}
