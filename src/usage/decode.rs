//! Undoing `Content-Encoding` before usage is read, with a decompression-bomb guard: output is
//! never inflated past a caller-chosen limit, whatever the compressed size.
//!
//! Supported: `identity`, `gzip` / `x-gzip` (multi-member), `deflate` (zlib-wrapped as the
//! RFC says, or raw as some servers send it, told apart by the zlib header) and `br`. A whole
//! body may list several codings (`gzip, br`), undone in reverse order; a stream takes one.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use super::UsageError;

/// At most this many codings are undone for one body.
const MAX_CODINGS: usize = 3;
/// Brotli's internal buffer size.
const BROTLI_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

/// The codings named by a `Content-Encoding` value, in the order they were applied.
fn codings(content_encoding: Option<&str>) -> Result<Vec<Coding>, UsageError> {
    let mut out = Vec::new();
    for name in content_encoding
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
    {
        let coding = match name.to_ascii_lowercase().as_str() {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            _ => {
                return Err(UsageError::UnsupportedEncoding(
                    name.chars().take(32).collect(),
                ))
            }
        };
        if out.len() == MAX_CODINGS {
            return Err(UsageError::UnsupportedEncoding(
                content_encoding
                    .unwrap_or_default()
                    .chars()
                    .take(32)
                    .collect(),
            ));
        }
        out.push(coding);
    }
    Ok(out)
}

/// The `accept-encoding` to send upstream so that the answer comes in a coding keygate can
/// read for its usage: the client's list without the codings keygate does not decode (zstd,
/// compress, `*`, …). `None` when the client's list needs no change; `identity` when nothing
/// of it is left.
pub fn readable_accept_encoding(value: &str) -> Option<String> {
    let readable = |token: &str| {
        let coding = token.split(';').next().unwrap_or_default().trim();
        ["gzip", "x-gzip", "deflate", "br", "identity"]
            .iter()
            .any(|c| c.eq_ignore_ascii_case(coding))
    };
    let tokens: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.iter().all(|t| readable(t)) {
        return None;
    }
    let kept: Vec<&str> = tokens.into_iter().filter(|t| readable(t)).collect();
    Some(if kept.is_empty() {
        "identity".to_string()
    } else {
        kept.join(", ")
    })
}

/// Whether a brotli stream starts with the Large-Window Brotli escape: WBITS bits `0010001`
/// (with the next bit set the stream is invalid anyway). `Content-Encoding: br` is RFC 7932,
/// whose window is at most 16 MiB and which has no such escape, but the brotli crate accepts
/// the large-window extension by default: its window (up to 1 GiB) is allocated up front, so a
/// 22-byte body made the decoder allocate 1 GiB whatever the output limit (measured by
/// `fuzz/fuzz_targets/decompress.rs`, which counts what decoding allocates).
fn large_window_brotli(first: Option<&u8>) -> bool {
    first.is_some_and(|b| b & 0x7f == 0x11)
}

fn large_window_error() -> UsageError {
    UsageError::Corrupt(io::Error::new(
        io::ErrorKind::InvalidData,
        "large-window brotli is not the br content-coding (RFC 7932)",
    ))
}

