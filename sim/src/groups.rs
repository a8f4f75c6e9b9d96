//! Architect emergency groups: the model, the store and the API handlers.
//!
//! This is the real switch emr-edge drives (docs/genesys-api.md): `enabled` says whether an emergency is
//! occurring; `state` is only the object's lifecycle. Writes are optimistic: a PUT carries the
//! `version` it read, a stale one gets a 409, and every write bumps `version` and stamps
//! `dateModified` and `modifiedByApp` — which is how emr-edge tells its own writes from a
//! person's in the admin UI.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::clock::iso_millis;
use crate::config::{PERM_GROUP_EDIT, PERM_GROUP_VIEW};
use crate::errors::ApiError;
use crate::query::QueryParams;
use crate::state::App;

const BASE_PATH: &str = "/api/v2/architect/emergencygroups";

/// An Architect emergency group, serialized exactly as Genesys does (camelCase, absent values
/// omitted rather than `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyGroup {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<DomainRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "first_version")]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_modified: Option<String>,
    /// The user id of the person who last wrote it; absent when an app did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<String>,
    /// The name of the OAuth client (or app) that last wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by_app: Option<String>,
    #[serde(default)]
    pub state: GroupLifecycle,
    /// The switch: true while an emergency is occurring.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub emergency_call_flows: Vec<EmergencyCallFlow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

fn first_version() -> u64 {
    1
}

/// The object's lifecycle, not the emergency switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupLifecycle {
    #[default]
    Active,
    Inactive,
    Deleted,
}

/// A reference to another Genesys object (`{id, name, selfUri}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

impl DomainRef {
    /// A reference whose `selfUri` is `{base}/{id}`.
    pub fn new(id: &str, name: &str, base: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: Some(name.to_owned()),
            self_uri: Some(format!("{base}/{id}")),
        }
    }
}

/// An emergency call flow and the IVRs that use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyCallFlow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_flow: Option<DomainRef>,
    #[serde(default)]
    pub ivrs: Vec<DomainRef>,
}

/// Who is writing: stamped on the group as `modifiedByApp` / `modifiedBy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Writer {
    pub app_name: String,
    pub user_id: Option<String>,
}

/// The writable part of a PUT body; read-only fields (`state`, `dateModified`, `selfUri`, …)
/// are ignored, as Genesys ignores them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupUpdate {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    emergency_call_flows: Option<Vec<EmergencyCallFlow>>,
    #[serde(default)]
    division: Option<DomainRef>,
}

/// Why a PUT was refused.
#[derive(Debug, PartialEq, Eq)]
enum UpdateError {
    Invalid(String),
    MissingVersion,
    NotFound,
    VersionMismatch { supplied: u64, current: u64 },
}

impl From<UpdateError> for ApiError {
    fn from(error: UpdateError) -> Self {
        match error {
            UpdateError::Invalid(message) => ApiError::bad_request(message),
            UpdateError::MissingVersion => {
                ApiError::bad_request("A version is required to update an emergency group.")
            }
            UpdateError::NotFound => not_found(),
            UpdateError::VersionMismatch { supplied, current } => {
                ApiError::version_mismatch(supplied, current)
            }
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("The requested emergency group was not found.")
}

/// All emergency groups, by id.
#[derive(Debug, Default)]
pub(crate) struct GroupStore {
    groups: BTreeMap<String, EmergencyGroup>,
}

impl GroupStore {
    pub fn new(seed: &[EmergencyGroup]) -> Self {
        let mut store = Self::default();
        for group in seed {
            store.set(group.clone());
        }
        store
    }

    pub fn get(&self, id: &str) -> Option<&EmergencyGroup> {
        self.groups.get(id)
    }

    pub fn all(&self) -> Vec<EmergencyGroup> {
        self.groups.values().cloned().collect()
    }

    /// Stores `group` as given, except that `selfUri` always points at its API path.
    pub fn set(&mut self, mut group: EmergencyGroup) -> EmergencyGroup {
        group.self_uri = Some(format!("{BASE_PATH}/{}", group.id));
        self.groups.insert(group.id.clone(), group.clone());
        group
    }

    /// The groups whose name matches `filter`, sorted by name.
    fn matching(&self, filter: Option<&str>) -> Vec<&EmergencyGroup> {
        let mut found: Vec<&EmergencyGroup> = self
            .groups
            .values()
            .filter(|group| filter.is_none_or(|filter| name_matches(filter, &group.name)))
            .collect();
        found.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then_with(|| a.id.cmp(&b.id))
        });
        found
    }

