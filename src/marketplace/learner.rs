//! The pace one endpoint group learns from the marketplace's throttling: a CUBIC rate curve in
//! the manner of the AWS SDKs' adaptive retry mode, told apart from sporadic 429s, and shared
//! among the replicas of the shop.
//!
//! Nothing is paced until a closing looks like a rate limit. When a closed gate reopens, the
//! answers of the second before the closing (and those of the requests still on their way)
//! decide, the 429 that closed the gate left out: it is the one answer every closing has. A
//! small share of the others throttled, or too few of them to tell (a group that calls now and
//! then), is a sporadic 429 and teaches nothing; a larger one with several throttled is a limit;
//! with only one or two more throttled it is a limit if the next closing, as thin, begins right
//! at the reopening (a limit closes the gate again as soon as the calls held back go out). A
//! closing right after a reopening counts only with 429s of its own since then, not those of
//! the last closing still in its window. Only 429s are throttled answers and only answers under
//! 500 served ones: a 503 storm is an outage, not a limit. Then the
//! rate the marketplace served over that second becomes the curve's plateau
//! (`w_max`). The pace starts again at [`BETA`] of it and climbs back along
//! `w_max + C·(t − K)³`: steep at first (most of the way back within a second or two), flat
//! near the plateau, then probing past it, so a limit that was raised is found again. The
//! plateau is held for [`HOLD_PER_CLOSED`] times the closing's length before probing, so that
//! a failed probe (which costs one closing) takes at most a twentieth of the time. A probe that
//! fails keeps the plateau (raised by what it found room for); a closing under the plateau
//! lowers it to what was served, one at the plateau by 15 % (CUBIC's fast convergence). While
//! the pace holds calls back, every closing counts: paced calls go one at a time, so the first
//! 429 of a pace that is too high is one answer among many served. A group paced faster than it
//! calls is judged as an unpaced one: there a 429 says nothing about the pace, and what was
//! served is what was asked, not the limit (taking it for one walked a quiet group down to the
//! floor under `bench/chaos`'s random 429s). The pace never goes under [`FLOOR`]; past
//! [`CEILING`] it stops.
//!
//! The curve is the shop's: the answers a closing is judged by are those of every replica of
//! the shop ([`Evidence`], read from `api_calls` by the gate), so the plateau is the limit they
//! share, and each process paces at its share of it — the curve's rate divided by the replicas
//! running, never under the floor. Without the shop's answers (the database cannot be read),
//! the process's own answers stand for its share of them.
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
pub const WINDOW: Duration = Duration::from_secs(1);
/// Under this share of throttled answers among the window's others, a closing is a sporadic
/// 429: a limit throttles most of what is in flight once its bucket is dry, while a stray 429
/// right after another closing can be one of only a dozen answers in the second.
const SPORADIC_SHARE: f64 = 0.25;
/// A limit shows under load: with fewer answers than this in the window besides the one that
/// closed the gate (a group that calls now and then), a 429 is taken as sporadic and only the
/// gate honours it.
const EVIDENCE: u64 = 5;
/// A limit throttles several of the calls in flight once its bucket is dry: with this many
/// throttled answers besides the one that closed the gate (and the share), one closing is
/// enough. With fewer, it takes two in a row: the calls held back go out together when the gate
/// reopens, and a limit closes it again at once, while 5 % random 429s (`bench/chaos`) pass the
/// share alone as often as one closing in 40 among 6–12 answers.
const MORE_THROTTLED: u64 = 3;
/// The throttled answers since the last reopening that a closing right after it needs to count
/// (to confirm a thin one, or to be a limit at all): its own 429 and one more, as the calls held
/// back meet the limit together.
const CONFIRMING: usize = 2;
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

/// Answers to the shop's calls of one group over a closing's window: every replica's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    pub served: u64,
    pub throttled: u64,
}

