//! The overview's chart: decisions per UTC day over the last 14 days (accepted, refused,
//! cancelled, sent to review, failed), counted from the history and drawn here as SVG.
//!
//! A finished day never changes (history rows are stamped when written), so its counts are kept
//! in memory once read; only today is counted on each render, over the history's timestamp index.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{Days, NaiveDate};
use maud::{Markup, html};
use sqlx::PgPool;

use crate::db::console as store;

pub const DAYS: u64 = 14;

/// The statuses drawn, bottom to top, with their legend.
pub const SERIES: [(&str, &str, &str); 5] = [
    ("accepted", "accepted", "#1e7b34"),
    ("refused", "refused", "#b3261e"),
    ("cancelled", "cancelled", "#7a7f8c"),
    ("in_review", "sent to review", "#a15c00"),
    ("acceptance_failed", "failed", "#6a1b9a"),
];

/// Counts of one day, in the order of [`SERIES`].
pub type DayCounts = [i64; 5];

/// Finished days already counted.
#[derive(Default)]
pub struct ChartCache {
    days: Mutex<BTreeMap<NaiveDate, DayCounts>>,
}

impl ChartCache {
    /// The last [`DAYS`] days up to `today`, oldest first.
    pub async fn days(
        &self,
        pool: &PgPool,
        today: NaiveDate,
    ) -> Result<Vec<(NaiveDate, DayCounts)>, sqlx::Error> {
        let first = today - Days::new(DAYS - 1);
        let missing_from = {
            let cached = self.lock();
            first
                .iter_days()
                .take_while(|day| *day < today)
                .find(|day| !cached.contains_key(day))
        };
        if let Some(from) = missing_from {
            let yesterday = today - Days::new(1);
            let counted = tally(store::decisions_per_day(pool, from, yesterday).await?);
            let mut cached = self.lock();
            for day in from.iter_days().take_while(|day| *day < today) {
                cached.insert(day, counted.get(&day).copied().unwrap_or_default());
            }
            cached.retain(|day, _| *day >= first);
        }
        let today_counts = tally(store::decisions_per_day(pool, today, today).await?)
            .remove(&today)
            .unwrap_or_default();
        let cached = self.lock();
        Ok(first
            .iter_days()
            .take(DAYS as usize)
            .map(|day| match day == today {
                true => (day, today_counts),
                false => (day, cached.get(&day).copied().unwrap_or_default()),
            })
            .collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NaiveDate, DayCounts>> {
        // A panic while holding the lock cannot leave the map half-written (inserts are whole),
        // so a poisoned lock is still good to read.
        self.days
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn tally(rows: Vec<store::DayCount>) -> BTreeMap<NaiveDate, DayCounts> {
    let mut days: BTreeMap<NaiveDate, DayCounts> = BTreeMap::new();
    for row in rows {
        if let Some(index) = SERIES.iter().position(|(status, ..)| *status == row.status) {
            days.entry(row.day).or_default()[index] += row.rows;
        }
    }
    days
}

const WIDTH: i64 = 840;
const HEIGHT: i64 = 220;
const LEFT: i64 = 48;
const BOTTOM: i64 = 24;

/// Stacked bars, one per day, with a scale on the left and each bar's total in its title.
pub fn svg(days: &[(NaiveDate, DayCounts)]) -> Markup {
    let max = days
        .iter()
        .map(|(_, counts)| counts.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_height = HEIGHT - BOTTOM - 8;
    let slot = (WIDTH - LEFT) / i64::try_from(days.len().max(1)).unwrap_or(1);
    let bar = (slot * 7 / 10).max(1);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            role="img" aria-label="Decisions per day, last 14 days" {
            line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) stroke="#d9dde5" {}
            text x=(LEFT - 6) y=(HEIGHT - BOTTOM) text-anchor="end" font-size="11" fill="#5b6475" { "0" }
            text x=(LEFT - 6) y="16" text-anchor="end" font-size="11" fill="#5b6475" { (max) }
            @for (i, (day, counts)) in days.iter().enumerate() {
                @let x = LEFT + i64::try_from(i).unwrap_or(0) * slot + (slot - bar) / 2;
                @let total: i64 = counts.iter().sum();
                g {
                    title { (day.format("%Y-%m-%d")) ": " (total) " — " (breakdown(counts)) }
                    @for (segment_y, segment_h, colour) in segments(counts, max, plot_height) {
                        rect x=(x) y=(segment_y) width=(bar) height=(segment_h) fill=(colour) {}
                    }
                }
                text x=(x + bar / 2) y=(HEIGHT - 8) text-anchor="middle" font-size="10" fill="#5b6475" {
                    (day.format("%d.%m"))
                }
            }
        }
    }
}

fn breakdown(counts: &DayCounts) -> String {
    SERIES
        .iter()
        .zip(counts)
        .map(|((_, label, _), n)| format!("{n} {label}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rectangles of one stacked bar, bottom up: (y, height, colour).
fn segments(counts: &DayCounts, max: i64, plot_height: i64) -> Vec<(i64, i64, &'static str)> {
    let mut top = HEIGHT - BOTTOM;
    let mut stacked = 0;
    let mut out = Vec::new();
    for ((_, _, colour), n) in SERIES.iter().zip(counts) {
        if *n == 0 {
            continue;
        }
        stacked += n;
        // Heights from cumulative sums, so rounding never makes a bar taller than its total.
        let new_top = HEIGHT - BOTTOM - stacked.saturating_mul(plot_height) / max;
        out.push((new_top, (top - new_top).max(1), *colour));
        top = new_top;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_to_their_total_and_days_are_labelled() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
        let svg = svg(&[(day, [3, 1, 0, 2, 0]), (day, [0; 5])]).into_string();
        assert!(
            svg.contains(
                "2026-12-01: 6 — 3 accepted, 1 refused, 0 cancelled, 2 sent to review, 0 failed"
            ),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 3);
        let plot = HEIGHT - BOTTOM - 8;
        let rects = segments(&[3, 1, 0, 2, 0], 6, plot);
        assert_eq!(rects.last().map(|r| r.0), Some(HEIGHT - BOTTOM - plot));
    }
}
