//! The pace one endpoint group learns from the marketplace's throttling: a CUBIC rate curve in
//! the manner of the AWS SDKs' adaptive retry mode, told apart from sporadic 429s.
//!
//! Nothing is paced until a closing looks like a rate limit. When a closed gate reopens, the
//! answers of the second before the closing (and those of the requests still on their way)
//! decide: a small share throttled, or too few answers to tell (a group that calls now and then),
//! is a sporadic 429 and teaches nothing; a larger one is a
//! limit, and the rate the marketplace served over that second becomes the curve's plateau
//! (`w_max`). The pace starts again at [`BETA`] of it and climbs back along
//! `w_max + C·(t − K)³`: steep at first (most of the way back within a second or two), flat
//! near the plateau, then probing past it, so a limit that was raised is found again. The
//! plateau is held for [`HOLD_PER_CLOSED`] times the closing's length before probing, so that
//! a failed probe (which costs one closing) takes at most a twentieth of the time. A probe that
//! fails keeps the plateau (raised by what it found room for); a closing at or under the
//! plateau lowers it to what was served. The pace never goes under [`FLOOR`]; past [`CEILING`]
//! it stops.
//!
//! Every function takes the time as an argument, so the arithmetic is tested with a made-up
//! clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the pace is cut to on a limit, as a share of the rate served: AWS's CUBIC β.
pub const BETA: f64 = 0.7;
/// AWS's CUBIC scale constant, in requests per second per second cubed.
const C: f64 = 0.4;
/// The slowest a learned pace goes, in requests per second (the AWS SDKs' minimum too): a run
/// of a few hundred orders still ends, and the limit's easing is still seen.
pub const FLOOR: f64 = 0.5;
/// A pace past this is no pace: the learner stops, as before the first limit.
pub const CEILING: f64 = 10_000.0;
/// The trailing window of answers a closing is judged by.
const WINDOW: Duration = Duration::from_secs(1);
/// Under this share of throttled answers in the window, a closing is a sporadic 429: a limit
/// throttles most of what is in flight once its bucket is dry, while a stray 429 right after
/// another closing can be one of only a dozen answers in the second.
const SPORADIC_SHARE: f64 = 0.25;
/// A limit shows under load: with fewer answers than this in the window (a group that calls
/// now and then), a 429 is taken as sporadic and only the gate honours it.
const EVIDENCE: usize = 5;
/// Two limits this close (relative) are the same steady limit; a pace this far past the
/// plateau is a probe.
const SAME_LIMIT: f64 = 0.2;
/// How long a confirmed limit is held before probing, per second the closing lasted.
const HOLD_PER_CLOSED: u32 = 20;
/// The longest hold: a limit raised is found within a few minutes.
const LONGEST_HOLD: Duration = Duration::from_secs(300);
/// The longest a caller waits for the pace before looking at it again.
const RECHECK: Duration = Duration::from_millis(100);
/// At most this many answers are kept for the window (more than a second's worth at any pace
/// a marketplace allows).
const KEPT_ANSWERS: usize = 4096;

/// The rate curve after a limit: `w_max + C·(t − K)³` from `origin`, flat at `w_max` for
/// `hold` between the climb and the probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    pub w_max: f64,
    /// Seconds from `origin` to the plateau.
    k: f64,
    origin: Instant,
    hold: Duration,
}

impl Curve {
    /// A curve starting at `start` requests per second at `origin`, climbing to `w_max`.
    pub fn new(start: f64, w_max: f64, origin: Instant, hold: Duration) -> Curve {
        let w_max = w_max.clamp(FLOOR, CEILING);
        let start = start.clamp(FLOOR, w_max);
        Curve {
            w_max,
            k: ((w_max - start) / C).cbrt(),
            origin,
            hold,
        }
    }

    /// The pace at `now`, in requests per second.
    pub fn rate(&self, now: Instant) -> f64 {
        let t = now.saturating_duration_since(self.origin).as_secs_f64();
        let hold = self.hold.as_secs_f64();
        let x = if t < self.k {
            t - self.k
        } else if t < self.k + hold {
            0.0
        } else {
            t - self.k - hold
        };
        (self.w_max + C * x.powi(3)).max(FLOOR)
    }
}

/// What a closing taught.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Few answers throttled: a stray 429; nothing changes.
    Sporadic { share: f64 },
    /// A rate limit: the pace is cut to `rate` and climbs back towards `w_max`.
    Limit { rate: f64, w_max: f64, steady: bool },
}

#[derive(Debug, Default)]
pub struct Learner {
    /// Recent answers: when, and whether throttled.
    answers: VecDeque<(Instant, bool)>,
    curve: Option<Curve>,
    /// When the pace last let a request go.
    last_turn: Option<Instant>,
}