/// What a closing taught.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Few answers throttled: a stray 429; nothing changes.
    Sporadic { share: f64 },
    /// Thin evidence of a limit: nothing changes yet, but the next closing confirms it if it
    /// begins right at the reopening.
    Suspected { share: f64 },
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
    /// When the pace last held a request back: the group asked for more than its pace.
    last_held: Option<Instant>,
    /// When the gate last reopened (a closing was judged).
    reopened: Option<Instant>,
    /// The last closing looked like a limit on thin evidence: the next one confirms it if it
    /// begins within a [`WINDOW`] of the reopening.
    suspected: bool,
}

impl Learner {
    pub fn answered(&mut self, at: Instant, throttled: bool) {
        if self.answers.len() == KEPT_ANSWERS {
            self.answers.pop_front();
        }
        self.answers.push_back((at, throttled));
    }

    /// The shop's pace now (all replicas together), if any.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        let rate = self.curve?.rate(now);
        if rate >= CEILING {
            self.curve = None;
            return None;
        }
        Some(rate)
    }

    /// This process's pace now: its share of the shop's among `replicas`, never under the
    /// floor.
    pub fn own_rate(&mut self, now: Instant, replicas: u32) -> Option<f64> {
        let rate = self.rate(now)?;
        Some((rate / f64::from(replicas.max(1))).max(FLOOR))
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
    pub fn take_turn(&mut self, now: Instant, replicas: u32) -> Result<(), Instant> {
        let Some(rate) = self.own_rate(now, replicas) else {
            return Ok(());
        };
        let next = self
            .last_turn
            .map(|last| last + Duration::from_secs_f64(1.0 / rate));
        match next {
            Some(next) if next > now => {
                self.last_held = Some(now);
                Err(next.min(now + RECHECK))
            }
            _ => {
                self.last_turn = Some(now);
                Ok(())
            }
        }
    }

    /// Judges a closing that began at `began`, lasted `closed_for` and has just ended (`now`):
    /// by the shop's answers over the window around it when the gate could read them, else by
    /// this process's from a second before it to now, taken as its share of `replicas`.
    pub fn closed(
        &mut self,
        began: Instant,
        closed_for: Duration,
        now: Instant,
        shop: Option<Evidence>,
        replicas: u32,
    ) -> Verdict {
        let own = self.own_evidence(began);
        // The shop's answers hold this process's own, unless some of those are not recorded
        // yet: then they count as seen here.
        let (evidence, scale) = match shop {
            Some(shop) => (
                Evidence {
                    served: shop.served.max(own.served),
                    throttled: shop.throttled.max(own.throttled),
                },
                1.0,
            ),
            None => (own, f64::from(replicas.max(1))),
        };
        let Evidence { served, throttled } = evidence;
        let share = throttled as f64 / (served + throttled).max(1) as f64;
        // A pace that holds calls back and is throttled is too high, however few answers were:
        // paced calls go one at a time and the first 429 closes the gate, so their share cannot
        // tell. (A group is paced only after a closing that could.)
        let held = self
            .last_held
            .is_some_and(|at| at + WINDOW >= began && self.curve.is_some());
        // A closing right after the last reopening is judged by a window that may still hold
        // the last closing's answers: it counts only with 429s of its own since the reopening.
        let right_after = self
            .reopened
            .replace(now)
            .filter(|reopened| began <= *reopened + WINDOW);
        let fresh = right_after.is_none_or(|reopened| self.throttled_since(reopened) >= CONFIRMING);
        let confirms = std::mem::take(&mut self.suspected) && right_after.is_some() && fresh;
        match evidence_of_a_limit(evidence) {
            _ if held => {}
            Some(Strength::Strong) if fresh => {}
            Some(Strength::Thin) if confirms => {}
            Some(Strength::Thin) if fresh => {
                self.suspected = true;
                return Verdict::Suspected { share };
            }
            _ => return Verdict::Sporadic { share },
        }
        // What the marketplace served over the window is the limit; the pace already set (if
        // slower) is what it was asked for at most.
        let served_rate = served as f64 * scale / WINDOW.as_secs_f64();
        let (w_max, steady) = match self.curve.map(|curve| (curve.rate(began), curve.w_max)) {
            None => (served_rate, false),
            // A probe past the plateau found the limit: the plateau held, and what was served
            // beyond it (less the marketplace's burst, which the second also counted) is room.
            Some((pace, last)) if pace > (1.0 + SAME_LIMIT) * last => {
                (last.max(BETA * served_rate.min(pace)), true)
            }
            // Throttled at or under the plateau: the limit is lower now. Met at the plateau
            // again, the plateau is above it by less than the second can show (what was served
            // counts the marketplace's burst): it comes down by CUBIC's fast-convergence step,
            // half of 1 − β.
            // A second with nothing served (a pace under one a second) does not tell the rate:
            // the pace stands for it, as AWS takes the rate it sent at.
            Some((pace, last)) => {
                let w_max = if served == 0 {
                    pace
                } else {
                    served_rate.min(pace)
                };
                if w_max >= (1.0 - SAME_LIMIT) * last {
                    (w_max.min(last) * (1.0 + BETA) / 2.0, true)
                } else {
                    (w_max, false)
                }
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

    /// This process's throttled answers since `since`.
    fn throttled_since(&self, since: Instant) -> usize {
        self.answers
            .iter()
            .filter(|(at, throttled)| *throttled && *at >= since)
            .count()
    }

    /// This process's answers from a second before `began` to now. They stay: the next closing
    /// is judged by its own trailing second, which may hold some of these.
    fn own_evidence(&mut self, began: Instant) -> Evidence {
        let from = began.checked_sub(WINDOW).unwrap_or(began);
        while self.answers.front().is_some_and(|(at, _)| *at < from) {
            self.answers.pop_front();
        }
        let throttled = self.answers.iter().filter(|(_, t)| *t).count() as u64;
        Evidence {
            served: self.answers.len() as u64 - throttled,
            throttled,
        }
    }
}

/// How strongly a closing's answers point to a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Enough to take it for one.
    Strong,
    /// Enough only if the next closing follows at once.
    Thin,
}

/// Enough answers besides the 429 that closed the gate, and a quarter or more of them throttled
/// too: [`Strength::Strong`] with several throttled, [`Strength::Thin`] with fewer.
fn evidence_of_a_limit(Evidence { served, throttled }: Evidence) -> Option<Strength> {
    let others = (served + throttled).saturating_sub(1);
    let throttled_others = throttled.saturating_sub(1);
    if others < EVIDENCE || (throttled_others as f64) < SPORADIC_SHARE * others as f64 {
        None
    } else if throttled_others >= MORE_THROTTLED {
        Some(Strength::Strong)
    } else {
        Some(Strength::Thin)
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

    /// The group asked for more than its pace at `at`: a call was held back.
    fn held_back(learner: &mut Learner, at: Instant) {
        let _ = learner.take_turn(at, 1);
        assert!(learner.take_turn(at, 1).is_err(), "the pace holds a call");
    }

    #[test]
    fn nothing_is_paced_before_the_first_limit() {
        let mut learner = Learner::default();
        let now = Instant::now();
        assert_eq!(learner.rate(now), None);
        assert_eq!(learner.take_turn(now, 1), Ok(()));
        assert_eq!(
            learner.take_turn(now, 1),
            Ok(()),
            "unpaced: every turn is now"
        );
    }

    #[test]
    fn a_burst_against_a_limit_teaches_the_rate_served_and_cuts_to_seven_tenths() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // 16 requests at once: 5 served, 11 throttled.
        answers(&mut learner, t0, secs(0.02), 5, 11);
        let reopened = t0 + secs(5.0);
        let verdict = learner.closed(t0, secs(5.0), reopened, None, 1);
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
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0), None, 1);
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
        assert_eq!(learner.rate(t0 + secs(1.0)), None);
    }

    #[test]
    fn a_429_right_after_another_closing_among_a_dozen_answers_teaches_nothing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(0.2), 12, 2);
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0), None, 1);
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
    }

    #[test]
    fn a_sporadic_429_among_many_answers_teaches_nothing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(1.0), 300, 3);
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0), None, 1);
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
        held_back(&mut learner, t1 - secs(0.5));
        answers(&mut learner, t1, secs(1.0), 8, 3);
        let verdict = learner.closed(t1, secs(5.0), t1 + secs(5.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { steady: true, w_max, .. } if (w_max - 5.6).abs() < 1e-9),
            "0.7 × 8 served is a little room past 5: {verdict:?}"
        );
        // Reopened at t1 + 5 s, back at 5.6 within 1.6 s, held for 100 s, probing 2 s later.
        let t2 = t1 + secs(109.0);
        held_back(&mut learner, t2 - secs(0.5));
        answers(&mut learner, t2, secs(1.0), 4, 2);
        let verdict = learner.closed(t2, secs(5.0), t2 + secs(5.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if (w_max - 5.6).abs() < 1e-9),
            "a probe that found less keeps the plateau: {verdict:?}"
        );
    }

    #[test]
    fn a_limit_met_again_at_the_plateau_lowers_it_by_fast_convergence() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(5.0, 5.0, t0, Duration::from_secs(60)));
        let t1 = t0 + secs(10.0);
        held_back(&mut learner, t1 - secs(0.5));
        answers(&mut learner, t1, secs(1.0), 5, 2);
        let verdict = learner.closed(t1, secs(5.0), t1 + secs(5.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { steady: true, w_max, .. } if (w_max - 4.25).abs() < 1e-9),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_paced_group_held_back_at_its_plateau_takes_a_single_429_for_a_limit() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(6.0, 6.0, t0, Duration::from_secs(60)));
        // Paced calls one at a time: the first 429 closes the gate, one answer in seven.
        let t1 = t0 + secs(10.0);
        held_back(&mut learner, t1 - secs(0.5));
        answers(&mut learner, t1, secs(1.0), 6, 1);
        let verdict = learner.closed(t1, secs(5.0), t1 + secs(5.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if (w_max - 5.1).abs() < 1e-9),
            "{verdict:?}"
        );
        // The same answers to a group not paced yet are a stray 429.
        let mut unpaced = Learner::default();
        answers(&mut unpaced, t1, secs(1.0), 6, 1);
        let verdict = unpaced.closed(t1, secs(5.0), t1 + secs(5.0), None, 1);
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
    }

    #[test]
    fn a_group_paced_faster_than_it_calls_takes_stray_429s_for_what_they_are() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(6.0, 6.0, t0, Duration::from_secs(600)));
        // Two calls a second under a pace of six: one 429 in five answers, again and again.
        // Taken for limits, each would lower the plateau to the two served, towards the floor.
        for i in 1..=20 {
            let at = t0 + secs(10.0 * f64::from(i));
            answers(&mut learner, at, secs(1.0), 4, 1);
            let verdict = learner.closed(at, secs(1.0), at + secs(1.0), None, 1);
            assert!(
                matches!(verdict, Verdict::Sporadic { .. }),
                "{i}: {verdict:?}"
            );
        }
        let later = t0 + secs(300.0);
        assert!((learner.rate(later).unwrap() - 6.0).abs() < 1e-9);
        // Held back at last by its pace, the next 429 counts again.
        held_back(&mut learner, later);
        answers(&mut learner, later + secs(0.5), secs(1.0), 6, 1);
        let verdict = learner.closed(later + secs(0.5), secs(1.0), later + secs(1.5), None, 1);
        assert!(matches!(verdict, Verdict::Limit { .. }), "{verdict:?}");
    }

    #[test]
    fn a_few_stray_429s_among_a_few_answers_are_no_limit_but_most_in_flight_throttled_is() {
        let t0 = Instant::now() + secs(10.0);
        let judge = |served, throttled| {
            let mut learner = Learner::default();
            answers(&mut learner, t0, secs(1.0), served, throttled);
            learner.closed(t0, secs(1.0), t0 + secs(1.0), None, 1)
        };
        // The 429 that closed the gate and one more among seven: a sixth of the others.
        assert!(matches!(judge(5, 2), Verdict::Sporadic { .. }));
        // Two more among nine: a quarter of the others, but a limit throttles more than that
        // of what is in flight; 5 % random 429s do this one closing in forty-four. Thin: only
        // a closing right after it would confirm it.
        assert!(matches!(judge(6, 3), Verdict::Suspected { .. }));
        // Three more among nine.
        assert!(matches!(judge(5, 4), Verdict::Limit { .. }));
        // Sixteen in flight against a bucket of five.
        assert!(matches!(judge(5, 11), Verdict::Limit { .. }));
    }

    #[test]
    fn thin_evidence_of_a_limit_takes_a_second_closing_right_after_the_reopening() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // Eight in flight against a bucket of five: two more throttled of seven others.
        answers(&mut learner, t0, secs(0.02), 5, 3);
        let reopened = t0 + secs(1.0);
        let verdict = learner.closed(t0, secs(1.0), reopened, None, 1);
        assert!(matches!(verdict, Verdict::Suspected { .. }), "{verdict:?}");
        // The eight held back go out at the reopening and meet the limit again at once.
        let t1 = reopened + secs(0.05);
        answers(&mut learner, t1, secs(0.02), 5, 3);
        let verdict = learner.closed(t1, secs(1.0), t1 + secs(1.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if w_max == 5.0),
            "{verdict:?}"
        );

        // A stray pair, and the next closing seconds later: no limit.
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(1.0), 5, 3);
        let verdict = learner.closed(t0, secs(1.0), reopened, None, 1);
        assert!(matches!(verdict, Verdict::Suspected { .. }), "{verdict:?}");
        let t2 = reopened + secs(5.0);
        answers(&mut learner, t2, secs(1.0), 5, 3);
        let verdict = learner.closed(t2, secs(1.0), t2 + secs(1.0), None, 1);
        assert!(!matches!(verdict, Verdict::Limit { .. }), "{verdict:?}");
    }

    #[test]
    fn a_closing_right_after_a_reopening_is_not_judged_by_the_last_ones_answers() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // A stray pair closes the gate for 0.3 s (a Retry-After of zero, a back-off instead).
        answers(&mut learner, t0, secs(0.02), 5, 3);
        let reopened = t0 + secs(0.3);
        let verdict = learner.closed(t0, secs(0.3), reopened, None, 1);
        assert!(matches!(verdict, Verdict::Suspected { .. }), "{verdict:?}");
        // One more stray 429 0.2 s later: its window still holds the pair, 7 served and 4
        // throttled in all, but only its own 429 came since the reopening.
        let t1 = reopened + secs(0.2);
        answers(&mut learner, t1, secs(0.15), 2, 1);
        let verdict = learner.closed(t1, secs(0.3), t1 + secs(0.3), None, 1);
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
        assert_eq!(learner.rate(t1 + secs(0.3)), None);
    }

    #[test]
    fn a_paced_second_with_nothing_served_keeps_the_pace_as_the_rate() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(0.8, 0.8, t0, Duration::from_secs(600)));
        // Paced at 0.8 a second: the second before the closing holds its 429 and nothing served.
        let t1 = t0 + secs(10.0);
        held_back(&mut learner, t1 - secs(0.5));
        answers(&mut learner, t1, secs(0.1), 0, 1);
        let verdict = learner.closed(t1, secs(1.0), t1 + secs(1.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if (w_max - 0.8 * 0.85).abs() < 1e-9),
            "the plateau met again comes down by 15 %, not to the floor: {verdict:?}"
        );
    }

    #[test]
    fn a_lower_limit_is_followed_down_and_a_higher_one_found_by_probing() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(5.0, 5.0, t0, Duration::from_secs(60)));
        // The limit drops to 2: two served in the second before the closing, four throttled.
        let t1 = t0 + secs(30.0);
        held_back(&mut learner, t1 - secs(0.5));
        answers(&mut learner, t1, secs(1.0), 2, 4);
        let reopened = t1 + secs(0.05);
        let verdict = learner.closed(t1, secs(0.05), reopened, None, 1);
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
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0), None, 1);
        assert!(
            matches!(verdict, Verdict::Limit { rate, .. } if rate == FLOOR),
            "{verdict:?}"
        );
        assert_eq!(learner.rate(t0 + secs(1.0)), Some(FLOOR));
        // The probe grows without bound; past the ceiling the learner stops pacing.
        assert_eq!(learner.rate(t0 + secs(60.0)), None);
        assert_eq!(learner.take_turn(t0 + secs(61.0), 1), Ok(()));
    }

    #[test]
    fn the_pace_spaces_turns_by_one_over_the_rate_and_waiters_look_again_soon() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        learner.adopt(Curve::new(4.0, 4.0, t0, Duration::from_secs(60)));
        assert_eq!(learner.take_turn(t0, 1), Ok(()));
        assert_eq!(learner.take_turn(t0, 1), Err(t0 + RECHECK));
        assert_eq!(learner.take_turn(t0 + secs(0.2), 1), Err(t0 + secs(0.25)));
        assert_eq!(learner.take_turn(t0 + secs(0.25), 1), Ok(()));
    }

    #[test]
    fn the_shops_answers_set_the_plateau_and_each_replica_paces_at_its_share() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // This replica was served nothing in the burst (the other two took the bucket), but the
        // shop was served 5 over the second and 40 throttled.
        answers(&mut learner, t0, secs(0.02), 0, 16);
        let shop = Evidence {
            served: 5,
            throttled: 40,
        };
        let reopened = t0 + secs(5.0);
        let verdict = learner.closed(t0, secs(5.0), reopened, Some(shop), 3);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if w_max == 5.0),
            "the shop's limit, not this replica's part of it: {verdict:?}"
        );
        let k = (5.0 * 0.3 / 0.4_f64).cbrt();
        let held = reopened + secs(k + 10.0);
        assert!((learner.rate(held).unwrap() - 5.0).abs() < 1e-9);
        assert!((learner.own_rate(held, 3).unwrap() - 5.0 / 3.0).abs() < 1e-9);
        assert!(
            (learner.own_rate(held, 1).unwrap() - 5.0).abs() < 1e-9,
            "a lone run: all of it"
        );
        assert_eq!(
            learner.own_rate(held, 100),
            Some(FLOOR),
            "never under the floor, however many replicas"
        );
    }

    #[test]
    fn without_the_shops_answers_a_replicas_own_stand_for_its_share() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        answers(&mut learner, t0, secs(0.02), 2, 14);
        let verdict = learner.closed(t0, secs(5.0), t0 + secs(5.0), None, 3);
        assert!(
            matches!(verdict, Verdict::Limit { w_max, .. } if w_max == 6.0),
            "2 served here, one of 3 replicas: {verdict:?}"
        );
    }

    #[test]
    fn a_sporadic_429_in_a_busy_shop_teaches_nothing_even_to_a_quiet_replica() {
        let t0 = Instant::now() + secs(10.0);
        let mut learner = Learner::default();
        // One answer here, throttled; the shop as a whole was served 60 over the second.
        answers(&mut learner, t0, secs(0.5), 0, 1);
        let shop = Evidence {
            served: 60,
            throttled: 1,
        };
        let verdict = learner.closed(t0, secs(1.0), t0 + secs(1.0), Some(shop), 4);
        assert!(matches!(verdict, Verdict::Sporadic { .. }), "{verdict:?}");
        assert_eq!(learner.rate(t0 + secs(1.0)), None);
    }
}
