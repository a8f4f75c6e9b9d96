//! The flat `/emr/*` answers data actions read ([`crate::data_actions`]):
//! `GET /emr/groups/{id}` and `GET /emr/incidents/{id}[?source=]`.

use super::*;
use crate::data_actions;

impl Intake<'_> {
    /// `GET /emr/groups/{id}`: the group's routing from the published state
    /// view. The id is percent-decoded first (400 when the encoding is
    /// broken); a group the config does not name is a 404, since emr-edge
    /// never drives it.
    pub(super) fn group_routing(&self, raw: &str) -> Handled<HeadersStep> {
        let group = match self.configured_group(raw) {
            Ok(g) => g,
            Err(refusal) => return refusal,
        };
        let state = match self.store.get(status::STATE_KEY) {
            Ok(v) => v.value,
            Err(e) => return self.unavailable(&e),
        };
        let body = data_actions::group_routing(state.as_deref(), &group);
        Handled::new(
            HeadersStep::Respond(Response::json(200, body.to_string().into_bytes())),
            vec![Counter::StatusServed],
        )
    }

    /// `GET /emr/incidents/{id}[?source=name]`: the incident's status,
    /// flat; 200 with `found: false` for an id nobody knows (or one still
    /// on its way to the service). An id several sources use without a
    /// `source` is a 409, as on `/emr/status/{id}`.
    pub(super) fn incident_summary(&self, id: &str, query: Option<&str>) -> Handled<HeadersStep> {
        // A data action sends `source=` when its optional input is left
        // empty: no source named.
        let named = emr::query_value(query, "source").filter(|v| !v.is_empty());
        let source = match Self::named_source(named) {
            Ok(s) => s,
            Err(refusal) => return refusal,
        };
        let found = if CorrelationId::parse(id).is_err() {
            None
        } else {
            match self.lookup(id, source) {
                Ok(emr::Lookup::Found(v)) => Some(v),
                Ok(emr::Lookup::Ambiguous(sources)) => {
                    let names: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
                    return refused(
                        &Problem::new(
                            409,
                            format!("several sources have an incident {id}: name one"),
                        )
                        .with_error(
                            "source",
                            format!("is required: {} use this id", names.join(", ")),
                        ),
                    );
                }
                Ok(emr::Lookup::Unknown) => None,
                Err(refusal) => return refusal,
            }
        };
        let body = data_actions::incident_summary(id, found.as_ref());
        Handled::new(
            HeadersStep::Respond(Response::json(200, body.to_string().into_bytes())),
            vec![Counter::StatusServed],
        )
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::{route, EmrRoute, Route};

    #[test]
    fn the_flat_routes_are_told_from_the_resume_and_the_unknown() {
        assert_eq!(route("/emr/groups/G1"), Route::Emr(EmrRoute::Group("G1")));
        assert_eq!(
            route("/emr/groups/G1/resume"),
            Route::Emr(EmrRoute::Resume("G1"))
        );
        assert_eq!(
            route("/emr/incidents/INC-1?source=pagerduty"),
            Route::Emr(EmrRoute::Incident("INC-1"))
        );
        for unknown in [
            "/emr/groups/",
            "/emr/groups/G1/x",
            "/emr/incidents/",
            "/emr/incidents/a/b",
        ] {
            assert_eq!(route(unknown), Route::Emr(EmrRoute::Unknown), "{unknown}");
        }
    }
}