    /// A Genesys PUT: full replacement of the writable fields, guarded by `version`.
    fn update(
        &mut self,
        id: &str,
        update: GroupUpdate,
        writer: &Writer,
        now: SystemTime,
    ) -> Result<EmergencyGroup, UpdateError> {
        if update.id.as_deref().is_some_and(|body_id| body_id != id) {
            return Err(UpdateError::Invalid(
                "The id in the request body does not match the id in the path.".to_owned(),
            ));
        }
        let name = match update.name {
            Some(name) if !name.trim().is_empty() => name,
            _ => {
                return Err(UpdateError::Invalid(
                    "The name field is required.".to_owned(),
                ))
            }
        };
        let supplied = update.version.ok_or(UpdateError::MissingVersion)?;
        let group = self.groups.get_mut(id).ok_or(UpdateError::NotFound)?;
        if supplied != group.version {
            return Err(UpdateError::VersionMismatch {
                supplied,
                current: group.version,
            });
        }
        group.name = name;
        group.description = update.description;
        group.enabled = update.enabled.unwrap_or(false);
        group.emergency_call_flows = update.emergency_call_flows.unwrap_or_default();
        if let Some(division) = update.division {
            group.division = Some(division);
        }
        group.version = group.version.saturating_add(1);
        group.date_modified = Some(iso_millis(now));
        group.modified_by = writer.user_id.clone();
        group.modified_by_app = Some(writer.app_name.clone());
        Ok(group.clone())
    }

    /// A control-API write: the fields of `patch` (camelCase, any of them) are set as given.
    /// Unless the patch says otherwise, `version` is bumped and `dateModified` stamped, as any
    /// write would. An unknown id creates the group (the patch must then name it).
    pub fn patch(
        &mut self,
        id: &str,
        patch: Map<String, Value>,
        now: SystemTime,
    ) -> Result<EmergencyGroup, String> {
        let existing = self.groups.get(id);
        let next_version = existing.map_or(1, |group| group.version.saturating_add(1));
        let mut merged = match existing {
            Some(group) => match serde_json::to_value(group) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            },
            None => Map::new(),
        };
        let sets_version = patch.contains_key("version");
        let sets_date = patch.contains_key("dateModified");
        merged.extend(patch);
        merged.insert("id".to_owned(), Value::from(id));
        if !sets_version {
            merged.insert("version".to_owned(), Value::from(next_version));
        }
        if !sets_date {
            merged.insert("dateModified".to_owned(), Value::from(iso_millis(now)));
        }
        let group: EmergencyGroup =
            serde_json::from_value(Value::Object(merged)).map_err(|error| error.to_string())?;
        Ok(self.set(group))
    }
}

