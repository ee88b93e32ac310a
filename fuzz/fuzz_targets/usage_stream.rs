//! Usage over a streamed (SSE) response: the SSE decoder and the per-dialect stream
//! accumulator, fed the same bytes whole and in a chunking the input picks. Byte 0 picks the
//! dialect and the per-event limit, byte 1 the chunking; the rest is the stream.
#![no_main]

use keygate::usage::{Dialect, SseDecoder, StreamAccumulator, MAX_MODEL_CHARS};
use keygate_fuzz::chunks;
use libfuzzer_sys::fuzz_target;

fn decode(limit: usize, parts: &[&[u8]]) -> (Vec<(Option<String>, Vec<u8>)>, u64) {
    let mut decoder = SseDecoder::new(limit);
    let mut events = Vec::new();
    for part in parts {
        decoder.feed_with(part, |name, data| {
            assert!(
                data.len() <= limit,
                "event of {} bytes past the limit",
                data.len()
            );
            events.push((name.map(str::to_owned), data.to_vec()));
        });
    }
    decoder.finish_with(|name, data| events.push((name.map(str::to_owned), data.to_vec())));
    (events, decoder.dropped())
}

fn accumulate(dialect: Dialect, limit: usize, parts: &[&[u8]]) -> keygate::usage::StreamOutcome {
    let mut acc = StreamAccumulator::with_event_limit(dialect, limit);
    for part in parts {
        acc.feed(part);
    }
    acc.finish()
}

fuzz_target!(|data: &[u8]| {
    let [selector, chunking, stream @ ..] = data else {
        return;
    };
    let dialect = match selector % 3 {
        0 => Dialect::OpenAi,
        1 => Dialect::Anthropic,
        _ => Dialect::Cohere,
    };
    let limit = match (selector / 3) % 4 {
        0 => keygate::usage::sse::DEFAULT_EVENT_LIMIT,
        1 => 64,
        2 => 300,
        _ => 4096,
    };
    let whole = [stream];
    let parts = chunks(stream, *chunking);

    // Chunk boundaries never change what is decoded or accounted.
    let (events, dropped) = decode(limit, &whole);
    assert_eq!(decode(limit, &parts), (events, dropped));

    let outcome = accumulate(dialect, limit, &whole);
    assert_eq!(accumulate(dialect, limit, &parts), outcome);
    if let Some(model) = &outcome.model {
        assert!(!model.is_empty() && model.chars().count() <= MAX_MODEL_CHARS);
    }
    assert!(outcome.content_bytes <= stream.len() as u64);
});
