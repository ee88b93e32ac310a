//! Where a consumer key may arrive: `Authorization: Bearer`, `x-api-key` (Anthropic SDKs)
//! and `api-key` (Azure OpenAI SDKs).

use crate::request::RequestView;

/// Headers that may carry a consumer key; all of them are stripped before the request leaves.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// What the request presented as its credential.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    None,
    One(&'a str),
    /// Two different credentials, or one that is not valid UTF-8 / not a bearer token.
    Ambiguous,
    Unreadable,
}

/// Finds the single credential the request carries. Identical copies in several headers are
/// accepted (some clients send both `Authorization` and `x-api-key`); different ones are not.
pub fn presented_key<'a>(req: &RequestView<'a>) -> Presented<'a> {
    let mut found: Option<&'a str> = None;
    for header in &req.headers {
        let value = match header.name {
            "authorization" => match bearer(header.value) {
                Some(v) => v,
                None => return Presented::Unreadable,
            },
            "x-api-key" | "api-key" => match std::str::from_utf8(header.value) {
                Ok(v) => v.trim(),
                Err(_) => return Presented::Unreadable,
            },
            _ => continue,
        };
        if value.is_empty() {
            continue;
        }
        match found {
            Some(prev) if prev != value => return Presented::Ambiguous,
            _ => found = Some(value),
        }
    }
    found.map_or(Presented::None, Presented::One)
}

/// Whether the query string carries a keygate key (`kg_live_` / `kg_test_`, in any case and
/// however percent-encoded). Such a request is refused: forwarded, the key would reach the
/// provider and every access log on the way.
pub fn key_in_query(path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(query).collect::<Vec<u8>>();
    decoded.windows(7).any(|w| {
        w[..3].eq_ignore_ascii_case(b"kg_")
            && (w[3..7].eq_ignore_ascii_case(b"live") || w[3..7].eq_ignore_ascii_case(b"test"))
    })
}

fn bearer(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() {
        return Some("");
    }
    let (scheme, token) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Header;

    fn view<'a>(headers: &'a [(&'a str, &'a str)]) -> RequestView<'a> {
        RequestView {
            method: "GET",
            path: "/",
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n,
                    value: v.as_bytes(),
                })
                .collect(),
            peer: None,
            header_count: 0,
            body_len: None,
            peer_identity: None,
            body: None,
        }
    }

    #[test]
    fn reads_each_supported_header() {
        assert_eq!(
            presented_key(&view(&[("authorization", "Bearer kg_a")])),
            Presented::One("kg_a")
        );
        assert_eq!(
            presented_key(&view(&[("authorization", "bearer  kg_a ")])),
            Presented::One("kg_a")
        );
        assert_eq!(
            presented_key(&view(&[("x-api-key", "kg_b")])),
            Presented::One("kg_b")
        );
        assert_eq!(
            presented_key(&view(&[("api-key", "kg_c")])),
            Presented::One("kg_c")
        );
        assert_eq!(
            presented_key(&view(&[("x-other", "kg_c")])),
            Presented::None
        );
    }

    #[test]
    fn identical_copies_are_fine_different_ones_are_not() {
        let same = [("authorization", "Bearer kg_a"), ("x-api-key", "kg_a")];
        assert_eq!(presented_key(&view(&same)), Presented::One("kg_a"));
        let differ = [("authorization", "Bearer kg_a"), ("x-api-key", "kg_b")];
        assert_eq!(presented_key(&view(&differ)), Presented::Ambiguous);
        let twice = [
            ("authorization", "Bearer kg_a"),
            ("authorization", "Bearer kg_b"),
        ];
        assert_eq!(presented_key(&view(&twice)), Presented::Ambiguous);
    }

    #[test]
    fn non_bearer_schemes_are_unreadable() {
        assert_eq!(
            presented_key(&view(&[("authorization", "Basic abc")])),
            Presented::Unreadable
        );
        assert_eq!(
            presented_key(&view(&[("authorization", "kg_live_x")])),
            Presented::Unreadable
        );
    }

    #[test]
    fn keys_in_the_query_string_are_found_however_encoded() {
        for path in [
            "/v1/models?key=kg_live_abc",
            "/v1/models?a=1&api-key=KG_TEST_abc",
            "/v1/models?k=kg%5Flive%5Fabc",
            "/v1/models?k=%6bg_live_x",
        ] {
            assert!(key_in_query(path), "{path}");
        }
        for path in ["/v1/models", "/v1/kg_live_in_path", "/v1/models?q=kg_other"] {
            assert!(!key_in_query(path), "{path}");
        }
    }
}
