//! A budget for log lines a flood can repeat.
//!
//! Every refused delivery is counted exactly (`emr.intake.refused.401`),
//! but one log line per refusal lets anyone who can reach the listener grow
//! Envoy's log as fast as they can send: 3,000 unauthenticated requests
//! added 687 KB. So a line of a repeatable kind is written only while its
//! kind has budget left in the current interval; the rest are counted, and
//! one summary line says how many were left out once the interval is over
//! (with the next line or request the VM handles: a filter has no timer).
//!
//! One budget per VM (one per worker thread): the log holds at most
//! `workers × (lines + 1)` such lines per kind and interval. The time is
//! passed in, as everywhere in the core.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::intake::{Note, NoteLevel, Repeated};

/// Lines of one kind written per interval, before the rest are counted.
pub const LINES_PER_INTERVAL: u32 = 10;
/// The interval, in milliseconds.
pub const INTERVAL_MS: i64 = 60_000;

/// One kind's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start_ms: i64,
    written: u32,
    suppressed: u64,
}

/// Lines left out of an interval that is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed<K> {
    pub kind: K,
    pub count: u64,
    /// From the first line of the interval to the moment this was told.
    pub over_ms: i64,
}

/// Whether to write a line, and what an interval that just ended left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admit<K> {
    pub write: bool,
    pub ended: Vec<Suppressed<K>>,
}

/// Per-kind intervals of `lines` written lines each. Kinds are few (a
/// closed enum), so the map stays small; a kind's entry goes once its
/// interval is over and told.
#[derive(Debug, Clone)]
pub struct LogBudget<K> {
    lines: u32,
    interval_ms: i64,
    windows: BTreeMap<K, Window>,
}

impl<K: Ord + Copy> LogBudget<K> {
    pub fn new(lines: u32, interval_ms: i64) -> Self {
        Self {
            lines,
            interval_ms: interval_ms.max(1),
            windows: BTreeMap::new(),
        }
    }

    /// Ends every interval that is over at `now_ms`, returning what each
    /// left out (intervals that left nothing out end silently).
    pub fn flush(&mut self, now_ms: i64) -> Vec<Suppressed<K>> {
        let interval = self.interval_ms;
        let mut ended = Vec::new();
        self.windows.retain(|kind, w| {
            if now_ms.saturating_sub(w.start_ms) < interval {
                return true;
            }
            if w.suppressed > 0 {
                ended.push(Suppressed {
                    kind: *kind,
                    count: w.suppressed,
                    over_ms: now_ms.saturating_sub(w.start_ms),
                });
            }
            false
        });
        ended
    }

    /// A line of `kind` at `now_ms`: whether to write it, after whatever
    /// intervals ended by now.
    pub fn admit(&mut self, kind: K, now_ms: i64) -> Admit<K> {
        let ended = self.flush(now_ms);
        let w = self.windows.entry(kind).or_insert(Window {
            start_ms: now_ms,
            written: 0,
            suppressed: 0,
        });
        let write = w.written < self.lines;
        if write {
            w.written += 1;
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
        }
        Admit { write, ended }
    }
}

/// The intake's budget: notes marked [`Repeated`] spend it, others are
/// always written.
#[derive(Debug, Clone)]
pub struct NoteBudget(LogBudget<Repeated>);

impl Default for NoteBudget {
    fn default() -> Self {
        Self(LogBudget::new(LINES_PER_INTERVAL, INTERVAL_MS))
    }
}

impl NoteBudget {
    /// The lines to write for one request's `notes` at `now`: summaries of
    /// the intervals that ended, then the notes within budget. Call it for
    /// every request, with or without notes, so a summary is not held back
    /// until the next refusal of its kind.
    pub fn lines(&mut self, notes: Vec<Note>, now: DateTime<Utc>) -> Vec<Note> {
        let now_ms = now.timestamp_millis();
        let mut out: Vec<Note> = self.0.flush(now_ms).into_iter().map(summary).collect();
        for n in notes {
            match n.repeated {
                None => out.push(n),
                Some(kind) => {
                    let admit = self.0.admit(kind, now_ms);
                    out.extend(admit.ended.into_iter().map(summary));
                    if admit.write {
                        out.push(n);
                    }
                }
            }
        }
        out
    }
}

