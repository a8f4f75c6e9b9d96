//! The `/emr/*` endpoints a filter answers from what the service
//! published: an incident's status (the board, else the ignored notes,
//! else the queue's dedupe record), the state view, health, and a resume
//! queued for the service.

use super::*;

/// Whether an event the status board does not show is waiting for the
/// service.
enum Queued {
    Yes(RoutingMode),
    /// Accepted, and recorded since: pruned or not yet published.
    Recorded,
    No,
}

/// The 404 for a resume of a group the config does not name.
fn unknown_group(group: &GroupId, known: &std::collections::BTreeSet<GroupId>) -> Problem {
    /// Listed by name at most; a config names few groups.
    const LISTED: usize = 8;
    let listed: Vec<&str> = known.iter().take(LISTED).map(GroupId::as_str).collect();
    let message = match (known.len(), listed.join(", ")) {
        (0, _) => "is not configured: the config names no emergency group".to_owned(),
        (n, names) if n > LISTED => {
            format!("is not configured: the config names {n} emergency groups ({names}, …)")
        }
        (_, names) => format!("is not configured: the config names {names}"),
    };
    Problem::not_found(format!(
        "emergency group {} is not one emr-edge drives: only the groups its config names \
         (genesys.default_group, groups_by_incident_type, datatable.rows_by_group, \
         watchdog.groups, rules' group) are driven",
        text::quoted(group.as_str())
    ))
    .with_error("group", message)
}

/// What [`Intake::lookup`] found.
pub(super) enum Lookup {
    Found(serde_json::Value),
    /// Several sources use the id and none was named.
    Ambiguous(Vec<Source>),
    Unknown,
}

/// The value of `name` in a query string (`a=1&name=value`), undecoded:
/// the values asked for here are plain words.
pub(super) fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What `?source=` may name.
fn source_names() -> String {
    let names: Vec<&str> = Source::ANY.iter().map(|s| s.as_str()).collect();
    format!("must be one of {}", names.join(", "))
}

/// Where an incident's status is read: qualified by its source, since an
/// id is unique within its source only.
pub fn status_url(source: Source, id: &str) -> String {
    format!("{STATUS_PREFIX}{id}?source={source}")
}

