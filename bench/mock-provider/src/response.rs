//! JSON responses (optionally gzip-compressed), provider-shaped errors, ids.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Map, Value};

/// Which provider's conventions a response follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

impl Flavor {
    /// Anthropic for `/v1/messages...`, OpenAI for everything else.
    pub fn for_path(path: &str) -> Self {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Flavor::Anthropic
        } else {
            Flavor::OpenAi
        }
    }

    /// Name of the request-id response header this provider uses.
    pub fn request_id_header(self) -> &'static str {
        match self {
            Flavor::OpenAi => "x-request-id",
            Flavor::Anthropic => "request-id",
        }
    }
}

/// A JSON response; gzip-compressed when `gzip` is set.
pub fn json(status: StatusCode, value: &Value, gzip: bool) -> Response<Body> {
    let raw = match serde_json::to_vec(value) {
        Ok(raw) => raw,
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed"),
    };
    let (body, encoded) = if gzip {
        match gzip_bytes(&raw) {
            Some(compressed) => (compressed, true),
            None => (raw, false),
        }
    } else {
        (raw, false)
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if encoded {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    resp
}

/// A `text/plain` response.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Gzip `raw`; `None` only if the in-memory encoder fails.
pub fn gzip_bytes(raw: &[u8]) -> Option<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 2 + 64), Compression::fast());
    enc.write_all(raw).ok()?;
    enc.finish().ok()
}

/// The provider's error body for `status`.
pub fn error_body(flavor: Flavor, status: StatusCode, message: &str) -> Value {
    let code = status.as_u16();
    match flavor {
        Flavor::OpenAi => {
            let (kind, err_code) = openai_error_kind(code);
            json!({
                "error": {
                    "message": message,
                    "type": kind,
                    "param": null,
                    "code": err_code
                }
            })
        }
        Flavor::Anthropic => json!({
            "type": "error",
            "error": { "type": anthropic_error_kind(code), "message": message }
        }),
    }
}

/// A provider-shaped error response.
pub fn error(flavor: Flavor, status: StatusCode, message: &str, gzip: bool) -> Response<Body> {
    json(status, &error_body(flavor, status, message), gzip)
}

fn openai_error_kind(code: u16) -> (&'static str, Value) {
    match code {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => (
            "invalid_request_error",
            json!("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", json!("unknown_url")),
        409 => ("invalid_request_error", json!("conflict")),
        413 => ("invalid_request_error", json!("request_too_large")),
        422 => ("invalid_request_error", Value::Null),
        429 => ("requests", json!("rate_limit_exceeded")),
        503 => ("server_error", json!("service_unavailable")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    }
}

fn anthropic_error_kind(code: u16) -> &'static str {
    match code {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Parses a request body as a JSON object, or builds the 400 response.
#[allow(clippy::result_large_err)]
pub fn parse_object(
    flavor: Flavor,
    body: &[u8],
    gzip: bool,
) -> Result<Map<String, Value>, Response<Body>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error(
            flavor,
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object.",
            gzip,
        )),
        Err(e) => Err(error(
            flavor,
            StatusCode::BAD_REQUEST,
            &format!("We could not parse the JSON body of your request. ({e})"),
            gzip,
        )),
    }
}

/// The request's `model`, or a placeholder.
pub fn model_of(body: &Map<String, Value>) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string()
}

/// Whether the request asked for a stream.
pub fn wants_stream(body: &Map<String, Value>) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unique id such as `chatcmpl-4fJ0...` (`prefix` + 24 base62 chars).
pub fn new_id(prefix: &str) -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    let mut a = splitmix(seed ^ n);
    let mut b = splitmix(a ^ 0x5851_f42d_4c95_7f2d);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for i in 0..24 {
        let src = if i < 12 { &mut a } else { &mut b };
        out.push(char::from(ALPHABET[(*src % 62) as usize]));
        *src /= 62;
    }
    out
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn flavor_by_path() {
        assert_eq!(Flavor::for_path("/v1/messages"), Flavor::Anthropic);
        assert_eq!(
            Flavor::for_path("/v1/messages/count_tokens"),
            Flavor::Anthropic
        );
        assert_eq!(Flavor::for_path("/v1/messagesx"), Flavor::OpenAi);
        assert_eq!(Flavor::for_path("/v1/chat/completions"), Flavor::OpenAi);
    }

    #[test]
    fn error_shapes() {
        let o = error_body(Flavor::OpenAi, StatusCode::TOO_MANY_REQUESTS, "slow down");
        assert_eq!(o["error"]["message"], "slow down");
        assert_eq!(o["error"]["code"], "rate_limit_exceeded");
        assert!(o["error"]["param"].is_null());
        let a = error_body(
            Flavor::Anthropic,
            StatusCode::from_u16(529).unwrap(),
            "busy",
        );
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "overloaded_error");
        assert_eq!(a["error"]["message"], "busy");
    }

    #[test]
    fn gzip_round_trip() {
        let raw = br#"{"hello":"world","hello2":"world","hello3":"world"}"#;
        let gz = gzip_bytes(raw).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = new_id("msg_");
        let b = new_id("msg_");
        assert_ne!(a, b);
        assert!(a.starts_with("msg_"));
        assert_eq!(a.len(), 4 + 24);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn parse_object_rejects_non_objects() {
        assert!(parse_object(Flavor::OpenAi, b"{\"a\":1}", false).is_ok());
        let resp = parse_object(Flavor::OpenAi, b"[1]", false).unwrap_err();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let resp = parse_object(Flavor::Anthropic, b"{oops", false).unwrap_err();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
