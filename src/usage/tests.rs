//! Cross-module tests over the fixtures: every stream gives the same outcome however it is
//! split into chunks, compressed streams decode into the same outcome, and no input panics.

use std::io::Write;

use proptest::prelude::*;

use super::*;

const STREAMS: &[(Dialect, &[u8])] = &[
    (
        Dialect::OpenAi,
        include_bytes!("fixtures/mock_openai_chat_stream_usage.sse"),
    ),
    (
        Dialect::OpenAi,
        include_bytes!("fixtures/mock_openai_chat_stream_no_usage.sse"),
    ),
    (
        Dialect::OpenAi,
        include_bytes!("fixtures/mock_openai_chat_stream_interrupted.sse"),
    ),
    (
        Dialect::OpenAi,
        include_bytes!("fixtures/mock_openai_completion_stream.sse"),
    ),
    (
        Dialect::OpenAi,
        include_bytes!("fixtures/mock_openai_responses_stream.sse"),
    ),
    (
        Dialect::OpenAi,
        include_bytes!("fixtures/azure_chat_stream.sse"),
    ),
    (
        Dialect::Anthropic,
        include_bytes!("fixtures/mock_anthropic_stream.sse"),
    ),
    (
        Dialect::Anthropic,
        include_bytes!("fixtures/mock_anthropic_stream_interrupted.sse"),
    ),
    (
        Dialect::Anthropic,
        include_bytes!("fixtures/anthropic_stream_doc.sse"),
    ),
    (
        Dialect::Anthropic,
        include_bytes!("fixtures/anthropic_stream_error.sse"),
    ),
    (
        Dialect::Cohere,
        include_bytes!("fixtures/cohere_v2_stream.sse"),
    ),
];

const BODIES: &[&[u8]] = &[
    include_bytes!("fixtures/mock_openai_chat.json"),
    include_bytes!("fixtures/mock_openai_completion.json"),
    include_bytes!("fixtures/mock_openai_embeddings.json"),
    include_bytes!("fixtures/mock_openai_responses.json"),
    include_bytes!("fixtures/mock_anthropic_message.json"),
    include_bytes!("fixtures/cohere_v2_chat.json"),
];

/// Feeds `stream` in chunks whose sizes cycle through `sizes`.
fn run_split(dialect: Dialect, stream: &[u8], sizes: &[usize]) -> StreamOutcome {
    let mut acc = StreamAccumulator::new(dialect);
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
        acc.feed(chunk);
        rest = tail;
    }
    acc.finish()
}

fn whole(dialect: Dialect, stream: &[u8]) -> StreamOutcome {
    run_split(dialect, stream, &[usize::MAX])
}

fn crlf(stream: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(stream)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[test]
fn every_fixed_split_gives_the_same_outcome() {
    for (i, &(dialect, stream)) in STREAMS.iter().enumerate() {
        let expected = whole(dialect, stream);
        assert!(
            expected.usage.is_some() || i == 1 || i == 2,
            "fixture {i} has usage"
        );
        assert!(!expected.unparseable, "fixture {i}");
        for sizes in [&[1][..], &[2], &[3], &[7], &[64], &[5, 1, 13, 2]] {
            assert_eq!(
                run_split(dialect, stream, sizes),
                expected,
                "fixture {i} {sizes:?}"
            );
        }
        let crlf = crlf(stream);
        for sizes in [&[1][..], &[3], &[1000]] {
            assert_eq!(
                run_split(dialect, &crlf, sizes),
                expected,
                "fixture {i} crlf {sizes:?}"
            );
        }
    }
}

#[test]
fn every_single_cut_gives_the_same_outcome() {
    for &(dialect, stream) in STREAMS {
        let expected = whole(dialect, stream);
        for cut in 1..stream.len() {
            assert_eq!(run_split(dialect, stream, &[cut, usize::MAX]), expected);
        }
    }
}

#[test]
fn a_stream_cut_anywhere_before_its_terminator_is_incomplete() {
    for &(dialect, stream) in STREAMS {
        if !whole(dialect, stream).complete {
            continue;
        }
        // The last byte of the terminator event's data line.
        let last = stream.trim_ascii_end().len();
        for cut in 0..last {
            let out = whole(dialect, &stream[..cut]);
            assert!(!out.complete, "{dialect:?} cut at {cut}");
        }
    }
}

#[test]
fn streams_and_bodies_agree_on_the_mock_counts() {
    let body = parse_body(Dialect::OpenAi, BODIES[3]).unwrap().unwrap();
    let stream = whole(Dialect::OpenAi, STREAMS[4].1).usage.unwrap();
    assert_eq!(body, stream);
    let body = parse_body(Dialect::Anthropic, BODIES[4]).unwrap().unwrap();
    let stream = whole(Dialect::Anthropic, STREAMS[6].1).usage.unwrap();
    assert_eq!(body, stream);
}

#[test]
fn compressed_stream_through_the_decoder() {
    let (dialect, stream) = STREAMS[0];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(stream).unwrap();
    let gz = gz.finish().unwrap();
    let mut decoder = StreamDecoder::new(Some("gzip"), 1 << 20).unwrap();
    let mut acc = StreamAccumulator::new(dialect);
    for chunk in gz.chunks(11) {
        acc.feed(&decoder.feed(chunk).unwrap());
    }
    acc.feed(&decoder.finish().unwrap());
    assert_eq!(acc.finish(), whole(dialect, stream));
}

#[test]
fn end_to_end_settle_and_price() {
    let request = request_estimate(
        Dialect::Anthropic,
        br#"{"model":"claude-sonnet-4-20250514","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hello there world"}]}"#,
    );
    let outcome = whole(Dialect::Anthropic, STREAMS[6].1);
    let settled = settle(&outcome, &request);
    assert!(!settled.estimated);
    let cost = PriceTable::defaults().cost_micro_usd("anthropic", &settled.usage);
    // 6 base * 3 + 7 read * 0.3 + 11 written * 3.75 + 5 out * 15 = 18 + 2.1 + 41.25 + 75.
    assert_eq!(cost, Some(137));
}

fn dialect() -> impl Strategy<Value = Dialect> {
    prop_oneof![
        Just(Dialect::OpenAi),
        Just(Dialect::Anthropic),
        Just(Dialect::Cohere)
    ]
}

proptest! {
    #[test]
    fn random_splits_give_the_same_outcome(
        index in 0..STREAMS.len(),
        sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let (dialect, stream) = STREAMS[index];
        prop_assert_eq!(run_split(dialect, stream, &sizes), whole(dialect, stream));
    }

    #[test]
    fn parsers_never_panic_on_bytes(
        dialect in dialect(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        split in 1usize..32,
    ) {
        let _ = parse_body(dialect, &bytes);
        let _ = run_split(dialect, &bytes, &[split]);
        let _ = decompress(Some("gzip"), &bytes, 4096);
        let _ = decompress(Some("deflate"), &bytes, 4096);
        let _ = decompress(Some("br"), &bytes, 4096);
    }

    #[test]
    fn parsers_never_panic_on_mangled_fixtures(
        index in 0..STREAMS.len(),
        body in 0..BODIES.len(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (dialect, stream) = STREAMS[index];
        let mut stream = stream.to_vec();
        let mut body = BODIES[body].to_vec();
        for (at, byte) in &flips {
            let i = at.index(stream.len());
            stream[i] = *byte;
            let j = at.index(body.len());
            body[j] = *byte;
        }
        let _ = run_split(dialect, &stream, &[7]);
        let _ = parse_body(dialect, &body);
    }
}