/// A zlib stream starts with CMF/FLG: compression method 8, and the pair divisible by 31.
fn looks_like_zlib(prefix: &[u8]) -> bool {
    match prefix {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Decodes a whole body. Identity bodies are borrowed. Fails with [`UsageError::TooLarge`]
/// rather than produce more than `limit` bytes (identity bodies included, so the limit means
/// one thing: the most bytes handed to the JSON parser).
pub fn decompress<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, UsageError> {
    let mut out = Cow::Borrowed(body);
    for coding in codings(content_encoding)?.into_iter().rev() {
        if out.is_empty() {
            break;
        }
        out = Cow::Owned(inflate(coding, &out, limit)?);
    }
    if out.len() > limit {
        return Err(UsageError::TooLarge { limit });
    }
    Ok(out)
}

fn inflate(coding: Coding, input: &[u8], limit: usize) -> Result<Vec<u8>, UsageError> {
    let reader: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(MultiGzDecoder::new(input)),
        Coding::Deflate if looks_like_zlib(input) => Box::new(ZlibDecoder::new(input)),
        Coding::Deflate => Box::new(DeflateDecoder::new(input)),
        Coding::Brotli if large_window_brotli(input.first()) => return Err(large_window_error()),
        Coding::Brotli => Box::new(brotli::Decompressor::new(input, BROTLI_BUFFER)),
    };
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(UsageError::Corrupt)?;
    if out.len() > limit {
        return Err(UsageError::TooLarge { limit });
    }
    Ok(out)
}

/// Where a streaming decoder writes: refuses to grow past the limit.
#[derive(Debug)]
struct Sink {
    out: Vec<u8>,
    total: usize,
    limit: usize,
    exceeded: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.total.saturating_add(buf.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size limit reached"));
        }
        self.total += buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Identity {
        total: usize,
    },
    /// `deflate` before two bytes have arrived to tell zlib from raw.
    Sniffing(Vec<u8>),
    Gzip(flate2::write::MultiGzDecoder<Sink>),
    Zlib(flate2::write::ZlibDecoder<Sink>),
    Raw(flate2::write::DeflateDecoder<Sink>),
    Brotli(Box<brotli::DecompressorWriter<Sink>>),
    /// A previous call failed; every later call repeats the failure.
    Failed(FailKind),
}

#[derive(Debug, Clone, Copy)]
enum FailKind {
    TooLarge,
    Corrupt,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Inner::Identity { .. } => "identity",
            Inner::Sniffing(_) => "deflate (sniffing)",
            Inner::Gzip(_) => "gzip",
            Inner::Zlib(_) => "deflate (zlib)",
            Inner::Raw(_) => "deflate (raw)",
            Inner::Brotli(_) => "br",
            Inner::Failed(_) => "failed",
        };
        f.write_str(name)
    }
}

/// Decompresses a streamed body chunk by chunk, never producing more than `limit` bytes in
/// total over the stream's life (so pick a limit that fits the longest legitimate stream).
#[derive(Debug)]
pub struct StreamDecoder {
    inner: Inner,
    limit: usize,
    /// Whether a non-empty chunk was fed (the first byte of a brotli stream is checked).
    started: bool,
}

