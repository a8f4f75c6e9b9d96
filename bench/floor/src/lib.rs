//! A proxy-wasm HTTP filter with emr-edge's shape and none of its work:
//! `Continue` on headers, pause until the end of the body, answer 202 with a
//! body of the intake's size. With the plugin configuration `read`, it also
//! fetches every request header and the body, as emr-edge does. The gap
//! between the ceiling and this is what proxy-wasm on V8 costs by itself.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

const BODY: &[u8] = br#"{"correlationId":"BENCH-0000000-00000","routingMode":"EMERGENCY_ACTIVE","status":"PROCESSING","statusUrl":"/emr/status/BENCH-0000000-00000"}"#;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { read: false }) });
}}

struct Root {
    read: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.read = config.windows(4).any(|w| w == b"read");
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { read: self.read }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    read: bool,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _end: bool) -> Action {
        if self.read {
            let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if self.read {
            let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size);
        }
        let _ = hostcalls::send_http_response(
            202,
            vec![
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            Some(BODY),
        );
        Action::Pause
    }
}