impl Learner {
    pub fn answered(&mut self, at: Instant, throttled: bool) {
        if self.answers.len() == KEPT_ANSWERS {
            self.answers.pop_front();
        }
        self.answers.push_back((at, throttled));
    }

    /// The pace now, if any.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        let rate = self.curve?.rate(now);
        if rate >= CEILING {
            self.curve = None;
            return None;
        }
        Some(rate)
    }

    pub fn curve(&self) -> Option<Curve> {
        self.curve
    }

    /// Starts from a curve learned elsewhere (another replica, an earlier run).
    pub fn adopt(&mut self, curve: Curve) {
        self.curve = Some(curve);
    }

    /// Takes the pace's turn for one request now (`Ok`, also when unpaced), or says when to ask
    /// again: at the next turn, or sooner, because the pace climbs while callers wait and a
    /// turn worked out at an old, slow rate would hold them too long.
    pub fn take_turn(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(rate) = self.rate(now) else {
            return Ok(());
        };
        let next = self
            .last_turn
            .map(|last| last + Duration::from_secs_f64(1.0 / rate));
        match next {
            Some(next) if next > now => Err(next.min(now + RECHECK)),
            _ => {
                self.last_turn = Some(now);
                Ok(())
            }
        }
    }

    /// Judges a closing that began at `began`, lasted `closed_for` and has just ended (`now`):
    /// by the answers from a second before it to now.
    pub fn closed(&mut self, began: Instant, closed_for: Duration, now: Instant) -> Verdict {
        let from = began.checked_sub(WINDOW).unwrap_or(began);
        while self.answers.front().is_some_and(|(at, _)| *at < from) {
            self.answers.pop_front();
        }
        let throttled = self.answers.iter().filter(|(_, t)| *t).count();
        // The answers stay: the next closing is judged by its own trailing second, which may
        // hold some of these.
        let served = self.answers.len() - throttled;
        let share = throttled as f64 / (throttled + served).max(1) as f64;
        if share < SPORADIC_SHARE || throttled + served < EVIDENCE {
            return Verdict::Sporadic { share };
        }
        // What the marketplace served over the window is the limit; the pace already set (if
        // slower) is what it was asked for at most.
        let served_rate = served as f64 / WINDOW.as_secs_f64();
        let (w_max, steady) = match self.curve.map(|curve| (curve.rate(began), curve.w_max)) {
            None => (served_rate, false),
            // A probe past the plateau found the limit: the plateau held, and what was served
            // beyond it (less the marketplace's burst, which the second also counted) is room.
            Some((pace, last)) if pace > (1.0 + SAME_LIMIT) * last => {
                (last.max(BETA * served_rate.min(pace)), true)
            }
            // Throttled at or under the plateau: the limit is lower now.
            Some((pace, last)) => {
                let w_max = served_rate.min(pace);
                (w_max, (w_max - last).abs() <= SAME_LIMIT * last)
            }
        };
        let w_max = w_max.clamp(FLOOR, CEILING);
        let hold = (closed_for * HOLD_PER_CLOSED).min(LONGEST_HOLD);
        let curve = Curve::new(w_max * BETA, w_max, now, hold);
        self.curve = Some(curve);
        Verdict::Limit {
            rate: curve.rate(now),
            w_max,
            steady,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// `served` answers then `throttled` ones, spread over the `span` before `at`.
    fn answers(learner: &mut Learner, at: Instant, span: Duration, served: u32, throttled: u32) {
        let n = served + throttled;
        for i in 0..n {
            let when = at - span + span * i / n.max(1);
            learner.answered(when, i >= served);
        }
    }

    #[test]
    fn nothing_is_paced_before_the_first_limit() {
        let mut learner = Learner::default();
        let now = Instant::now();
        assert_eq!(learner.rate(now), None);
        assert_eq!(learner.take_turn(now), Ok(()));
        assert_eq!(learner.take_turn(now), Ok(()), "unpaced: every turn is now");
    }

    #[test]
    fn a_burst_against_a_limit_teaches_the_rate_served_and_cuts_to_seven_tenths() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // 16 requests at once: 5 served, 11 throttled.
        answers(&mut learner, t0, secs(0.02), 5, 11);
        let reopened = t0 + secs(5.0);
        let verdict = learner.closed(t0, secs(5.0), reopened);
        let Verdict::Limit {
            rate,
            w_max,
            steady,
        } = verdict
        else {
            panic!("{verdict:?}")
        };
        assert_eq!(w_max, 5.0);
        assert!((rate - 3.5).abs() < 1e-9, "{rate}");
        assert!(!steady, "a first limit is not confirmed yet");
        // K = cbrt(5 × 0.3 / 0.4) ≈ 1.55 s: back at the plateau then, held for 20 × 5 s, and
        // probing after.
        let k = (5.0 * 0.3 / 0.4_f64).cbrt();
        assert!((learner.rate(reopened + secs(k)).unwrap() - 5.0).abs() < 1e-9);
        assert!(learner.rate(reopened + secs(k * 0.5)).unwrap() > 4.8);
        assert!((learner.rate(reopened + secs(k + 99.0)).unwrap() - 5.0).abs() < 1e-9);
        assert!(learner.rate(reopened + secs(k + 102.0)).unwrap() > 5.0 + 0.4 * 7.9);
    }

    #[test]
    fn a_429_among_too_few_answers_to_tell_teaches_nothing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(1.0), 2, 1);
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0));
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
        assert_eq!(learner.rate(t0 + secs(1.0)), None);
    }

    #[test]
    fn a_429_right_after_another_closing_among_a_dozen_answers_teaches_nothing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(0.2), 12, 2);
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0));
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
    }

    #[test]
    fn a_sporadic_429_among_many_answers_teaches_nothing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(1.0), 300, 3);
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0));
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
        assert_eq!(learner.rate(t0 + secs(1.0)), None);
    }

    #[test]
    fn a_failed_probe_keeps_the_plateau_and_a_successful_one_raises_it() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(5.0, 5.0, t0, Duration::ZERO));
        // Probing 3 s past the plateau (5 + 0.4 × 27 = 15.8 per second) drained the bucket:
        // the second counted 8 served, the marketplace's burst among them, and 3 throttled.
        let t1 = t0 + secs(3.0);
        answers(&mut learner, t1, secs(1.0), 8, 3);
        let verdict = learner.closed(t1, secs(5.0), t1 + secs(5.0));
        assert!(
            matches!(verdict, Verdict::Limit { steady: true, w_max, .. } if (w_max - 5.6).abs() < 1e-9),
            "0.7 × 8 served is a little room past 5: {verdict:?}"
        );
        let t2 = t1 + secs(200.0);
        answers(&mut learner, t2, secs(1.0), 4, 2);
        let verdict = learner.closed(t2, secs(5.0), t2 + secs(5.0));
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if (w_max - 5.6).abs() < 1e-9),
            "a probe that found less keeps the plateau: {verdict:?}"
        );
    }

    #[test]
    fn a_limit_met_again_at_the_same_rate_is_steady() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(5.0, 5.0, t0, Duration::from_secs(60)));
        let t1 = t0 + secs(10.0);
        answers(&mut learner, t1, secs(1.0), 5, 2);
        let verdict = learner.closed(t1, secs(5.0), t1 + secs(5.0));
        assert!(
            matches!(verdict, Verdict::Limit { steady: true, w_max, .. } if w_max == 5.0),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_lower_limit_is_followed_down_and_a_higher_one_found_by_probing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(5.0, 5.0, t0, Duration::from_secs(60)));
        // The limit drops to 2: two served in the second before the closing, four throttled.
        let t1 = t0 + secs(30.0);
        answers(&mut learner, t1, secs(1.0), 2, 4);
        let reopened = t1 + secs(0.05);
        let verdict = learner.closed(t1, secs(0.05), reopened);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, steady: false, .. } if w_max == 2.0),
            "{verdict:?}"
        );
        // Held for 20 × 50 ms = 1 s after the climb, then probing: within 5 s past 10 per second.
        assert!(learner.rate(reopened + secs(5.0)).unwrap() > 10.0);
    }

    #[test]
    fn the_pace_never_goes_under_the_floor_and_stops_past_the_ceiling() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // Only throttled answers: nothing served at all.
        answers(&mut learner, t0, secs(0.5), 0, 8);
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0));
        assert!(
            matches!(verdict, Verdict::Limit { rate, .. } if rate == FLOOR),
            "{verdict:?}"
        );
        assert_eq!(learner.rate(t0 + secs(1.0)), Some(FLOOR));
        // The probe grows without bound; past the ceiling the learner stops pacing.
        assert_eq!(learner.rate(t0 + secs(60.0)), None);
        assert_eq!(learner.take_turn(t0 + secs(61.0)), Ok(()));
    }

    #[test]
    fn the_pace_spaces_turns_by_one_over_the_rate_and_waiters_look_again_soon() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(4.0, 4.0, t0, Duration::from_secs(60)));
        assert_eq!(learner.take_turn(t0), Ok(()));
        assert_eq!(learner.take_turn(t0), Err(t0 + RECHECK));
        assert_eq!(learner.take_turn(t0 + secs(0.2)), Err(t0 + secs(0.25)));
        assert_eq!(learner.take_turn(t0 + secs(0.25)), Ok(()));
    }
}
