//! Which header carries the consumer key. The input is one header a line, `name:value`; the
//! value is raw bytes (Envoy's `raw_value` need not be UTF-8).
#![no_main]

use keygate::auth::extract::{presented_key, Presented, CREDENTIAL_HEADERS};
use keygate::request::{Header, RequestView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for line in data.split(|b| *b == b'\n').take(64) {
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        };
        names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
        values.push(value);
    }
    let view = RequestView {
        method: "POST",
        path: "/v1/chat/completions",
        headers: names
            .iter()
            .zip(&values)
            .map(|(name, value)| Header { name, value })
            .collect(),
        header_count: names.len(),
        body_len: None,
        peer: None,
        peer_identity: None,
        body: None,
    };
    let _ = view.content_length();

    match presented_key(&view) {
        Presented::One(key) => {
            // The key is a non-empty, trimmed piece of a credential header's value.
            assert!(!key.is_empty());
            assert_eq!(key, key.trim());
            assert!(view.headers.iter().any(|h| {
                CREDENTIAL_HEADERS.contains(&h.name)
                    && h.value.windows(key.len()).any(|w| w == key.as_bytes())
            }));
            let _ = keygate::auth::key::parse(key);
        }
        Presented::None => {
            // No credential header has anything in it.
            for h in view.headers.iter() {
                if h.name == "x-api-key" || h.name == "api-key" {
                    assert!(std::str::from_utf8(h.value).is_ok_and(|v| v.trim().is_empty()));
                }
            }
        }
        Presented::Ambiguous | Presented::Unreadable => {
            assert!(view
                .headers
                .iter()
                .any(|h| CREDENTIAL_HEADERS.contains(&h.name)));
        }
    }
});
