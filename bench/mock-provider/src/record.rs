//! In-memory log of received requests, served by `GET /__mock/requests`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use axum::http::request::Parts;
use serde::Serialize;

/// Recorded bodies are cut to this many bytes (before UTF-8 decoding).
pub const MAX_BODY_RECORDED: usize = 64 * 1024;

/// One received request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path including the query string, as received.
    pub path: String,
    /// `[name, value]` pairs. Names are lower-case (HTTP/1 names are
    /// case-insensitive and hyper normalises them). Repeated headers are all
    /// kept, in received order; headers are grouped by name in order of each
    /// name's first appearance.
    pub headers: Vec<(String, String)>,
    /// Full body length in bytes.
    pub body_len: usize,
    /// Body as UTF-8 (lossy), truncated to [`MAX_BODY_RECORDED`] bytes.
    pub body: String,
    /// When it arrived, in Unix seconds.
    pub at: f64,
}

impl RecordedRequest {
    pub fn new(parts: &Parts, body: &[u8]) -> Self {
        let path = parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let shown = &body[..body.len().min(MAX_BODY_RECORDED)];
        Self {
            method: parts.method.as_str().to_string(),
            path,
            headers,
            body_len: body.len(),
            body: String::from_utf8_lossy(shown).into_owned(),
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// Bounded FIFO of recorded requests; the oldest are dropped at the limit.
#[derive(Debug)]
pub struct Recorder {
    limit: usize,
    entries: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot leave the deque inconsistent
        // in a way that matters here, so recover from poisoning.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, entry: RecordedRequest) {
        if self.limit == 0 {
            return;
        }
        let mut entries = self.lock();
        while entries.len() >= self.limit {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn records_duplicates_query_and_body() {
        let p = parts(
            "/v1/chat/completions?x=1&y=2",
            &[("X-Dup", "a"), ("host", "h"), ("x-dup", "b")],
        );
        let r = RecordedRequest::new(&p, b"{\"k\":1}");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions?x=1&y=2");
        assert_eq!(
            r.headers,
            vec![
                ("x-dup".to_string(), "a".to_string()),
                ("x-dup".to_string(), "b".to_string()),
                ("host".to_string(), "h".to_string()),
            ]
        );
        assert_eq!(r.body_len, 7);
        assert_eq!(r.body, "{\"k\":1}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["headers"][0], serde_json::json!(["x-dup", "a"]));
    }

    #[test]
    fn truncates_large_and_binary_bodies() {
        let p = parts("/x", &[]);
        let big = vec![b'a'; MAX_BODY_RECORDED + 10];
        let r = RecordedRequest::new(&p, &big);
        assert_eq!(r.body_len, MAX_BODY_RECORDED + 10);
        assert_eq!(r.body.len(), MAX_BODY_RECORDED);
        let r = RecordedRequest::new(&p, &[0xff, b'a']);
        assert_eq!(r.body, "\u{fffd}a");
    }

    #[test]
    fn drops_oldest_at_limit() {
        let rec = Recorder::new(2);
        for path in ["/a", "/b", "/c"] {
            rec.push(RecordedRequest::new(&parts(path, &[]), b""));
        }
        let paths: Vec<String> = rec.snapshot().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, vec!["/b", "/c"]);
        rec.clear();
        assert!(rec.is_empty());
        let none = Recorder::new(0);
        none.push(RecordedRequest::new(&parts("/a", &[]), b""));
        assert!(none.is_empty());
    }
}
