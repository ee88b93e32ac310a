//! Content-Encoding decoding with its decompression-bomb limit, for whole bodies
//! (`decompress`) and streams (`StreamDecoder`). Byte 0 picks the encoding, bytes 1-2 the
//! limit, byte 3 the chunking; the rest is the compressed body.
//!
//! Besides "never more decoded bytes than the limit", a counting allocator checks what the
//! decoding holds at its peak: a small gzip or br body must not be able to make keygate
//! allocate far more than the limit (say, a gigabyte).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use keygate::usage::{decompress, StreamDecoder, UsageError};
use keygate_fuzz::chunks;
use libfuzzer_sys::fuzz_target;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What decoding may hold beyond the limit: intermediate copies of up to the limit each (a
/// `Vec` may double past what it holds) and the decoders' own windows (brotli's is at most
/// 16 MiB under RFC 7932, deflate's 32 KiB).
fn allowed_peak(limit: usize) -> usize {
    4 * limit + 20 * 1024 * 1024
}

const ENCODINGS: [&str; 12] = [
    "identity",
    "gzip",
    "x-gzip",
    "deflate",
    "br",
    "GZIP",
    "gzip, br",
    "br, gzip",
    "deflate, gzip, br",
    "gzip, gzip, gzip, gzip",
    " br ,identity",
    "zstd",
];

fuzz_target!(|data: &[u8]| {
    let [selector, l0, l1, chunking, body @ ..] = data else {
        return;
    };
    let encoding = ENCODINGS[usize::from(*selector) % ENCODINGS.len()];
    let encoding = (selector & 0x80 == 0).then_some(encoding);
    // Limits from 0 to 1 MiB, small ones likely.
    let limit = (usize::from(*l0 & 0x1f) << 8 | usize::from(*l1)) << (*l0 >> 5);

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let whole = decompress(encoding, body, limit);
    if let Ok(out) = &whole {
        assert!(
            out.len() <= limit,
            "{} bytes decoded past a {limit} limit",
            out.len()
        );
    }
    let whole = whole.map(|out| out.into_owned());
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        peak <= allowed_peak(limit),
        "decompress({encoding:?}) of {} bytes held {peak} bytes at its peak (limit {limit})",
        body.len()
    );

    let Ok(mut decoder) = StreamDecoder::new(encoding, limit) else {
        return;
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut streamed = Vec::new();
    let mut failed = false;
    for chunk in chunks(body, *chunking) {
        match decoder.feed(chunk) {
            Ok(out) => {
                streamed.extend_from_slice(&out);
                assert!(streamed.len() <= limit, "stream decoded past the limit");
            }
            Err(_) => {
                failed = true;
                // A failed decoder stays failed.
                assert!(decoder.feed(b"x").is_err());
                break;
            }
        }
    }
    if !failed {
        match decoder.finish() {
            Ok(out) => streamed.extend_from_slice(&out),
            Err(_) => failed = true,
        }
    }
    assert!(streamed.len() <= limit, "stream decoded past the limit");
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        peak <= allowed_peak(limit) + streamed.capacity(),
        "StreamDecoder({encoding:?}) of {} bytes held {peak} bytes at its peak (limit {limit})",
        body.len()
    );
    // A stream that decodes in full gives what the whole-body decoder gives.
    if let (Ok(out), false) = (&whole, failed) {
        assert_eq!(&streamed, out, "stream and whole-body decoding differ");
    }
    if let Err(UsageError::TooLarge { limit: l }) = &whole {
        assert_eq!(*l, limit);
    }
});