impl StreamDecoder {
    /// A decoder for one `Content-Encoding` (at most one coding besides `identity`).
    pub fn new(content_encoding: Option<&str>, limit: usize) -> Result<Self, UsageError> {
        let inner = match codings(content_encoding)?.as_slice() {
            [] => Inner::Identity { total: 0 },
            [Coding::Gzip] => Inner::Gzip(flate2::write::MultiGzDecoder::new(sink(limit))),
            [Coding::Deflate] => Inner::Sniffing(Vec::new()),
            [Coding::Brotli] => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(
                sink(limit),
                BROTLI_BUFFER,
            ))),
            [..] => {
                return Err(UsageError::UnsupportedEncoding(
                    content_encoding
                        .unwrap_or_default()
                        .chars()
                        .take(32)
                        .collect(),
                ))
            }
        };
        Ok(StreamDecoder {
            inner,
            limit,
            started: false,
        })
    }

    /// Decodes the next compressed chunk; identity chunks are borrowed back.
    pub fn feed<'a>(&mut self, chunk: &'a [u8]) -> Result<Cow<'a, [u8]>, UsageError> {
        if let Inner::Identity { total } = &mut self.inner {
            *total = total.saturating_add(chunk.len());
            if *total > self.limit {
                self.inner = Inner::Failed(FailKind::TooLarge);
                return Err(UsageError::TooLarge { limit: self.limit });
            }
            return Ok(Cow::Borrowed(chunk));
        }
        if !self.started && !chunk.is_empty() {
            self.started = true;
            if matches!(self.inner, Inner::Brotli(_)) && large_window_brotli(chunk.first()) {
                self.inner = Inner::Failed(FailKind::Corrupt);
                return Err(large_window_error());
            }
        }
        let mut chunk = chunk;
        let sniffed: Vec<u8>;
        if let Inner::Sniffing(prefix) = &mut self.inner {
            prefix.extend_from_slice(chunk);
            if prefix.len() < 2 {
                return Ok(Cow::Owned(Vec::new()));
            }
            sniffed = std::mem::take(prefix);
            self.inner = if looks_like_zlib(&sniffed) {
                Inner::Zlib(flate2::write::ZlibDecoder::new(sink(self.limit)))
            } else {
                Inner::Raw(flate2::write::DeflateDecoder::new(sink(self.limit)))
            };
            chunk = &sniffed;
        }
        let result = match &mut self.inner {
            Inner::Gzip(d) => d.write_all(chunk),
            Inner::Zlib(d) => d.write_all(chunk),
            Inner::Raw(d) => d.write_all(chunk),
            Inner::Brotli(d) => d.write_all(chunk),
            Inner::Identity { .. } | Inner::Sniffing(_) => Ok(()),
            &mut Inner::Failed(kind) => return Err(self.fail(kind)),
        };
        self.collect(result).map(Cow::Owned)
    }

    /// Ends the stream, returning any output still buffered. A truncated deflate or brotli
    /// stream is an error; a gzip stream cut short is returned as far as it decoded.
    pub fn finish(mut self) -> Result<Vec<u8>, UsageError> {
        let result = match &mut self.inner {
            Inner::Identity { .. } => return Ok(Vec::new()),
            Inner::Sniffing(prefix) if prefix.is_empty() => return Ok(Vec::new()),
            Inner::Sniffing(_) => return Err(self.fail(FailKind::Corrupt)),
            Inner::Gzip(d) => d.try_finish(),
            Inner::Zlib(d) => d.try_finish(),
            Inner::Raw(d) => d.try_finish(),
            Inner::Brotli(d) => d.close(),
            &mut Inner::Failed(kind) => return Err(self.fail(kind)),
        };
        self.collect(result)
    }

    fn sink_mut(&mut self) -> Option<&mut Sink> {
        match &mut self.inner {
            Inner::Gzip(d) => Some(d.get_mut()),
            Inner::Zlib(d) => Some(d.get_mut()),
            Inner::Raw(d) => Some(d.get_mut()),
            Inner::Brotli(d) => Some(d.get_mut()),
            Inner::Identity { .. } | Inner::Sniffing(_) | Inner::Failed(_) => None,
        }
    }

    /// Takes the output written so far, or turns a write failure into the decoder's error.
    fn collect(&mut self, result: io::Result<()>) -> Result<Vec<u8>, UsageError> {
        let exceeded = self.sink_mut().is_some_and(|s| s.exceeded);
        match result {
            Ok(()) => Ok(self
                .sink_mut()
                .map(|s| std::mem::take(&mut s.out))
                .unwrap_or_default()),
            Err(_) if exceeded => Err(self.fail(FailKind::TooLarge)),
            Err(e) => {
                self.inner = Inner::Failed(FailKind::Corrupt);
                Err(UsageError::Corrupt(e))
            }
        }
    }

    fn fail(&mut self, kind: FailKind) -> UsageError {
        self.inner = Inner::Failed(kind);
        match kind {
            FailKind::TooLarge => UsageError::TooLarge { limit: self.limit },
            FailKind::Corrupt => UsageError::Corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                "the compressed stream failed earlier or ended early",
            )),
        }
    }
}

fn sink(limit: usize) -> Sink {
    Sink {
        out: Vec::new(),
        total: 0,
        limit,
        exceeded: false,
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
