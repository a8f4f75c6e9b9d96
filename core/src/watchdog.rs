//! The watchdog's rules: when a group is read again, and what to do when a
//! read shows Genesys differs from what the open incidents want.
//!
//! The reconciler (`crate::reconcile`) reads every group it knows again every
//! `period` (every `converging` after it wrote the group, to see the change
//! stick), and hands each read that differs from the target to [`judge`].
//! The rules (docs/convergence.md, "The watchdog" and "People win"):
//!
//! - **An incident event, or an explicit resume, decides** ([`authority`]).
//!   A cycle that one of them started writes whatever a person did (people
//!   win only until the incidents change), unless that person changed the
//!   group after the event: then their change is the last word.
//! - **People win.** A change we did not make — a `version` we neither wrote
//!   nor accepted, stamped by another `modifiedByApp` (or by none: a person) —
//!   is not reverted: the group is marked overridden and held until the next
//!   incident event or resume.
//! - **A transition is ours to make at once**: the ledger wants something
//!   other than what Genesys was last brought to.
//! - **Drift is corrected after the grace period, not before**: Genesys moved
//!   away from a target it had reached, by our own client (another replica,
//!   a script with our credentials). The grace runs from the first read that
//!   saw the drift, so the correction never comes earlier than `grace` after
//!   the change itself.
//! - **Two writers with our credentials are not fought** (*contention*):
//!   drift by our own client is corrected twice, but the third
//!   ([`CONTENDED_AT_DRIFT`]) within [`WatchdogSettings::contention_window`]
//!   is not: the group is flagged *contended* and its drift is no longer
//!   corrected. Two emr-edge instances against one org (or a script with
//!   our OAuth client) otherwise flip a group every grace period, each
//!   taking the other's writes for drift. An incident event or a resume
//!   clears the flag (an event decides), and so does a whole window with
//!   Genesys as wanted and no change by our client that we did not make
//!   ([`contention_over`]). The corrections stay counted through a clear,
//!   so a fight that starts again is flagged at its first drift.
//! - **After a restart**, a group found enabled by our own client while the
//!   rebuilt ledger wants it off is adopted (kept on, as a synthetic incident
//!   that expires), never switched off blind.
//!
//! Everything here is pure: the caller passes `now` and what it knows.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::GroupId;

/// The `genesys.watchdog` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// Every known group is read again this often (at least 5 s).
    pub period_seconds: u32,
    /// …and this soon after a write of ours, to see it stick.
    pub converging_seconds: u32,
    /// Drift by our own client is corrected once it has lasted this long.
    pub grace_seconds: u32,
    /// Groups to watch (and to check at start) besides `default_group`,
    /// `groups_by_incident_type` and the data-table rows: groups only mapping
    /// rules name.
    pub groups: Vec<String>,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            period_seconds: 30,
            converging_seconds: 5,
            grace_seconds: 10,
            groups: Vec::new(),
        }
    }
}

/// Floor of `period_seconds`: the watchdog must not become a poller.
pub const MIN_PERIOD_SECONDS: u32 = 5;

/// The drift by our own client, counted within the contention window, that
/// is not corrected but flags the group *contended*: the third.
///
/// One drift is someone using our credentials once, or the overlap of a
/// rolling restart; two in a window can still be a one-off (a script run
/// twice, an overlap that lasted two checks). Three, each outlasting the
/// grace, is two writers taking turns: with the defaults (period 30 s, grace
/// 10 s) two instances flip a group about every 25 s, so the third drift
/// comes within two minutes of the fight starting.
pub const CONTENDED_AT_DRIFT: u32 = 3;
/// The shortest contention window: drift corrections older than this do not
/// count.
pub const CONTENTION_WINDOW_MIN: Duration = Duration::seconds(600);

/// The watchdog section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogSettings {
    pub period: Duration,
    pub converging: Duration,
    pub grace: Duration,
    pub groups: Vec<GroupId>,
}

impl WatchdogSettings {
    /// When a group that just ended a cycle is read again.
    pub fn next_check(&self, now: DateTime<Utc>, wrote: bool) -> DateTime<Utc> {
        now + if wrote { self.converging } else { self.period }
    }

