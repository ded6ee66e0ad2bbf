//! What the settings imply for the length of work: how long a run may hold an order and how long
//! validation may take. Derived here, once, so the lease check and the stages agree.

use std::time::Duration;

use super::Settings;

impl Settings {
    /// The longest a run can work on one claimed order before recording its outcome: its
    /// preflight read, the accept calls queued ahead of it (a run claims at most one batch ahead
    /// of the one being accepted), its own re-reads and re-sends after unclear OR21 answers, and
    /// its validation, which ends at [`Settings::validation_deadline`]; plus the time the rate
    /// gate may hold calls: closed gates at most
    /// `marketplace.retry_after_ceiling` per run, and the pace for the calls queued ahead.
    /// The accept rounds are counted at `acceptance.concurrency`: after 429s the adaptive limit
    /// runs fewer calls at once, which this bound covers only while those calls stay quick.
    pub fn work_bound(&self) -> Duration {
        let call = self.marketplace.call_budget();
        let queued = self.acceptance.batch_size * 2;
        let accept_rounds = queued.div_ceil(self.acceptance.concurrency);
        call * (1 + accept_rounds)
            + self.resend_bound()
            + self.validation_deadline()
            + self.marketplace.gate.retry_after_ceiling
            + self.pace_bound(queued)
    }

    /// Re-sends of one order start within `marketplace.retry_budget` of its first OR21; the
    /// last one may wait for the re-read batch in flight, its own re-read, then take a call.
    fn resend_bound(&self) -> Duration {
        self.marketplace.retry.budget + self.marketplace.call_budget() * 3
    }

    /// How long the pace can hold one order's calls: behind the OR21 calls queued ahead of it,
    /// and behind one OR11 read per 100 of them at each validation tick.
    fn pace_bound(&self, queued: u32) -> Duration {
        let Some(rate) = self.marketplace.gate.max_requests_per_second else {
            return Duration::ZERO;
        };
        let reads = queued.div_ceil(100) * (self.validation.max_attempts + 2);
        Duration::from_secs_f64(f64::from(queued + reads) / rate)
    }

    /// How long after its 204 an order may wait for confirmation. Failed reads do not count as
    /// attempts, but they cannot stretch validation past this: an order still unconfirmed then
    /// is left for a later run, whose preflight reads its real state.
    pub fn validation_deadline(&self) -> Duration {
        self.validation
            .interval
            .saturating_mul(self.validation.max_attempts.saturating_add(1))
            .saturating_add(self.marketplace.call_budget())
    }
}
