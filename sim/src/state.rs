//! The simulator's state, shared by the HTTP handlers, the control API and [`crate::SimHandle`].
//!
//! One mutex guards everything: each request holds it for a few map operations and never across
//! an `.await`, so contention is negligible at the rates a test or benchmark drives, and every
//! control operation sees a consistent picture. A poisoned lock (a panicking test thread) is
//! recovered rather than propagated: the state is plain data, valid after any completed write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{ClientConfig, SimConfig};
use crate::datatables::DataTables;
use crate::errors::SimError;
use crate::faults::{FaultList, Outage, OutageMode};
use crate::groups::GroupStore;
use crate::guide::GuideStore;
use crate::itsm::ItsmStore;
use crate::oauth::TokenStore;
use crate::ratelimit::RateLimiter;
use crate::requestlog::RequestLog;

/// The handle every handler gets.
pub(crate) type App = Arc<Shared>;

/// Immutable config plus the mutable state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    clients: BTreeMap<String, Arc<ClientConfig>>,
    state: Mutex<State>,
    seq: AtomicU64,
}

/// Everything that changes.
#[derive(Debug)]
pub(crate) struct State {
    pub tokens: TokenStore,
    pub limits: RateLimiter,
    pub groups: GroupStore,
    pub tables: DataTables,
    pub guide: GuideStore,
    pub itsm: ItsmStore,
    pub faults: FaultList,
    pub outage: Option<Outage>,
    pub requests: RequestLog,
}

impl State {
    /// The state the config seeds.
    fn seeded(config: &SimConfig) -> Result<Self, SimError> {
        Ok(Self {
            tokens: TokenStore::new(Duration::from_secs(config.token_lifetime_secs)),
            limits: RateLimiter::new(
                config.rate_limit_per_minute,
                Duration::from_secs(config.rate_limit_window_secs),
            ),
            groups: GroupStore::new(&config.emergency_groups),
            tables: DataTables::new(&config.datatables),
            guide: GuideStore::new(
                Duration::from_millis(config.propagation_delay_ms),
                SystemTime::now(),
            ),
            itsm: ItsmStore::new(&config.itsm).map_err(SimError::Config)?,
            faults: FaultList::default(),
            outage: None,
            requests: RequestLog::new(config.request_log_capacity),
        })
    }

    /// The outage mode in force at `now`, forgetting an outage that has ended.
    pub fn outage_mode(&mut self, now: Instant) -> Option<OutageMode> {
        let mode = self.outage.and_then(|outage| outage.active(now));
        if mode.is_none() {
            self.outage = None;
        }
        mode
    }
}

impl Shared {
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let state = State::seeded(&config)?;
        let clients = config
            .clients
            .iter()
            .map(|client| (client.id.clone(), Arc::new(client.clone())))
            .collect();
        Ok(Self {
            config,
            clients,
            state: Mutex::new(state),
            seq: AtomicU64::new(0),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn client(&self, id: &str) -> Option<Arc<ClientConfig>> {
        self.clients.get(id).cloned()
    }

    /// The next arrival number for the request log.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Puts everything back as the config seeded it (tokens, faults and the log included).
    pub fn reset(&self) -> Result<(), SimError> {
        let seeded = State::seeded(&self.config)?;
        *self.lock() = seeded;
        Ok(())
    }
}