    /// How far back drift corrections count toward contention: ten minutes
    /// ([`CONTENTION_WINDOW_MIN`]), or longer when the period is so long that
    /// a fight needs longer to show [`CONTENDED_AT_DRIFT`] drifts. In a fight
    /// one instance's next drift comes at most two periods and two graces
    /// after its previous correction (the other instance's check and grace,
    /// then its own); the window holds three such turns.
    pub fn contention_window(&self) -> Duration {
        let turn = (self.period + self.grace) * 2;
        (turn * 3).max(CONTENTION_WINDOW_MIN)
    }

    pub fn view(&self) -> Value {
        json!({
            "periodSeconds": self.period.num_seconds(),
            "convergingSeconds": self.converging.num_seconds(),
            "graceSeconds": self.grace.num_seconds(),
            "contendedAtDrift": CONTENDED_AT_DRIFT,
            "contentionWindowSeconds": self.contention_window().num_seconds(),
        })
    }
}

impl Default for WatchdogSettings {
    fn default() -> Self {
        Self {
            period: Duration::seconds(30),
            converging: Duration::seconds(5),
            grace: Duration::seconds(10),
            groups: Vec::new(),
        }
    }
}

/// Who last wrote a group, as far as we can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Our OAuth client (this process, an earlier one, or a replica).
    Ours,
    /// A person or another app.
    Foreign,
    /// We do not know our own client's name yet.
    Unknown,
}

/// Tells our writes from others' by `modifiedByApp`. `client_id` always
/// counts as ours; `our_app` is the name Genesys stamps on our writes, once
/// known (from a write of ours or `GET /api/v2/tokens/me`). No
/// `modifiedByApp` at all means a person wrote it.
pub fn writer(modified_by_app: Option<&str>, client_id: &str, our_app: Option<&str>) -> Writer {
    match modified_by_app {
        None => Writer::Foreign,
        Some(app) if app == client_id => Writer::Ours,
        Some(app) => match our_app {
            Some(ours) if ours == app => Writer::Ours,
            Some(_) => Writer::Foreign,
            None => Writer::Unknown,
        },
    }
}

/// The latest drift corrections of one group, to tell a one-off drift from
/// two writers taking turns. It keeps the last `CONTENDED_AT_DRIFT - 1`
/// times only: memory stays a few bytes per group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Corrections(VecDeque<DateTime<Utc>>);

impl Corrections {
    /// A drift correction decided at `at`.
    pub fn record(&mut self, at: DateTime<Utc>) {
        self.0.push_back(at);
        let keep = usize::try_from(CONTENDED_AT_DRIFT.saturating_sub(1)).unwrap_or(usize::MAX);
        while self.0.len() > keep {
            self.0.pop_front();
        }
    }

    /// Corrections decided within `window` before `now`.
    pub fn recent(&self, now: DateTime<Utc>, window: Duration) -> u32 {
        let n = self.0.iter().filter(|at| now - **at < window).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Whether a contended group is given back by itself: Genesys is as the
/// incidents want, and no read showed a change by our own client that we
/// did not make for a whole window (since `last_seen`). Held out of sync,
/// it stays held however quiet: writing then is what starts a fight again.
pub fn contention_over(
    in_sync: bool,
    last_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    window: Duration,
) -> bool {
    in_sync && now - last_seen >= window
}

/// What the reconciler knows when a read differs from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// An incident event or a resume started this cycle.
    pub authorized: bool,
    /// First read of the group since start (recovery).
    pub adopt_check: bool,
    /// Held for a person already.
    pub overridden: bool,
    /// The target differs from what Genesys was last brought to.
    pub transition: bool,
    pub observed_enabled: bool,
    pub target_enabled: bool,
    /// The read shows a version we neither wrote nor accepted (always false
    /// for drivers without versions).
    pub new_version: bool,
    pub writer: Writer,
    /// When drift was first seen, if it is being timed.
    pub drift_since: Option<DateTime<Utc>>,
    /// Flagged contended already: its drift is not corrected.
    pub contended: bool,
    /// Drift corrections of the group within the contention window.
    pub recent_corrections: u32,
    pub now: DateTime<Utc>,
    pub grace: Duration,
}

/// What to do about a read that differs from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write the target. `corrects_drift`: the write ends drift that outlasted
    /// the grace period.
    Write { corrects_drift: bool },
    /// A person changed it: mark the group overridden and do not write it.
    Override,
    /// Overridden already: do not write it.
    Hold,
    /// Our own client moved it again: the third drift
    /// ([`CONTENDED_AT_DRIFT`]) within the contention window. Flag the group contended and do not write it.
    Contended,
    /// Contended already: its drift is not corrected.
    HoldContended,
    /// Our own client moved it: read again at `correct_at`, correct then.
    Drift {
        since: DateTime<Utc>,
        correct_at: DateTime<Utc>,
    },
    /// After a restart: keep the group on as a synthetic incident.
    Adopt,
    /// Whose change it is depends on our own client's name: learn it first.
    NeedIdentity,
}

