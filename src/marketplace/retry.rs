//! When to try a marketplace call again, and how long to wait first.
//!
//! The delays come from backon's exponential back-off with jitter. The loop itself lives in the
//! client (one visible `loop`, not a combinator chain) because two things backon's `Retryable`
//! does not model cleanly decide each wait: the marketplace's `Retry-After` replaces the
//! back-off delay, and the budget counts wall-clock time (attempts included), not only sleeps.

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
}

impl RetrySchedule {
    /// How long to wait before the next attempt, or `None` when the attempts or the budget are
    /// used up. `retry_after` (from the marketplace) wins over the back-off delay; either is
    /// capped at `max_delay` so a hostile or mistaken header cannot park a run for hours.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let backoff_delay = self.backoff.next()?;
        // backon's jitter adds up to one more delay on top, which may pass max_delay.
        let delay = retry_after.unwrap_or(backoff_delay).min(self.max_delay);
        if self.started.elapsed() + delay > self.budget {
            return None;
        }
        Some(delay)
    }
}

/// Reads `Retry-After` in either form HTTP allows: delay-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "now".
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

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

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }
}
