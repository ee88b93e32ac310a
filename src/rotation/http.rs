//! The adapters' HTTP client: JSON in and out, every call bounded by a timeout, and errors
//! that name the call and the status but never echo a body (which may hold a key).

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::adapter::AdapterError;

/// A JSON client for one adapter.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    adapter: &'static str,
}

/// A provider's answer: its status and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Http {
    pub fn new(adapter: &'static str, timeout: Duration) -> Result<Self, AdapterError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|_| AdapterError::Call {
                adapter,
                call: "http client".into(),
                reason: "cannot build the HTTP client".into(),
            })?;
        Ok(Http { client, adapter })
    }

    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request with an optional JSON body; any answer comes back (no status check).
    pub async fn send(
        &self,
        call: &str,
        request: RequestBuilder,
        json: Option<&Value>,
    ) -> Result<Answer, AdapterError> {
        let request = match json {
            Some(body) => request
                .header("content-type", "application/json")
                .body(body.to_string()),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport(call, &e))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(call, &e))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// Like [`Http::send`], but a status outside 2xx is an error.
    pub async fn call(
        &self,
        call: &str,
        request: RequestBuilder,
        json: Option<&Value>,
    ) -> Result<Value, AdapterError> {
        let answer = self.send(call, request, json).await?;
        if !(200..300).contains(&answer.status) {
            return Err(self.status(call, answer.status));
        }
        Ok(answer.body)
    }

    pub fn status(&self, call: &str, status: u16) -> AdapterError {
        AdapterError::Status {
            adapter: self.adapter,
            call: call.to_string(),
            status,
        }
    }

    /// An answer that lacks what the adapter needs.
    pub fn format(&self, call: &str, what: &str) -> AdapterError {
        AdapterError::Call {
            adapter: self.adapter,
            call: call.to_string(),
            reason: format!("unexpected answer: {what}"),
        }
    }

    fn transport(&self, call: &str, e: &reqwest::Error) -> AdapterError {
        let reason = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "the connection failed"
        };
        AdapterError::Call {
            adapter: self.adapter,
            call: call.to_string(),
            reason: reason.into(),
        }
    }
}

/// A string field of a JSON object.
pub fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}