/// Whether an incident event's (or a resume's) say over a read holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// No event or resume started this cycle.
    None,
    /// The event decides: it may write over what it finds.
    Holds,
    /// Someone else changed the group after the event: that change is
    /// their last word, and the event does not write over it.
    Void,
    /// Changed after the event by a writer we cannot tell yet: learn our
    /// client's name first.
    Unknown,
}

/// The first rule of the module doc: an incident event (or resume)
/// decides only over changes made before it. A change after it — seen as a
/// version that moved during the cycle, or stamped later than the event
/// (`changed_after`) — by someone other than our client is that person's
/// last word. [`judge`] then takes the result as [`Facts::authorized`].
pub fn authority(authorized: bool, changed_after: bool, writer: Writer) -> Authority {
    match (authorized, changed_after, writer) {
        (false, _, _) => Authority::None,
        (true, false, _) | (true, true, Writer::Ours) => Authority::Holds,
        (true, true, Writer::Foreign) => Authority::Void,
        (true, true, Writer::Unknown) => Authority::Unknown,
    }
}

/// The rules of the module doc, in order.
pub fn judge(f: &Facts) -> Verdict {
    if f.authorized {
        return Verdict::Write {
            corrects_drift: false,
        };
    }
    if f.adopt_check && f.observed_enabled && !f.target_enabled {
        return match f.writer {
            Writer::Ours => Verdict::Adopt,
            Writer::Foreign => Verdict::Override,
            Writer::Unknown => Verdict::NeedIdentity,
        };
    }
    if f.overridden {
        return Verdict::Hold;
    }
    if f.new_version {
        match f.writer {
            Writer::Foreign => return Verdict::Override,
            Writer::Unknown => return Verdict::NeedIdentity,
            Writer::Ours => {}
        }
    }
    if f.transition {
        return Verdict::Write {
            corrects_drift: false,
        };
    }
    if f.contended {
        return Verdict::HoldContended;
    }
    let since = f.drift_since.unwrap_or(f.now).min(f.now);
    let correct_at = since + f.grace;
    if f.now < correct_at {
        Verdict::Drift { since, correct_at }
    } else if f.recent_corrections.saturating_add(1) >= CONTENDED_AT_DRIFT {
        Verdict::Contended
    } else {
        Verdict::Write {
            corrects_drift: true,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
    }

    /// Genesys off, incidents want it on, nothing special.
    fn facts() -> Facts {
        Facts {
            authorized: false,
            adopt_check: false,
            overridden: false,
            transition: false,
            observed_enabled: false,
            target_enabled: true,
            new_version: false,
            writer: Writer::Ours,
            drift_since: None,
            contended: false,
            recent_corrections: 0,
            now: t(100),
            grace: Duration::seconds(10),
        }
    }

    const WRITE: Verdict = Verdict::Write {
        corrects_drift: false,
    };

    #[test]
    fn an_event_decides_only_over_changes_made_before_it() {
        use Writer::{Foreign, Ours, Unknown};
        let table = [
            // (authorized, changed after the event, writer) → authority
            (false, false, Foreign, Authority::None),
            (false, true, Foreign, Authority::None),
            (true, false, Foreign, Authority::Holds),
            (true, true, Ours, Authority::Holds),
            (true, true, Foreign, Authority::Void),
            (true, true, Unknown, Authority::Unknown),
        ];
        for (authorized, changed_after, writer, want) in table {
            assert_eq!(
                authority(authorized, changed_after, writer),
                want,
                "{authorized} {changed_after} {writer:?}"
            );
        }
    }

    #[test]
    fn writers_are_told_apart_by_modified_by_app() {
        assert_eq!(writer(Some("cid"), "cid", None), Writer::Ours);
        assert_eq!(
            writer(Some("emr-edge"), "cid", Some("emr-edge")),
            Writer::Ours
        );
        assert_eq!(
            writer(Some("Genesys Cloud Admin UI"), "cid", Some("emr-edge")),
            Writer::Foreign
        );
        assert_eq!(writer(Some("emr-edge"), "cid", None), Writer::Unknown);
        assert_eq!(writer(None, "cid", Some("emr-edge")), Writer::Foreign);
    }

    #[test]
    fn an_incident_event_or_resume_always_writes() {
        for overridden in [false, true] {
            let f = Facts {
                authorized: true,
                overridden,
                new_version: true,
                writer: Writer::Foreign,
                ..facts()
            };
            assert_eq!(judge(&f), WRITE);
        }
    }

    #[test]
    fn a_transition_is_written_at_once() {
        let f = Facts {
            transition: true,
            ..facts()
        };
        assert_eq!(judge(&f), WRITE);
        // Even when our own client changed it meanwhile.
        let f = Facts {
            transition: true,
            new_version: true,
            ..facts()
        };
        assert_eq!(judge(&f), WRITE);
    }

    #[test]
    fn drift_by_our_client_is_corrected_after_the_grace_not_before() {
        let first = judge(&Facts {
            new_version: true,
            ..facts()
        });
        assert_eq!(
            first,
            Verdict::Drift {
                since: t(100),
                correct_at: t(110)
            }
        );
        let early = judge(&Facts {
            drift_since: Some(t(100)),
            now: t(109),
            ..facts()
        });
        assert!(matches!(early, Verdict::Drift { correct_at, .. } if correct_at == t(110)));
        let due = judge(&Facts {
            drift_since: Some(t(100)),
            now: t(110),
            ..facts()
        });
        assert_eq!(
            due,
            Verdict::Write {
                corrects_drift: true
            }
        );
        // A zero grace corrects at the first sight.
        let now = judge(&Facts {
            grace: Duration::zero(),
            ..facts()
        });
        assert_eq!(
            now,
            Verdict::Write {
                corrects_drift: true
            }
        );
    }

    #[test]
    fn a_change_by_someone_else_is_never_written_over() {
        for transition in [false, true] {
            let f = Facts {
                new_version: true,
                writer: Writer::Foreign,
                transition,
                ..facts()
            };
            assert_eq!(judge(&f), Verdict::Override);
        }
        let held = Facts {
            overridden: true,
            transition: true,
            ..facts()
        };
        assert_eq!(judge(&held), Verdict::Hold);
        let unknown = Facts {
            new_version: true,
            writer: Writer::Unknown,
            ..facts()
        };
        assert_eq!(judge(&unknown), Verdict::NeedIdentity);
        // A version we know (ours, or accepted) is no one's new change.
        let known = Facts {
            writer: Writer::Foreign,
            transition: true,
            ..facts()
        };
        assert_eq!(judge(&known), WRITE);
    }

    #[test]
    fn after_a_restart_our_enabled_group_is_adopted_not_switched_off() {
        let base = Facts {
            adopt_check: true,
            observed_enabled: true,
            target_enabled: false,
            new_version: true,
            transition: true,
            ..facts()
        };
        assert_eq!(judge(&base), Verdict::Adopt);
        assert_eq!(
            judge(&Facts {
                writer: Writer::Foreign,
                ..base.clone()
            }),
            Verdict::Override
        );
        assert_eq!(
            judge(&Facts {
                writer: Writer::Unknown,
                ..base.clone()
            }),
            Verdict::NeedIdentity
        );
        // An event that arrived meanwhile decides instead.
        assert_eq!(
            judge(&Facts {
                authorized: true,
                ..base
            }),
            WRITE
        );
    }

    /// Drift by our own client that outlasted the grace.
    fn drift_due() -> Facts {
        Facts {
            new_version: true,
            drift_since: Some(t(90)),
            ..facts()
        }
    }

    const CORRECT: Verdict = Verdict::Write {
        corrects_drift: true,
    };

    #[test]
    fn the_third_drift_by_our_client_within_the_window_is_not_corrected() {
        // The first and the second are corrected: a one-off, or two.
        for recent_corrections in [0, 1] {
            let f = Facts {
                recent_corrections,
                ..drift_due()
            };
            assert_eq!(judge(&f), CORRECT, "{recent_corrections}");
        }
        let third = Facts {
            recent_corrections: 2,
            ..drift_due()
        };
        assert_eq!(judge(&third), Verdict::Contended);
        // Still timed against the grace first: a drift that ends by itself
        // within it is no fight.
        let early = Facts {
            now: t(95),
            ..third.clone()
        };
        assert!(matches!(judge(&early), Verdict::Drift { .. }));
        // Once contended, drift is neither timed nor corrected…
        for f in [drift_due(), facts()] {
            let held = Facts {
                contended: true,
                ..f
            };
            assert_eq!(judge(&held), Verdict::HoldContended);
        }
        // …but an incident event or resume decides, a transition of our own
        // ledger is made, and a person's change still wins.
        let contended = Facts {
            contended: true,
            ..drift_due()
        };
        let event = Facts {
            authorized: true,
            ..contended.clone()
        };
        assert_eq!(judge(&event), WRITE);
        let transition = Facts {
            transition: true,
            ..contended.clone()
        };
        assert_eq!(judge(&transition), WRITE);
        let person = Facts {
            writer: Writer::Foreign,
            ..contended
        };
        assert_eq!(judge(&person), Verdict::Override);
    }

    #[test]
    fn corrections_count_within_the_window_only_and_few_are_kept() {
        let window = Duration::seconds(600);
        let mut c = Corrections::default();
        assert_eq!(c.recent(t(0), window), 0);
        c.record(t(0));
        c.record(t(100));
        assert_eq!(c.recent(t(100), window), 2);
        // The first ages out of the window; the second is still in it.
        assert_eq!(c.recent(t(600), window), 1);
        assert_eq!(c.recent(t(700), window), 0);
        // Only the latest CONTENDED_AT_DRIFT - 1 are kept.
        for s in 0..50 {
            c.record(t(1_000 + s));
        }
        assert_eq!(c.0.len(), 2);
        assert_eq!(c.recent(t(1_049), window), 2);
    }

    #[test]
    fn the_contention_window_is_ten_minutes_or_three_turns_of_a_fight() {
        let s = WatchdogSettings::default();
        assert_eq!(s.contention_window(), Duration::seconds(600));
        let fast = WatchdogSettings {
            period: Duration::seconds(5),
            grace: Duration::zero(),
            ..WatchdogSettings::default()
        };
        assert_eq!(fast.contention_window(), Duration::seconds(600));
        // Checks every 5 minutes: a fight takes longer to show 3 drifts.
        let slow = WatchdogSettings {
            period: Duration::seconds(300),
            grace: Duration::seconds(10),
            ..WatchdogSettings::default()
        };
        assert_eq!(slow.contention_window(), Duration::seconds(6 * 310));
    }

    #[test]
    fn a_contended_group_is_given_back_after_a_quiet_window_in_sync_only() {
        let w = Duration::seconds(600);
        assert!(!contention_over(true, t(0), t(599), w));
        assert!(contention_over(true, t(0), t(600), w));
        // Out of sync it stays held, however long it is quiet.
        assert!(!contention_over(false, t(0), t(100_000), w));
    }

    #[test]
    fn next_checks_come_sooner_after_a_write() {
        let s = WatchdogSettings::default();
        assert_eq!(s.next_check(t(0), false), t(30));
        assert_eq!(s.next_check(t(0), true), t(5));
    }
}
