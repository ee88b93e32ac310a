//! The HTTP load generator: a pool of HTTP/1.1 keep-alive connections to one Envoy, an
//! open-loop fixed-rate driver and a closed-loop throughput probe.
//!
//! Open loop: a dedicated scheduler thread wakes at `t0 + i/rate` (high-resolution sleep,
//! 1 µs timer slack) and hands request `i` with its *scheduled* time to the runtime, whether or
//! not earlier requests finished. Latency is measured from the scheduled time, so a stall shows
//! up as queueing in the tail instead of silently lowering the rate (no coordinated omission).
//! When all pool connections are busy a request waits (FIFO) for one, and that wait counts too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use crate::stats::Recorder;

pub const PATH: &str = "/v1/chat/completions";
pub const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there world"}],"max_tokens":5}"#;
/// A request that takes longer than this is an error (Envoy's routes have no timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Conn = SendRequest<Full<Bytes>>;

/// Connections to one Envoy listener and the requests to send on them.
pub struct Pool {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    bearers: Vec<HeaderValue>,
    extra: Vec<(&'static str, HeaderValue)>,
    next: AtomicUsize,
    body: Bytes,
    pub last_error: Mutex<Option<String>>,
}

impl Pool {
    /// At most `max_conns` connections; requests rotate over `keys`; `extra` headers are added
    /// to every request (the baseline sends the routing header keygate would set).
    pub fn new(
        addr: SocketAddr,
        max_conns: usize,
        keys: &[String],
        extra: &[(&'static str, &str)],
    ) -> Result<Arc<Pool>> {
        if keys.is_empty() {
            bail!("no consumer keys to present");
        }
        let bearers = keys
            .iter()
            .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
            .collect::<Result<Vec<_>, _>>()?;
        let extra = extra
            .iter()
            .map(|(k, v)| Ok((*k, HeaderValue::from_str(v)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Pool {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_conns),
            bearers,
            extra,
            next: AtomicUsize::new(0),
            body: Bytes::from_static(BODY.as_bytes()),
            last_error: Mutex::new(None),
        }))
    }

    async fn connect(&self) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// One request on a pooled connection; Ok when the response is a 200 and fully read.
    pub async fn request(&self) -> Result<()> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange()).await;
        let result = result.unwrap_or_else(|_| Err(anyhow!("timed out after {REQUEST_TIMEOUT:?}")));
        if let Err(e) = &result {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(format!("{e:#}"));
        }
        result
    }

    async fn exchange(&self) -> Result<()> {
        let _permit = self.permits.acquire().await?;
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        conn.ready().await?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bearers.len();
        let mut builder = Request::post(PATH)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.bearers[i].clone())
            .header(CONTENT_TYPE, "application/json");
        for (k, v) in &self.extra {
            builder = builder.header(*k, v.clone());
        }
        let response = conn
            .send_request(builder.body(Full::new(self.body.clone()))?)
            .await?;
        let status = response.status();
        response.into_body().collect().await?;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        if status != hyper::StatusCode::OK {
            bail!("HTTP {status}");
        }
        Ok(())
    }
}

/// Runs `rate` requests/s open-loop for `warmup + measure`; only requests scheduled after the
/// warm-up are recorded. Returns after every recorded request finished.
pub async fn open_loop(
    pool: &Arc<Pool>,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Result<Recorder> {
    if rate <= 0.0 {
        bail!("rate must be positive");
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, bool)>();
    let t0 = Instant::now() + Duration::from_millis(5);
    let window_start = t0 + warmup;
    let count = (rate * (warmup + measure).as_secs_f64()) as u64;
    let scheduler = std::thread::spawn(move || {
        // SAFETY: prctl on the calling thread only; 1 µs slack makes sleeps wake on time.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000usize) };
        for i in 0..count {
            let at = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((at, at >= window_start)).is_err() {
                break;
            }
        }
    });
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let last_done = Arc::new(Mutex::new(window_start));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some((scheduled, measured)) = rx.recv().await {
        let (pool, recorder, last_done) = (pool.clone(), recorder.clone(), last_done.clone());
        tasks.spawn(async move {
            let outcome = pool.request().await;
            if !measured {
                return;
            }
            let done = Instant::now();
            let mut r = recorder.lock().unwrap_or_else(PoisonError::into_inner);
            match outcome {
                Ok(()) => r.ok(done - scheduled),
                Err(_) => r.error(),
            }
            let mut last = last_done.lock().unwrap_or_else(PoisonError::into_inner);
            *last = (*last).max(done);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    scheduler
        .join()
        .map_err(|_| anyhow!("scheduler thread panicked"))?;
    let mut out = recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let end = *last_done.lock().unwrap_or_else(PoisonError::into_inner);
    // Achieved rate: successes over the time until the last of them finished (at least the
    // scheduled window), so a backlog that drains late lowers it.
    out.seconds = (end - window_start).max(measure).as_secs_f64();
    Ok(out)
}

/// Closed loop: `conns` workers each send the next request as soon as the last one finished.
pub async fn closed_loop(
    pool: &Arc<Pool>,
    conns: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Recorder> {
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut r = Recorder::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = pool.request().await;
                if sent >= start {
                    match outcome {
                        Ok(()) => r.ok(sent.elapsed()),
                        Err(_) => r.error(),
                    }
                }
            }
            r
        });
    }
    let mut total = Recorder::new();
    while let Some(done) = tasks.join_next().await {
        total.merge(&done?);
    }
    total.seconds = measure.as_secs_f64();
    Ok(total)
}