fn summary(s: Suppressed<Repeated>) -> Note {
    let seconds = (s.over_ms + 999) / 1000;
    let plural = |one: &str, many: &str| if s.count == 1 { one } else { many }.to_owned();
    let (what, counter) = match s.kind {
        Repeated::Unauthenticated(source) => (
            format!("{} on /webhooks/{source}", plural("401", "401s")),
            "emr.intake.refused.401",
        ),
        Repeated::OverShare(source) => (
            format!(
                "{} on /webhooks/{source} (its share of open incidents is used up)",
                plural("429", "429s")
            ),
            "emr.intake.refused.429",
        ),
        Repeated::DeliveryIdReused(source) => (
            format!(
                "{} on /webhooks/{source}",
                plural("reused delivery id", "reused delivery ids")
            ),
            "emr.intake.delivery_id_reused",
        ),
        Repeated::RenewalDropped(source) => (
            format!(
                "{} on /webhooks/{source}",
                plural(
                    "renewal of a replayed activation not queued",
                    "renewals of replayed activations not queued"
                )
            ),
            "emr.intake.renewals_dropped",
        ),
    };
    Note {
        level: NoteLevel::Warn,
        message: format!(
            "{} more {what} suppressed in the last {seconds}s (every one is counted in {counter})",
            s.count
        ),
        repeated: None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::event::Source;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_723_731_721_000 + ms).unwrap()
    }

    fn refused(source: Source) -> Note {
        Note {
            level: NoteLevel::Warn,
            message: format!("{source} delivery refused (401): missing credential"),
            repeated: Some(Repeated::Unauthenticated(source)),
        }
    }

    #[test]
    fn the_first_lines_of_an_interval_are_written_then_counted() {
        let mut b = LogBudget::new(3, 1000);
        let writes: Vec<bool> = (0..5).map(|i| b.admit('a', i).write).collect();
        assert_eq!(writes, [true, true, true, false, false]);
        // Another kind has its own budget.
        assert!(b.admit('b', 5).write);
        // Not over yet at 999 ms.
        assert!(b.flush(999).is_empty());
        // 'a' is over at 1000 ms and left two out; 'b' began at 5 ms.
        assert_eq!(
            b.flush(1000),
            vec![Suppressed {
                kind: 'a',
                count: 2,
                over_ms: 1000
            }]
        );
        assert_eq!(b.windows.len(), 1);
        // 'b' left nothing out: it ends silently.
        assert!(b.flush(1005).is_empty());
        assert!(b.windows.is_empty());
        // A new interval starts with the next line.
        let a = b.admit('a', 1500);
        assert!(a.write && a.ended.is_empty());
    }

    #[test]
    fn a_line_after_the_interval_tells_what_it_left_out_first() {
        let mut b = LogBudget::new(1, 1000);
        assert!(b.admit('a', 0).write);
        assert!(!b.admit('a', 10).write);
        let late = b.admit('a', 5000);
        assert!(late.write, "a new interval");
        assert_eq!(
            late.ended,
            vec![Suppressed {
                kind: 'a',
                count: 1,
                over_ms: 5000
            }]
        );
    }

    #[test]
    fn a_flood_writes_a_bounded_number_of_lines_and_loses_no_count() {
        // 3,000 refusals over 90 s, one every 30 ms, on two sources.
        let mut b = NoteBudget::default();
        let mut lines = Vec::new();
        for i in 0..3000 {
            let source = if i % 3 == 0 {
                Source::Canonical
            } else {
                Source::Pagerduty
            };
            lines.extend(b.lines(vec![refused(source)], at(i * 30)));
        }
        // A request with no note after the flood tells the last interval.
        lines.extend(b.lines(vec![], at(3000 * 30 + INTERVAL_MS)));
        let written = lines.iter().filter(|n| n.repeated.is_some()).count();
        let summaries: Vec<&Note> = lines.iter().filter(|n| n.repeated.is_none()).collect();
        // Two intervals (0–60 s, 60–90 s) × two sources.
        assert_eq!(written, 4 * LINES_PER_INTERVAL as usize);
        assert_eq!(summaries.len(), 4);
        let told: u64 = summaries
            .iter()
            .map(|n| n.message.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(told + written as u64, 3000, "every refusal written or told");
        // Canonical's first interval (0–60 s) held 667 refusals.
        assert!(
            summaries[0]
                .message
                .starts_with("657 more 401s on /webhooks/canonical suppressed in the last 60s"),
            "{}",
            summaries[0].message
        );
        assert!(summaries.iter().all(|n| n.level == NoteLevel::Warn));
    }

    #[test]
    fn other_notes_are_always_written_in_order() {
        let mut b = NoteBudget::default();
        let info = Note {
            level: NoteLevel::Info,
            message: "pagerduty X ignored".into(),
            repeated: None,
        };
        for i in 0..100 {
            let out = b.lines(vec![info.clone(), refused(Source::Jsm)], at(i));
            assert_eq!(out[0], info);
            assert_eq!(out.len(), if i < 10 { 2 } else { 1 });
        }
    }

    #[test]
    fn one_suppressed_line_is_told_in_the_singular() {
        let mut b = NoteBudget::default();
        for i in 0..=LINES_PER_INTERVAL {
            b.lines(vec![refused(Source::Opsgenie)], at(i64::from(i)));
        }
        let out = b.lines(vec![], at(INTERVAL_MS + 1500));
        assert_eq!(out.len(), 1);
        assert!(
            out[0]
                .message
                .starts_with("1 more 401 on /webhooks/opsgenie suppressed in the last 62s"),
            "{}",
            out[0].message
        );
    }
}
