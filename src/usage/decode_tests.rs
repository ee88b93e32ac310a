use std::io::Write;

use flate2::Compression;

use super::*;
use crate::usage::{parse_body, Dialect};

const MIB: usize = 1 << 20;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        e.write_all(data).unwrap();
    }
    out
}

fn sample() -> Vec<u8> {
    include_bytes!("fixtures/mock_openai_responses_stream.sse").repeat(20)
}

fn encoded() -> Vec<(&'static str, Vec<u8>)> {
    let data = sample();
    vec![
        ("gzip", gzip(&data)),
        ("x-gzip", gzip(&data)),
        ("deflate", zlib(&data)),
        ("deflate", raw_deflate(&data)),
        ("br", brotli(&data)),
        ("GZip", gzip(&data)),
    ]
}

#[test]
fn whole_body_round_trips() {
    let data = sample();
    for (coding, body) in encoded() {
        let out = decompress(Some(coding), &body, MIB).unwrap();
        assert_eq!(out.as_ref(), data.as_slice(), "{coding}");
    }
    assert!(matches!(
        decompress(None, &data, MIB).unwrap(),
        Cow::Borrowed(_)
    ));
    assert!(matches!(
        decompress(Some("identity"), &data, MIB).unwrap(),
        Cow::Borrowed(_)
    ));
    let layered = brotli(&gzip(&data));
    assert_eq!(decompress(Some("gzip, br"), &layered, MIB).unwrap(), data);
    assert!(decompress(Some("gzip"), b"", 10).unwrap().is_empty());
}

#[test]
fn mock_provider_gzip_body_parses() {
    let body = include_bytes!("fixtures/mock_openai_chat.json.gz");
    let json = decompress(Some("gzip"), body, MIB).unwrap();
    let usage = parse_body(Dialect::OpenAi, &json).unwrap().unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (5, 3));
    assert_eq!(usage.model.as_deref(), Some("gpt-4o"));
}

#[test]
fn bombs_are_refused() {
    let zeros = vec![0u8; 8 * MIB];
    for (coding, bomb) in [
        ("gzip", gzip(&zeros)),
        ("deflate", zlib(&zeros)),
        ("deflate", raw_deflate(&zeros)),
        ("br", brotli(&zeros)),
    ] {
        assert!(bomb.len() < 64 * 1024, "{coding} compresses well");
        let err = decompress(Some(coding), &bomb, MIB).unwrap_err();
        assert!(
            matches!(err, UsageError::TooLarge { limit } if limit == MIB),
            "{coding}"
        );
        assert_eq!(
            decompress(Some(coding), &bomb, 8 * MIB).unwrap().len(),
            8 * MIB
        );
    }
    assert!(matches!(
        decompress(None, &zeros, MIB),
        Err(UsageError::TooLarge { .. })
    ));
}

#[test]
fn unsupported_and_corrupt() {
    assert!(matches!(
        decompress(Some("zstd"), b"x", MIB),
        Err(UsageError::UnsupportedEncoding(e)) if e == "zstd"
    ));
    assert!(matches!(
        decompress(Some("gzip, gzip, gzip, gzip"), b"x", MIB),
        Err(UsageError::UnsupportedEncoding(_))
    ));
    assert!(matches!(
        decompress(Some("gzip"), b"not gzip at all", MIB),
        Err(UsageError::Corrupt(_))
    ));
    let mut truncated = gzip(&sample());
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        decompress(Some("gzip"), &truncated, MIB),
        Err(UsageError::Corrupt(_))
    ));
    assert!(matches!(
        StreamDecoder::new(Some("gzip, br"), MIB),
        Err(UsageError::UnsupportedEncoding(_))
    ));
}

fn stream_decode(
    coding: &str,
    body: &[u8],
    sizes: &[usize],
    limit: usize,
) -> Result<Vec<u8>, UsageError> {
    let mut d = StreamDecoder::new(Some(coding), limit)?;
    let mut out = Vec::new();
    let mut rest = body;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
        out.extend_from_slice(&d.feed(chunk)?);
        rest = tail;
    }
    out.extend(d.finish()?);
    Ok(out)
}

#[test]
fn stream_round_trips_in_any_chunking() {
    let data = sample();
    for (coding, body) in encoded().into_iter().chain([("identity", data.clone())]) {
        for sizes in [&[1][..], &[2], &[3], &[7], &[4096], &[1, 500, 3, 17, 9000]] {
            let out = stream_decode(coding, &body, sizes, MIB).unwrap();
            assert_eq!(out, data, "{coding} {sizes:?}");
        }
    }
}

