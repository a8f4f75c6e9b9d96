//! The guide's own contract, `GET`/`POST /api/v2/telephony/emergencyrouting`.
//!
//! Not a real Genesys API (docs/genesys-api.md): it stands for an internal service some sites put in front
//! of Genesys, and backs emr-edge's second driver. A POST asks for `ACTIVE` or `INACTIVE`; the
//! answer and every GET show `PENDING` until the configured propagation delay has passed, then
//! the requested state. Any valid token may call it (the guide's scopes do not exist).

use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::clock::iso_millis;
use crate::errors::ApiError;
use crate::state::App;

/// The routing state as the contract reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoutingState {
    Active,
    Inactive,
    /// A change was accepted and is still propagating.
    Pending,
}

/// Which queues emergency calls go to, and at which priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingConfiguration {
    #[serde(default)]
    pub queue_ids: Vec<String>,
    #[serde(default = "first_priority")]
    pub priority: u32,
}

fn first_priority() -> u32 {
    1
}

impl Default for RoutingConfiguration {
    fn default() -> Self {
        Self {
            queue_ids: Vec::new(),
            priority: first_priority(),
        }
    }
}

/// What `GET /api/v2/telephony/emergencyrouting` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuideRouting {
    pub state: RoutingState,
    pub reason: Option<String>,
    pub routing_configuration: RoutingConfiguration,
    pub last_updated: String,
}

/// A POST body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoutingRequest {
    #[serde(default)]
    reason: Option<String>,
    state: RoutingState,
    #[serde(default)]
    routing_configuration: Option<RoutingConfiguration>,
}

#[derive(Debug, Clone)]
struct Pending {
    target: GuideRouting,
    requested_at: String,
    due: Instant,
}

/// The applied state and, while a change propagates, the pending one.
#[derive(Debug)]
pub(crate) struct GuideStore {
    delay: Duration,
    applied: GuideRouting,
    pending: Option<Pending>,
}

impl GuideStore {
    pub fn new(delay: Duration, now: SystemTime) -> Self {
        Self {
            delay,
            applied: GuideRouting {
                state: RoutingState::Inactive,
                reason: None,
                routing_configuration: RoutingConfiguration::default(),
                last_updated: iso_millis(now),
            },
            pending: None,
        }
    }

    /// The state as of `now`, applying a pending change whose delay has passed.
    pub fn view(&mut self, now: Instant) -> GuideRouting {
        if let Some(pending) = self.pending.take() {
            if pending.due <= now {
                self.applied = pending.target;
            } else {
                self.pending = Some(pending);
            }
        }
        match &self.pending {
            Some(pending) => GuideRouting {
                state: RoutingState::Pending,
                last_updated: pending.requested_at.clone(),
                ..pending.target.clone()
            },
            None => self.applied.clone(),
        }
    }

    /// Accepts a change; it applies after the propagation delay (at once when that is zero).
    fn request(&mut self, request: RoutingRequest, now: Instant, wall: SystemTime) -> GuideRouting {
        let routing_configuration = request
            .routing_configuration
            .unwrap_or_else(|| self.applied.routing_configuration.clone());
        let target = GuideRouting {
            state: request.state,
            reason: request.reason,
            routing_configuration,
            last_updated: iso_millis(wall + self.delay),
        };
        self.pending = Some(Pending {
            target,
            requested_at: iso_millis(wall),
            due: now + self.delay,
        });
        self.view(now)
    }
}

/// `GET /api/v2/telephony/emergencyrouting`
pub(crate) async fn get(State(app): State<App>) -> Json<GuideRouting> {
    Json(app.lock().guide.view(Instant::now()))
}

/// `POST /api/v2/telephony/emergencyrouting`: 202 while the change propagates, 200 when it
/// applied at once.
pub(crate) async fn post(
    State(app): State<App>,
    body: Bytes,
) -> Result<(StatusCode, Json<GuideRouting>), ApiError> {
    let request: RoutingRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!("The request body could not be parsed: {error}"))
    })?;
    if request.state == RoutingState::Pending {
        return Err(ApiError::bad_request(
            "The state field must be ACTIVE or INACTIVE.",
        ));
    }
    let view = app
        .lock()
        .guide
        .request(request, Instant::now(), SystemTime::now());
    let status = if view.state == RoutingState::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activate() -> RoutingRequest {
        RoutingRequest {
            reason: Some("INC-1".to_owned()),
            state: RoutingState::Active,
            routing_configuration: Some(RoutingConfiguration {
                queue_ids: vec!["q1".to_owned()],
                priority: 1,
            }),
        }
    }

    #[test]
    fn a_change_is_pending_until_the_delay_passes() {
        let start = Instant::now();
        let mut guide = GuideStore::new(Duration::from_secs(2), SystemTime::now());
        let answer = guide.request(activate(), start, SystemTime::now());
        assert_eq!(answer.state, RoutingState::Pending);
        assert_eq!(answer.reason.as_deref(), Some("INC-1"));
        assert_eq!(
            guide.view(start + Duration::from_secs(1)).state,
            RoutingState::Pending
        );
        let settled = guide.view(start + Duration::from_secs(2));
        assert_eq!(settled.state, RoutingState::Active);
        assert_eq!(settled.routing_configuration.queue_ids, vec!["q1"]);
    }

    #[test]
    fn without_a_delay_a_change_applies_at_once() {
        let mut guide = GuideStore::new(Duration::ZERO, SystemTime::now());
        let answer = guide.request(activate(), Instant::now(), SystemTime::now());
        assert_eq!(answer.state, RoutingState::Active);
    }
}
