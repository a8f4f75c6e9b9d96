//! Helpers shared by the HTTP tests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use emr_sim::{Sim, SimConfig, SimHandle, EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_SECRET};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A started simulator and an HTTP client for it.
pub struct Api {
    pub sim: SimHandle,
    pub http: reqwest::Client,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
    }

    /// Asserts the Genesys error body and that `contextId` is the correlation id.
    pub fn assert_genesys_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.body["code"], code, "{:?}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(self.body["details"], serde_json::json!([]));
        assert_eq!(self.body["errors"], serde_json::json!([]));
        assert_eq!(
            self.body["contextId"].as_str().unwrap(),
            self.header("inin-correlation-id")
        );
    }
}

impl Api {
    pub async fn start(config: SimConfig) -> Self {
        let sim = Sim::start(config).await.expect("sim starts");
        Self {
            sim,
            http: reqwest::Client::builder()
                // A reset connection must not be reused by the next request of a test.
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
        }
    }

    pub async fn seeded() -> Self {
        Self::start(SimConfig::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    /// Sends a request; `token` as bearer, `body` as JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("an answer")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// `POST /oauth/token` with Basic credentials and a form body.
    pub async fn token_request(&self, basic: Option<(&str, &str)>, form: &str) -> Answer {
        let mut request = self
            .http
            .post(self.url("/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some((id, secret)) = basic {
            let encoded = STANDARD.encode(format!("{id}:{secret}"));
            request = request.header("authorization", format!("Basic {encoded}"));
        }
        read(request.send().await.expect("an answer")).await
    }

    /// A token obtained through the real grant.
    pub async fn token(&self, id: &str, secret: &str) -> String {
        let answer = self
            .token_request(Some((id, secret)), "grant_type=client_credentials")
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn emr_token(&self) -> String {
        self.token(EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_SECRET).await
    }

    /// A control-API call (no auth).
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, None, body).await
    }
}

pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        headers,
        body,
    }
}
