//! Adaptive OR21 concurrency: additive increase, multiplicative decrease (AIMD) on a semaphore.
//!
//! The limit starts at `acceptance.concurrency`, halves on each OR21 throttling event (a closing
//! the rate learner takes for a limit, however many answers it took; every closing with the
//! learner off), and grows back by one after each window of
//! as many finished calls as the limit, never above where it started, never below 1. Calls hold
//! a [`Slot`] while they work; a lower limit takes effect as slots come back.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct AdaptiveLimit {
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
    max: u32,
    /// The `shop` label of the limit's gauge.
    shop: String,
}

struct State {
    limit: u32,
    /// Calls finished since the last change: a window ends when it reaches the limit.
    finished: u32,
    /// Permits to retire as they come back, because a decrease found them in use.
    owed: u32,
    /// The gate closings seen so far.
    closings: u64,
}

/// Leave to make one call; gives the permit back (or retires it) when dropped.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
}

impl AdaptiveLimit {
    /// A limit of shop `shop` starting at `max`; `closings` is the gate's count of throttling
    /// events now, so earlier ones do not count against this limit.
    pub fn new(max: u32, closings: u64, shop: &str) -> Self {
        let max = max.max(1);
        let limit = AdaptiveLimit {
            semaphore: Arc::new(Semaphore::new(max as usize)),
            state: Mutex::new(State {
                limit: max,
                finished: 0,
                owed: 0,
                closings,
            }),
            max,
            shop: shop.to_string(),
        };
        limit.publish(max);
        limit
    }

    /// Waits until fewer calls than the limit are under way.
    pub async fn acquire(&self) -> Slot {
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.semaphore).acquire_owned().await.ok();
        Slot { permit }
    }

    /// Ends a call: `closings` is the gate's count of throttling events now. A new one halves
    /// the limit, else the call counts towards the window that raises it by one.
    pub fn finish(&self, slot: Slot, closings: u64) {
        let mut state = self.state();
        if closings > state.closings {
            state.closings = closings;
            state.finished = 0;
            let lower = (state.limit / 2).max(1);
            let cut = state.limit - lower;
            state.limit = lower;
            let retired = self.semaphore.forget_permits(cut as usize) as u32;
            state.owed += cut - retired;
            if cut > 0 {
                tracing::info!(limit = lower, "OR21 throttled: concurrency limit halved");
            }
        } else if state.limit < self.max {
            state.finished += 1;
            if state.finished >= state.limit {
                state.finished = 0;
                state.limit += 1;
                if state.owed > 0 {
                    state.owed -= 1;
                } else {
                    self.semaphore.add_permits(1);
                }
            }
        }
        if state.owed > 0 {
            state.owed -= 1;
            if let Some(permit) = slot.permit {
                permit.forget();
            }
        } else {
            drop(slot);
        }
        self.publish(state.limit);
    }

    fn publish(&self, limit: u32) {
        metrics::gauge!("acceptance_or21_concurrency_limit", "shop" => self.shop.clone())
            .set(f64::from(limit));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    impl AdaptiveLimit {
        fn current(&self) -> u32 {
            self.state().limit
        }
    }

    async fn finish_calls(limit: &AdaptiveLimit, n: u32, closings: u64) {
        for _ in 0..n {
            let slot = limit.acquire().await;
            limit.finish(slot, closings);
        }
    }

    #[tokio::test]
    async fn halves_on_a_closing_and_grows_back_by_one_per_window() {
        let limit = AdaptiveLimit::new(16, 0, "default");
        assert_eq!(limit.current(), 16);

        finish_calls(&limit, 1, 1).await;
        assert_eq!(limit.current(), 8);
        finish_calls(&limit, 1, 2).await;
        assert_eq!(limit.current(), 4);

        // One window of 4 finished calls raises it to 5, the next 5 to 6.
        finish_calls(&limit, 3, 2).await;
        assert_eq!(limit.current(), 4);
        finish_calls(&limit, 1, 2).await;
        assert_eq!(limit.current(), 5);
        finish_calls(&limit, 5, 2).await;
        assert_eq!(limit.current(), 6);

        // Back at the start it stays there.
        finish_calls(&limit, 200, 2).await;
        assert_eq!(limit.current(), 16);
        assert_eq!(limit.semaphore.available_permits(), 16);
    }

    #[tokio::test]
    async fn never_below_one_and_one_closing_halves_once() {
        let limit = AdaptiveLimit::new(4, 10, "default");
        for closings in 11..20 {
            finish_calls(&limit, 1, closings).await;
        }
        assert_eq!(limit.current(), 1);
        // Many calls reporting the same closing halve nothing more.
        let limit = AdaptiveLimit::new(8, 0, "default");
        finish_calls(&limit, 3, 1).await;
        assert_eq!(limit.current(), 4);
    }

    #[tokio::test]
    async fn a_decrease_takes_effect_as_slots_in_use_come_back() {
        let limit = AdaptiveLimit::new(4, 0, "default");
        let mut slots = Vec::new();
        for _ in 0..4 {
            slots.push(limit.acquire().await);
        }
        let mut slots = slots.into_iter();
        limit.finish(slots.next().expect("a slot"), 1);
        assert_eq!(limit.current(), 2);
        assert_eq!(limit.semaphore.available_permits(), 0, "3 calls still out");
        for slot in slots {
            limit.finish(slot, 1);
        }
        assert_eq!(
            limit.semaphore.available_permits() as u32,
            limit.current(),
            "with every call back, the permits are the limit"
        );
    }

    #[tokio::test]
    async fn the_gauge_shows_the_current_limit() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let limit =
            metrics::with_local_recorder(&recorder, || AdaptiveLimit::new(16, 0, "default"));
        assert!(
            metrics
                .render()
                .contains(r#"acceptance_or21_concurrency_limit{shop="default"} 16"#),
            "{}",
            metrics.render()
        );
        let slot = limit.acquire().await;
        metrics::with_local_recorder(&recorder, || limit.finish(slot, 1));
        assert!(
            metrics
                .render()
                .contains(r#"acceptance_or21_concurrency_limit{shop="default"} 8"#),
            "{}",
            metrics.render()
        );
    }
}