impl Intake<'_> {
    pub(super) fn state(&self) -> Handled<HeadersStep> {
        match self.store.get(status::STATE_KEY) {
            Ok(v) => {
                let body = v
                    .value
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| b"{\"groups\":[]}".to_vec());
                Handled::new(
                    HeadersStep::Respond(Response::json(200, body)),
                    vec![Counter::StatusServed],
                )
            }
            Err(e) => self.unavailable(&e),
        }
    }

    /// What the service's heartbeat says; a failed read is the answer.
    fn liveness(&self, now: DateTime<Utc>) -> Result<Liveness, Handled<HeadersStep>> {
        match self.store.get(liveness::HEARTBEAT_KEY) {
            Ok(v) => Ok(Liveness::assess(v.value.as_deref(), now)),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// The group a path names, percent-decoded (400 when the encoding is
    /// broken; 422 for no group id): one the config names, or a 404, since
    /// emr-edge drives no other.
    pub(super) fn configured_group(&self, raw: &str) -> Result<GroupId, Handled<HeadersStep>> {
        let Some(id) = text::percent_decode(raw) else {
            return Err(refused(
                &Problem::bad_request(format!(
                    "the group id in the path, {}, is not valid percent-encoding",
                    text::quoted(raw)
                ))
                .with_error(
                    "group",
                    "must be percent-encoded: '%' followed by two hex digits, as UTF-8",
                ),
            ));
        };
        let group = GroupId::parse(&id).map_err(|e| {
            refused(
                &Problem::new(422, format!("{} is not a group id", text::quoted(&id)))
                    .with_error("group", e.0),
            )
        })?;
        if !self.config.groups.contains(&group) {
            return Err(refused(&unknown_group(&group, &self.config.groups)));
        }
        Ok(group)
    }

    /// The source a status query names, if any; 422 for a name that is
    /// none.
    pub(super) fn named_source(name: Option<&str>) -> Result<Option<Source>, Handled<HeadersStep>> {
        name.map(|name| {
            Source::from_name(name).ok_or_else(|| {
                refused(
                    &Problem::new(422, format!("{} is not a source", text::quoted(name)))
                        .with_error("source", source_names()),
                )
            })
        })
        .transpose()
    }

    /// What the status board, or else the ignored notes, hold for `id`.
    pub(super) fn lookup(
        &self,
        id: &str,
        source: Option<Source>,
    ) -> Result<Lookup, Handled<HeadersStep>> {
        match status::find(self.store, id, source) {
            Ok(status::Found::One(v)) => Ok(Lookup::Found(v)),
            Ok(status::Found::Ambiguous(sources)) => Ok(Lookup::Ambiguous(sources)),
            Ok(status::Found::Nothing) => match ignored::find(self.store, id, source) {
                Ok(Some(v)) => Ok(Lookup::Found(v)),
                Ok(None) => Ok(Lookup::Unknown),
                Err(e) => Err(self.unavailable(&e)),
            },
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// `GET /emr/ready`: 200 while this replica takes webhooks; 503 with
    /// `Retry-After` and the reason when it does not: its service has
    /// stopped, or (cluster mode) etcd is failing or has not granted the
    /// lease its events go on yet. Genesys failing does not make it unready:
    /// webhooks are still accepted and kept.
    pub(super) fn ready(&self, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let mut reasons: Vec<String> = match self.liveness(now) {
            Ok(l) => l.down().into_iter().collect(),
            Err(refused) => return refused,
        };
        if let Some(cluster) = &self.config.cluster {
            match self.store.get(liveness::READY_KEY) {
                Ok(v) => reasons.extend(liveness::read_health(v.value.as_deref())),
                Err(e) => return self.unavailable(&e),
            }
            if crate::etcd::retention::current(self.store, now).is_none() {
                reasons.push("no lease from etcd for the events yet".to_owned());
            }
            if cluster.auth.is_some() && crate::etcd::token::current(self.store).is_none() {
                reasons.push("no etcd token yet".to_owned());
            }
        }
        let response = if reasons.is_empty() {
            Response::json(200, br#"{"status":"ready"}"#.to_vec())
        } else {
            Response::problem(
                &Problem::new(
                    503,
                    format!("this replica takes no webhooks now: {}", reasons.join("; ")),
                )
                .with_header("retry-after", "1"),
            )
        };
        Handled::new(HeadersStep::Respond(response), vec![Counter::StatusServed])
    }

    /// `GET /emr/health`: 200 while the service beats, 503 when it has
    /// stopped or not started (see [`crate::liveness`]).
    pub(super) fn health(&self, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let beat = match self.liveness(now) {
            Ok(l) => l,
            Err(refused) => return refused,
        };
        let problem = match beat {
            Liveness::Alive { age_ms } => {
                // Up, but told by Genesys it cannot switch: still a 200, so
                // a liveness probe does not restart it for a wrong secret.
                // Unreadable is no "ok": a 503, as for the heartbeat.
                let reasons = match self.store.get(liveness::HEALTH_KEY) {
                    Ok(v) => liveness::read_health(v.value.as_deref()),
                    Err(e) => return self.unavailable(&e),
                };
                let body = if reasons.is_empty() {
                    serde_json::json!({"status": "ok", "heartbeatAgeMs": age_ms})
                } else {
                    serde_json::json!({"status": "degraded", "reasons": reasons,
                                       "heartbeatAgeMs": age_ms, "stateUrl": STATE_PATH})
                };
                return Handled::new(
                    HeadersStep::Respond(Response::json(200, body.to_string().into_bytes())),
                    vec![Counter::StatusServed],
                );
            }
            down => Problem::new(503, down.down().unwrap_or_default()),
        };
        Handled::new(
            HeadersStep::Respond(Response::problem(&problem)),
            vec![Counter::StatusServed],
        )
    }

    /// Queues a resume for the service; answered at once (the body, if any,
    /// is not read). The id is percent-decoded first (400 when the encoding
    /// is broken); a group the config does not name is a 404, since no
    /// other group is ever driven ([`Config::groups`]).
    pub(super) fn resume(&self, raw: &str, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let group = match self.configured_group(raw) {
            Ok(g) => g,
            Err(refusal) => return refusal,
        };
        let message = ControlMessage {
            control: Control::Resume {
                group: group.clone(),
                received_ms: now.timestamp_millis(),
            },
        };
        let mut counters = vec![Counter::ResumeQueued];
        if let Err(e) = self.send(&message, &mut counters) {
            return self.unavailable(&e);
        }
        let body = serde_json::json!({
            "group": group,
            "status": "RESUME_QUEUED",
            "stateUrl": STATE_PATH,
        });
        Handled::new(
            HeadersStep::Respond(Response::json(202, body.to_string().into_bytes())),
            counters,
        )
        .note(
            NoteLevel::Info,
            format!("resume of emergency group {group} queued for the service"),
        )
    }

    /// `GET /emr/status/{id}[?source=name]`. An id is unique within its
    /// source only: without `source`, an id two sources use is refused
    /// (409, naming the sources) rather than answered with either.
    pub(super) fn status(
        &self,
        id: &str,
        query: Option<&str>,
        now: DateTime<Utc>,
    ) -> Handled<HeadersStep> {
        let not_found = |detail: String| {
            refused(
                &Problem::not_found(detail).with_error("correlationId", "is not known to emr-edge"),
            )
        };
        let source = match Self::named_source(query_value(query, "source")) {
            Ok(s) => s,
            Err(refusal) => return refusal,
        };
        if CorrelationId::parse(id).is_err() {
            return not_found(format!("no incident {} is known", text::quoted(id)));
        }
        let served = |v: &serde_json::Value| {
            Handled::new(
                HeadersStep::Respond(Response::json(
                    200,
                    serde_json::to_vec(v).unwrap_or_default(),
                )),
                vec![Counter::StatusServed],
            )
        };
        match self.lookup(id, source) {
            Ok(Lookup::Found(v)) => served(&v),
            Ok(Lookup::Ambiguous(sources)) => {
                let names: Vec<String> = sources.iter().map(|s| status_url(*s, id)).collect();
                refused(
                    &Problem::new(
                        409,
                        format!(
                            "several sources have an incident {id}: ask for one of {}",
                            names.join(", ")
                        ),
                    )
                    .with_error("source", "is required: several sources use this id"),
                )
            }
            Ok(Lookup::Unknown) => self.not_on_board(id, source, now),
            Err(refusal) => refusal,
        }
    }

    /// A status lookup the board and the ignored notes know nothing of:
    /// queued, recorded and pruned since, or never seen.
    fn not_on_board(
        &self,
        id: &str,
        source: Option<Source>,
        now: DateTime<Utc>,
    ) -> Handled<HeadersStep> {
        let not_found = |detail: String| {
            refused(
                &Problem::not_found(detail).with_error("correlationId", "is not known to emr-edge"),
            )
        };
        match self.queued(id, source, now) {
            Queued::Yes(mode) => {
                let body = serde_json::json!({
                    "correlationId": id,
                    "routingMode": mode,
                    "status": "PROCESSING",
                    "state": "QUEUED",
                });
                Handled::new(
                    HeadersStep::Respond(Response::json(200, body.to_string().into_bytes())),
                    vec![Counter::StatusServed],
                )
            }
            Queued::Recorded => not_found(format!(
                "incident {id} was accepted and recorded, but is no longer on the status board: \
                     closed incidents are kept for ledger.closed_retention_seconds and at most \
                     ledger.max_closed_incidents"
            )),
            Queued::No => not_found(format!("no incident {} is known", text::quoted(id))),
        }
    }

    /// Whether an incident the board does not show was accepted a moment
    /// ago and waits for the service. Only the sender-keyed routes can be
    /// found this way: a tool event's dedupe key holds its event time.
    fn queued(&self, id: &str, source: Option<Source>, now: DateTime<Utc>) -> Queued {
        let dedupe = Dedupe::new(self.config.intake.dedupe);
        let seen = [Source::Canonical, Source::Standard]
            .into_iter()
            .filter(|s| source.is_none_or(|wanted| wanted == *s))
            .flat_map(|s| [RoutingMode::Active, RoutingMode::Resolved].map(|m| (s, m)))
            .find_map(|(s, m)| {
                let key = event::idempotency_key(s, id, m, now);
                let at = dedupe.seen_at(self.store, &key, now.timestamp()).ok()??;
                Some((m, at))
            });
        let Some((mode, accepted_s)) = seen else {
            return Queued::No;
        };
        // Recorded once the service has recorded an event received after
        // it (the queue keeps order); a second of slack covers the dedupe
        // store's whole seconds and the workers' race to the queue.
        let stored = self
            .store
            .get(liveness::RECORDED_KEY)
            .ok()
            .and_then(|v| v.value);
        let recorded_ms = liveness::read_recorded(stored.as_deref());
        match recorded_ms {
            Some(ms) if ms >= accepted_s.saturating_add(2).saturating_mul(1000) => Queued::Recorded,
            _ => Queued::Yes(mode),
        }
    }
}
