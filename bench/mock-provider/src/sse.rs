//! Server-sent-event framing and the streaming response body.
//!
//! A stream is prepared as a list of complete frames. The body sends them one
//! by one, sleeping `x-mock-chunk-delay-ms` between frames; with
//! `x-mock-interrupt-after: N` it sends at most N frames and then yields an
//! error, which makes hyper drop the connection without the terminating
//! chunk, so the client sees a truncated response.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde_json::Value;

/// `data: JSON\n\n` (OpenAI chat / completions style).
pub fn data_frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The OpenAI end-of-stream marker `data: [DONE]\n\n`.
pub fn done_frame() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// `event: NAME\ndata: JSON\n\n` (Anthropic / Responses API style).
pub fn event_frame(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// How the frames are paced and whether the stream is cut short.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacing {
    pub chunk_delay: Duration,
    pub interrupt_after: Option<usize>,
}

/// Pause before failing an interrupted stream so hyper flushes the frames
/// already handed to it before it tears the connection down.
const FLUSH_GRACE: Duration = Duration::from_millis(20);

struct State {
    frames: std::vec::IntoIter<Bytes>,
    sent: usize,
    pacing: Pacing,
    failed: bool,
}

/// A `text/event-stream` response sending `frames` with `pacing`.
pub fn response(frames: Vec<Bytes>, pacing: Pacing) -> Response<Body> {
    let state = State {
        frames: frames.into_iter(),
        sent: 0,
        pacing,
        failed: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.failed {
            return None;
        }
        let limit_reached = st.pacing.interrupt_after.is_some_and(|n| st.sent >= n);
        let next = if limit_reached {
            None
        } else {
            st.frames.next()
        };
        match next {
            Some(frame) => {
                if st.sent > 0 && !st.pacing.chunk_delay.is_zero() {
                    tokio::time::sleep(st.pacing.chunk_delay).await;
                }
                st.sent += 1;
                Some((Ok(frame), st))
            }
            None if st.pacing.interrupt_after.is_some() => {
                tokio::time::sleep(FLUSH_GRACE).await;
                st.failed = true;
                let err = io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "stream interrupted by x-mock-interrupt-after",
                );
                Some((Err(err), st))
            }
            None => None,
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use serde_json::json;

    #[test]
    fn framing() {
        assert_eq!(&data_frame(&json!({"a": 1}))[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&done_frame()[..], b"data: [DONE]\n\n");
        assert_eq!(
            &event_frame("ping", &json!({"type": "ping"}))[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
    }

    #[test]
    fn frames_are_single_line_json() {
        // serde_json's compact output never contains raw newlines, so a
        // multi-line string cannot break the framing.
        let f = data_frame(&json!({"text": "a\nb"}));
        assert_eq!(f.iter().filter(|b| **b == b'\n').count(), 2);
    }

    fn frames() -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"one\n\n"),
            Bytes::from_static(b"two\n\n"),
            Bytes::from_static(b"three\n\n"),
        ]
    }

    #[tokio::test]
    async fn sends_all_frames() {
        let resp = response(frames(), Pacing::default());
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/event-stream; charset=utf-8"
        );
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&body[..], b"one\n\ntwo\n\nthree\n\n");
    }

    #[tokio::test]
    async fn interrupt_errors_the_body() {
        let pacing = Pacing {
            chunk_delay: Duration::ZERO,
            interrupt_after: Some(2),
        };
        let body = response(frames(), pacing).into_body();
        let mut stream = body.into_data_stream();
        use futures_util::StreamExt;
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"one\n\n");
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"two\n\n");
        assert!(stream.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn interrupt_beyond_end_still_errors() {
        let pacing = Pacing {
            chunk_delay: Duration::ZERO,
            interrupt_after: Some(10),
        };
        let result = to_bytes(response(frames(), pacing).into_body(), usize::MAX).await;
        assert!(result.is_err());
    }
}
