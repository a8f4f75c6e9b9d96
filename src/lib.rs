//! emr-edge: the proxy-wasm glue.
//!
//! One `.wasm`, two roles chosen by the plugin's `root_id`:
//! - `emr_intake` — the HTTP filter on every worker thread ([`intake`]);
//! - `emr_service` — the singleton bootstrap service on the main thread
//!   ([`service`]) that owns the incident ledger and talks to Genesys.
//!
//! Every decision lives in `emr-core`; this crate only moves bytes between the
//! host and the core. Host access is in [`host`].

#[cfg(feature = "crash-test")]
mod crash;
mod host;
mod intake;
mod metrics;
mod service;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

/// The root id that selects the singleton service; anything else is the filter.
pub const SERVICE_ROOT_ID: &str = "emr_service";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic kills the VM; say why before it dies.
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("emr-edge panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::Unconfigured) });
}}

/// A root context before and after `on_configure` decided its role.
enum Root {
    Unconfigured,
    Intake(intake::IntakeRoot),
    Service(Box<service::ServiceRoot>),
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Root::Service(s) = self {
            s.on_http_call_response(token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = host::plugin_configuration();
        let env = |name: &str| std::env::var(name).ok();
        let config = match emr_core::config::parse(&raw, &env) {
            Ok(c) => c,
            Err(e) => {
                // Envoy refuses the listener or bootstrap with these lines
                // logged: one per problem, each naming its field.
                for line in e.lines() {
                    host::log(LogLevel::Critical, &line);
                }
                return false;
            }
        };
        let root_id = host::root_id();
        *self = if root_id == SERVICE_ROOT_ID {
            match service::ServiceRoot::start(config) {
                Ok(s) => Root::Service(Box::new(s)),
                Err(e) => {
                    host::log(
                        LogLevel::Critical,
                        &format!("emr-edge service failed to start: {e}"),
                    );
                    return false;
                }
            }
        } else {
            Root::Intake(intake::IntakeRoot::new(config))
        };
        true
    }

    fn on_tick(&mut self) {
        if let Root::Service(s) = self {
            s.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Root::Service(s) = self {
            s.on_queue_ready(queue_id);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`, so an unconfigured root hands out a
        // context that lets everything through.
        Some(match self {
            Root::Intake(i) => Box::new(i.new_stream()),
            _ => Box::new(intake::PassThrough),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
