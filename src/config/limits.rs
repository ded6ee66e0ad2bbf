//! What the settings imply for the length of work: how long validation may take, and how long a
//! run may go on sending after its last heartbeat. Derived here, once, so the config check and
//! the stages agree.

use std::time::Duration;

use super::Settings;

impl Settings {
    /// How long after its 204 an order may wait for confirmation. Failed reads do not count as
    /// attempts, but they cannot stretch validation past this: an order still unconfirmed then
    /// is left for a later run, whose preflight reads its real state.
    pub fn validation_deadline(&self) -> Duration {
        self.validation
            .interval
            .saturating_mul(self.validation.max_attempts.saturating_add(1))
            .saturating_add(self.marketplace.call_budget())
    }

    /// How much of the lease a run keeps back before its heartbeat runs out: one OR21 attempt
    /// sent at the last moment ends (answered or timed out) within `marketplace.timeout`, and a
    /// tenth of the lease covers the database round trips and scheduling around it. So an OR21 is
    /// always over before another run can take the order over.
    pub fn fence_margin(&self) -> Duration {
        self.marketplace
            .timeout
            .saturating_add(self.acceptance.lease / 10)
    }

    /// How long after a successful heartbeat a run may still send OR21: the lease less the fence
    /// margin (zero when the margin takes it all, which the config check refuses).
    pub fn fence_window(&self) -> Duration {
        self.acceptance.lease.saturating_sub(self.fence_margin())
    }
}
