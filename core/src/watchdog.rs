//! The watchdog's rules: when a group is read again, and what to do when a
//! read shows Genesys differs from what the open incidents want.
//!
//! The reconciler (`crate::reconcile`) reads every group it knows again every
//! `period` (every `converging` after it wrote the group, to see the change
//! stick), and hands each read that differs from the target to [`judge`].
//! The rules (DESIGN §6):
//!
//! - **An incident event, or an explicit resume, decides.** A cycle that one
//!   of them started writes whatever a person did (people win only until the
//!   incidents change).
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
//! - **After a restart**, a group found enabled by our own client while the
//!   rebuilt ledger wants it off is adopted (kept on, as a synthetic incident
//!   that expires), never switched off blind.
//!
//! Everything here is pure: the caller passes `now` and what it knows.

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

    pub fn view(&self) -> Value {
        json!({
            "periodSeconds": self.period.num_seconds(),
            "convergingSeconds": self.converging.num_seconds(),
            "graceSeconds": self.grace.num_seconds(),
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
    let since = f.drift_since.unwrap_or(f.now).min(f.now);
    let correct_at = since + f.grace;
    if f.now >= correct_at {
        Verdict::Write {
            corrects_drift: true,
        }
    } else {
        Verdict::Drift { since, correct_at }
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
            now: t(100),
            grace: Duration::seconds(10),
        }
    }

    const WRITE: Verdict = Verdict::Write {
        corrects_drift: false,
    };

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

    #[test]
    fn next_checks_come_sooner_after_a_write() {
        let s = WatchdogSettings::default();
        assert_eq!(s.next_check(t(0), false), t(30));
        assert_eq!(s.next_check(t(0), true), t(5));
    }
}