/// Name filter: case-insensitive; `*` is a wildcard, and a filter without one matches a
/// substring (so `name=Carrier` finds "Carrier Outage").
fn name_matches(filter: &str, name: &str) -> bool {
    let filter = filter.to_lowercase();
    let name = name.to_lowercase();
    if !filter.contains('*') {
        return name.contains(&filter);
    }
    glob_matches(&filter, &name)
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The Genesys entity listing (`entities` plus paging fields and URIs).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listing {
    entities: Vec<EmergencyGroup>,
    page_size: u64,
    page_number: u64,
    total: u64,
    page_count: u64,
    first_uri: String,
    self_uri: String,
    last_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_uri: Option<String>,
}

fn page_uri(page_size: u64, page_number: u64, name: Option<&str>) -> String {
    let mut params = vec![
        ("pageSize", page_size.to_string()),
        ("pageNumber", page_number.to_string()),
    ];
    if let Some(name) = name {
        params.push(("name", name.to_owned()));
    }
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    format!("{BASE_PATH}?{query}")
}

/// `GET /api/v2/architect/emergencygroups?pageSize=&pageNumber=&name=`
pub(crate) async fn list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<Listing>, ApiError> {
    caller.require(PERM_GROUP_VIEW)?;
    let params = QueryParams::parse(query.as_deref())?;
    let page_size = params.integer("pageSize", 25, 1, 500)?;
    let page_number = params.integer("pageNumber", 1, 1, u64::from(u32::MAX))?;
    let name = params.get("name");
    let state = app.lock();
    let found = state.groups.matching(name);
    let total = u64::try_from(found.len()).unwrap_or(u64::MAX);
    let page_count = total.div_ceil(page_size);
    let skip = usize::try_from(page_number.saturating_sub(1).saturating_mul(page_size))
        .unwrap_or(usize::MAX);
    let take = usize::try_from(page_size).unwrap_or(usize::MAX);
    let entities = found.into_iter().skip(skip).take(take).cloned().collect();
    drop(state);
    let listing = Listing {
        entities,
        page_size,
        page_number,
        total,
        page_count,
        first_uri: page_uri(page_size, 1, name),
        self_uri: page_uri(page_size, page_number, name),
        last_uri: page_uri(page_size, page_count.max(1), name),
        next_uri: (page_number < page_count).then(|| page_uri(page_size, page_number + 1, name)),
        previous_uri: (page_number > 1).then(|| page_uri(page_size, page_number - 1, name)),
    };
    Ok(Json(listing))
}

/// `GET /api/v2/architect/emergencygroups/{id}`
pub(crate) async fn get(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<EmergencyGroup>, ApiError> {
    caller.require(PERM_GROUP_VIEW)?;
    let state = app.lock();
    state
        .groups
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(not_found)
}

/// `PUT /api/v2/architect/emergencygroups/{id}`
pub(crate) async fn put(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EmergencyGroup>, ApiError> {
    caller.require(PERM_GROUP_EDIT)?;
    let update: GroupUpdate = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!("The request body could not be parsed: {error}"))
    })?;
    let writer = caller.writer();
    let mut state = app.lock();
    let group = state
        .groups
        .update(&id, update, &writer, SystemTime::now())?;
    Ok(Json(group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    fn store() -> GroupStore {
        GroupStore::new(&SimConfig::default().emergency_groups)
    }

    fn update(version: Option<u64>, enabled: bool) -> GroupUpdate {
        GroupUpdate {
            id: None,
            name: Some("Default Emergency".to_owned()),
            description: None,
            version,
            enabled: Some(enabled),
            emergency_call_flows: None,
            division: None,
        }
    }

    fn writer() -> Writer {
        Writer {
            app_name: "emr-edge".to_owned(),
            user_id: None,
        }
    }

    const ID: &str = crate::config::DEFAULT_GROUP_ID;

    #[test]
    fn a_write_bumps_the_version_and_stamps_the_writer() {
        let mut groups = store();
        let written = groups
            .update(ID, update(Some(1), true), &writer(), SystemTime::now())
            .unwrap();
        assert_eq!(written.version, 2);
        assert!(written.enabled);
        assert_eq!(written.modified_by_app.as_deref(), Some("emr-edge"));
        assert_eq!(written.modified_by, None);
    }

    #[test]
    fn a_stale_version_is_refused() {
        let mut groups = store();
        groups
            .update(ID, update(Some(1), true), &writer(), SystemTime::now())
            .unwrap();
        let error = groups
            .update(ID, update(Some(1), false), &writer(), SystemTime::now())
            .unwrap_err();
        assert_eq!(
            error,
            UpdateError::VersionMismatch {
                supplied: 1,
                current: 2
            }
        );
        assert_eq!(
            groups
                .update(ID, update(None, false), &writer(), SystemTime::now())
                .unwrap_err(),
            UpdateError::MissingVersion
        );
    }

    #[test]
    fn a_patch_acts_as_a_write_unless_told_otherwise() {
        let mut groups = store();
        let mut patch = Map::new();
        patch.insert("enabled".to_owned(), Value::Bool(true));
        let group = groups.patch(ID, patch, SystemTime::now()).unwrap();
        assert_eq!(group.version, 2);
        assert!(group.enabled);
        let mut patch = Map::new();
        patch.insert("version".to_owned(), Value::from(9));
        assert_eq!(
            groups.patch(ID, patch, SystemTime::now()).unwrap().version,
            9
        );
        assert!(groups.patch("new", Map::new(), SystemTime::now()).is_err());
    }

    #[test]
    fn name_filters() {
        assert!(name_matches("carrier", "Carrier Outage"));
        assert!(name_matches("Carrier*", "Carrier Outage"));
        assert!(name_matches("*outage", "Carrier Outage"));
        assert!(name_matches("c*r*e", "Carrier Outage"));
        assert!(!name_matches("Outage*", "Carrier Outage"));
        assert!(!name_matches("x", "Carrier Outage"));
    }
}
