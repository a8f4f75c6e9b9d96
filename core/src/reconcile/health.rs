//! What stops emr-edge from switching, as Genesys has told us:
//! refused client credentials, a group that does not exist (or was given by
//! name), a missing permission, an unreadable data table.
//!
//! Each check is failed by an answer that will not get better by retrying
//! and passed by the next answer that works, so the list says what is wrong
//! *now*: at start, when the first token, the data table and every
//! configured group are read, and later, when a role loses a permission.
//! `/emr/health` answers 200 `degraded` with these reasons, so a probe can
//! tell "up but misconfigured" from "up and able to switch".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::event::GroupId;

/// One thing that has to work for a switch to happen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The OAuth client credentials get a token.
    Credentials,
    /// The data table's rows can be read (recovery at start).
    DataTable,
    /// The emergency group can be read and written.
    Group(GroupId),
}

impl Check {
    fn name(&self) -> String {
        match self {
            Check::Credentials => "credentials".to_owned(),
            Check::DataTable => "datatable".to_owned(),
            Check::Group(g) => format!("group {g}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    since: DateTime<Utc>,
    detail: String,
}

/// The failed checks, and whether the list changed since it was last taken.
#[derive(Debug, Default)]
pub struct Health {
    problems: BTreeMap<Check, Problem>,
    changed: bool,
}

/// Problems listed at most (one per configured group, bounded by config).
const MAX_SHOWN: usize = 25;

impl Health {
    /// `check` failed with `detail`. Returns whether it is news (it was
    /// passing, or failing for another reason): news is logged at error.
    pub fn fail(&mut self, check: Check, detail: String, now: DateTime<Utc>) -> bool {
        if self
            .problems
            .get(&check)
            .is_some_and(|p| p.detail == detail)
        {
            return false;
        }
        self.problems.insert(check, Problem { since: now, detail });
        self.changed = true;
        true
    }

    /// `check` worked. Returns whether it had been failing.
    pub fn pass(&mut self, check: &Check) -> bool {
        let was = self.problems.remove(check).is_some();
        self.changed |= was;
        was
    }

    /// Whether the list changed since the last call (to republish it).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line per failed check, for `/emr/health`.
    pub fn reasons(&self) -> Vec<String> {
        self.problems
            .iter()
            .take(MAX_SHOWN)
            .map(|(check, p)| format!("{}: {}", check.name(), p.detail))
            .collect()
    }

    /// The failed checks of one group, for its entry of `/emr/state`.
    pub fn of_group(&self, g: &GroupId) -> Option<Value> {
        self.problems
            .get(&Check::Group(g.clone()))
            .map(|p| json!({"since": crate::rfc3339::text(p.since), "detail": p.detail}))
    }

    /// For `GET /emr/state`.
    pub fn view(&self) -> Value {
        let problems: Vec<Value> = self
            .problems
            .iter()
            .take(MAX_SHOWN)
            .map(|(check, p)| {
                json!({"check": check.name(), "since": crate::rfc3339::text(p.since), "detail": p.detail})
            })
            .collect();
        json!({
            "status": if self.is_ok() { "ok" } else { "degraded" },
            "problems": problems,
            "problemsTotal": self.problems.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ledger::tests::t;

    #[test]
    fn a_failed_check_is_news_once_and_clears_when_it_works() {
        let mut h = Health::default();
        let g = Check::Group(GroupId::parse("G1").unwrap());
        assert!(h.fail(g.clone(), "404 not found".into(), t(0)));
        assert!(!h.fail(g.clone(), "404 not found".into(), t(5)));
        assert!(h.take_changed());
        assert!(!h.take_changed());
        assert_eq!(h.reasons(), ["group G1: 404 not found"]);
        assert_eq!(h.view()["status"], "degraded");
        // Failing for another reason is news again.
        assert!(h.fail(g.clone(), "403 forbidden".into(), t(6)));
        assert!(h.pass(&g));
        assert!(!h.pass(&g));
        assert!(h.is_ok() && h.take_changed());
        assert_eq!(h.view()["status"], "ok");
    }
}
