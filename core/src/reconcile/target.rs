//! What the ledger wants for a group ([`Target`]) and the data-table row
//! to write for it.

use chrono::{DateTime, Utc};

use crate::event::GroupId;
use crate::genesys::driver::Target;
use crate::genesys::models::QueueRow;
use crate::ledger::Ledger;
use crate::recovery;

use super::{rfc3339, Action, Reconciler};

impl Reconciler {
    /// What the ledger wants for `g` now.
    pub(super) fn target(&self, g: &GroupId, ledger: &Ledger) -> Target {
        let d = ledger.desired_for(g);
        let queues: Vec<String> = d.queues.iter().map(|q| q.as_str().to_owned()).collect();
        let incidents: Vec<String> = d
            .incidents
            .iter()
            .map(|k| k.id.as_str().to_owned())
            .collect();
        let reason = if d.enabled {
            let mut types: Vec<&str> = Vec::new();
            for k in &d.incidents {
                if let Some(inc) = ledger.get(k) {
                    if !types.contains(&inc.incident_type.as_str()) {
                        types.push(inc.incident_type.as_str());
                    }
                }
            }
            format!(
                "{}: {} - emergency routing on (emr-edge)",
                incidents.join(", "),
                types.join(", ")
            )
        } else {
            let previous = self
                .groups
                .get(g)
                .and_then(|st| st.synced.as_ref())
                .map(|t| t.incidents.join(", "))
                .filter(|s| !s.is_empty());
            match previous {
                Some(ids) => format!("{ids}: Resolved - emergency routing off (emr-edge)"),
                None => "No open incidents - emergency routing off (emr-edge)".to_owned(),
            }
        };
        Target {
            enabled: d.enabled,
            queues,
            incidents,
            reason: crate::genesys::answer::truncate(&reason, 500),
        }
    }

    /// Whether two targets need the same writes (the reason never does).
    pub(super) fn same_target(&self, g: &GroupId, a: &Target, b: &Target) -> bool {
        let has_row = self.cfg.row_key_for(g).is_some();
        a.enabled == b.enabled
            && (!(has_row || self.driver.tracks_queues()) || a.queues == b.queues)
            && (!has_row || a.incidents == b.incidents)
    }

    /// The row write for `target`, unless the last row written matches.
    pub(super) fn row_to_write(
        &self,
        g: &GroupId,
        target: &Target,
        ledger: &Ledger,
        now: DateTime<Utc>,
    ) -> Option<Action> {
        let table = self.cfg.datatable.as_ref()?.id.clone();
        let key = self.cfg.row_key_for(g)?;
        let row = QueueRow::build(
            key,
            &target.queues,
            &target.incidents,
            target.enabled,
            rfc3339(now),
            self.cfg
                .persists_incidents()
                .then(|| recovery::encode(g, &ledger.open_incidents_of(g))),
        );
        let written = self.groups.get(g).and_then(|st| st.row_written.as_ref());
        match written {
            Some(w) if w.same_content(&row) => None,
            _ => Some(Action::Row {
                table,
                row,
                create: false,
            }),
        }
    }
}
