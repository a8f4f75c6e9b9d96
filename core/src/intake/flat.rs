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
        let group = match text::percent_decode(raw).map(|id| GroupId::parse(&id)) {
            Some(Ok(g)) => g,
            Some(Err(e)) => {
                return refused(
                    &Problem::new(422, format!("{} is not a group id", text::quoted(raw)))
                        .with_error("group", e.0),
                )
            }
            None => {
                return refused(
                    &Problem::bad_request(format!(
                        "the group id in the path, {}, is not valid percent-encoding",
                        text::quoted(raw)
                    ))
                    .with_error("group", "must be percent-encoded as UTF-8"),
                )
            }
        };
        if !self.config.groups.contains(&group) {
            return refused(
                &Problem::not_found(format!(
                    "emergency group {} is not one emr-edge drives",
                    text::quoted(group.as_str())
                ))
                .with_error("group", "is not named by the config"),
            );
        }
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
        let named = query.and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == "source")
                .map(|(_, v)| v)
                // A data action sends `source=` when its optional input is
                // left empty: no source named.
                .filter(|v| !v.is_empty())
        });
        let source = match named {
            None => None,
            Some(name) => match Source::from_name(name) {
                Some(s) => Some(s),
                None => {
                    let names: Vec<&str> = Source::ANY.iter().map(|s| s.as_str()).collect();
                    return refused(
                        &Problem::new(422, format!("{} is not a source", text::quoted(name)))
                            .with_error("source", format!("must be one of {}", names.join(", "))),
                    );
                }
            },
        };
        let found = if CorrelationId::parse(id).is_err() {
            None
        } else {
            match status::find(self.store, id, source) {
                Ok(status::Found::One(v)) => Some(v),
                Ok(status::Found::Ambiguous(sources)) => {
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
                Ok(status::Found::Nothing) => match ignored::find(self.store, id, source) {
                    Ok(v) => v,
                    Err(e) => return self.unavailable(&e),
                },
                Err(e) => return self.unavailable(&e),
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
