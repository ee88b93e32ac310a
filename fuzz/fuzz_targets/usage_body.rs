//! Usage from a whole JSON response body, per provider dialect. The first byte picks the
//! dialect; the rest is the body.
#![no_main]

use keygate::usage::{parse_body, Dialect, MAX_MODEL_CHARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let dialect = match selector % 3 {
        0 => Dialect::OpenAi,
        1 => Dialect::Anthropic,
        _ => Dialect::Cohere,
    };
    if let Ok(Some(usage)) = parse_body(dialect, body) {
        if let Some(model) = &usage.model {
            assert!(!model.is_empty() && model.chars().count() <= MAX_MODEL_CHARS);
        }
        let _ = usage.total_tokens();
    }
});