#[test]
fn stream_bombs_are_refused_and_stay_refused() {
    let zeros = vec![0u8; 8 * MIB];
    for (coding, bomb) in [
        ("gzip", gzip(&zeros)),
        ("deflate", zlib(&zeros)),
        ("br", brotli(&zeros)),
    ] {
        let mut d = StreamDecoder::new(Some(coding), MIB).unwrap();
        let mut produced = 0;
        let mut failed = false;
        for chunk in bomb.chunks(1024) {
            match d.feed(chunk) {
                Ok(out) => produced += out.len(),
                Err(e) => {
                    assert!(matches!(e, UsageError::TooLarge { .. }), "{coding}: {e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "{coding}");
        assert!(produced <= MIB);
        assert!(matches!(d.feed(b"more"), Err(UsageError::TooLarge { .. })));
        assert!(matches!(d.finish(), Err(UsageError::TooLarge { .. })));
    }
    let mut d = StreamDecoder::new(None, 10).unwrap();
    assert!(d.feed(b"12345").is_ok());
    assert!(matches!(
        d.feed(b"123456"),
        Err(UsageError::TooLarge { limit: 10 })
    ));
}

#[test]
fn stream_corruption_and_truncation() {
    let mut d = StreamDecoder::new(Some("br"), MIB).unwrap();
    assert!(d.feed(b"\xff\xff\xff\xff garbage").is_err());
    assert!(d.feed(b"x").is_err());

    let full = brotli(&sample());
    let mut d = StreamDecoder::new(Some("br"), MIB).unwrap();
    d.feed(&full[..full.len() / 2]).unwrap();
    assert!(matches!(d.finish(), Err(UsageError::Corrupt(_))));

    let d = StreamDecoder::new(Some("deflate"), MIB).unwrap();
    assert!(d.finish().unwrap().is_empty());
    let mut d = StreamDecoder::new(Some("deflate"), MIB).unwrap();
    assert!(d.feed(b"x").unwrap().is_empty());
    assert!(d.finish().is_err());
}

#[test]
fn accept_encoding_keeps_only_the_codings_keygate_reads() {
    assert_eq!(readable_accept_encoding("gzip, deflate, br"), None);
    assert_eq!(readable_accept_encoding("gzip;q=1.0, identity"), None);
    assert_eq!(
        readable_accept_encoding("zstd, gzip;q=0.8, br"),
        Some("gzip;q=0.8, br".into())
    );
    assert_eq!(readable_accept_encoding("zstd"), Some("identity".into()));
    assert_eq!(readable_accept_encoding("*"), Some("identity".into()));
}

/// A 22-byte Large-Window Brotli stream: WBITS escape, a 1 GiB window, then an uncompressed
/// meta-block that is not the last. The brotli crate sized its ring buffer to the window, so
/// this allocated 1 GiB before producing a byte (`fuzz/fuzz_targets/decompress.rs` counts the
/// allocations of decoding; the input is also in its corpus as `regression-br-large-window`).
const LARGE_WINDOW_BR: &[u8] = b"\x11\x1e\x1e\x00\x02AAAAAAAAAAAAAAAA\x00";

#[test]
fn large_window_brotli_is_refused_before_decoding() {
    assert_eq!(LARGE_WINDOW_BR.len(), 22);
    assert!(matches!(
        decompress(Some("br"), LARGE_WINDOW_BR, MIB),
        Err(UsageError::Corrupt(_))
    ));
    assert!(matches!(
        decompress(Some("gzip, br"), LARGE_WINDOW_BR, MIB),
        Err(UsageError::Corrupt(_))
    ));
    for split in [1, 5, LARGE_WINDOW_BR.len()] {
        let mut d = StreamDecoder::new(Some("br"), MIB).unwrap();
        assert!(d.feed(b"").unwrap().is_empty());
        assert!(matches!(
            d.feed(&LARGE_WINDOW_BR[..split]),
            Err(UsageError::Corrupt(_))
        ));
        assert!(d.feed(&LARGE_WINDOW_BR[split..]).is_err());
        assert!(d.finish().is_err());
    }
}

#[test]
fn every_rfc_7932_window_still_decodes() {
    let data = sample();
    for lgwin in 10..=24 {
        let mut body = Vec::new();
        {
            let mut e = brotli::CompressorWriter::new(&mut body, 4096, 5, lgwin);
            e.write_all(&data).unwrap();
        }
        assert!(!large_window_brotli(body.first()), "lgwin {lgwin}");
        let out = decompress(Some("br"), &body, MIB).unwrap();
        assert_eq!(out.as_ref(), data.as_slice(), "lgwin {lgwin}");
        let streamed = stream_decode("br", &body, &[7], MIB).unwrap();
        assert_eq!(streamed, data, "lgwin {lgwin}");
    }
}
