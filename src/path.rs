//! Request path normalization for scope decisions.
//!
//! Scope is decided on a canonical path. Anything whose meaning could differ between keygate
//! and the upstream (encoded separators, backslashes, dot-segments, bad escapes) is rejected
//! instead of being "fixed", so `/v1/chat/completions/../files` never passes a chat-only scope.

use std::borrow::Cow;

/// Why a path was refused. Each maps to a 400 with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("the request path contains a backslash")]
    Backslash,
    #[error("the request path contains a '.' or '..' segment")]
    DotSegment,
    #[error("the request path contains an invalid percent-escape")]
    BadEscape,
    #[error("the request path contains control or non-ASCII characters")]
    BadCharacter,
}

/// Returns the canonical path (query dropped, slashes merged, unreserved escapes decoded,
/// no trailing slash) or the reason it cannot be trusted.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    if bytes.iter().any(|b| !(0x21..0x7f).contains(b)) {
        return Err(PathError::BadCharacter);
    }
    if bytes.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    let simple = !bytes.contains(&b'%')
        && !path.contains("//")
        && !path.contains("/.")
        && (path.len() == 1 || !path.ends_with('/'));
    if simple {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = decode_segment(segment)?;
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
        out.push('/');
        out.push_str(&decoded);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn decode_segment(segment: &str) -> Result<Cow<'_, str>, PathError> {
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(PathError::BadEscape)?;
        match value {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                out.push(v as char)
            }
            v => {
                out.push('%');
                out.push_str(&format!("{v:02X}"));
            }
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_paths_pass_unchanged_without_query() {
        assert_eq!(
            normalize("/v1/chat/completions").unwrap(),
            "/v1/chat/completions"
        );
        assert_eq!(normalize("/v1/models?limit=3").unwrap(), "/v1/models");
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn merges_slashes_trims_trailing_and_decodes_unreserved() {
        assert_eq!(normalize("//v1///models/").unwrap(), "/v1/models");
        assert_eq!(
            normalize("/v1/%63hat/completions").unwrap(),
            "/v1/chat/completions"
        );
        assert_eq!(normalize("/v1/models/a%20b").unwrap(), "/v1/models/a%20b");
    }

    #[test]
    fn rejects_traversal_and_encoded_separators() {
        let cases = [
            ("/v1/chat/completions/../files", PathError::DotSegment),
            ("/v1/./files", PathError::DotSegment),
            ("/v1/chat/completions/%2e%2e/files", PathError::DotSegment),
            ("/v1/chat/completions/.%2E/files", PathError::DotSegment),
            (
                "/v1/chat/completions%2F..%2Ffiles",
                PathError::EncodedSeparator,
            ),
            (
                "/v1/chat/completions%2f..%2ffiles",
                PathError::EncodedSeparator,
            ),
            ("/v1/chat%5Cfiles", PathError::EncodedSeparator),
            ("/v1\\files", PathError::Backslash),
            ("/v1/%zz", PathError::BadEscape),
            ("/v1/%4", PathError::BadEscape),
            ("v1/models", PathError::NotAbsolute),
            ("/v1/mod\u{e9}ls", PathError::BadCharacter),
            ("/v1/a b", PathError::BadCharacter),
        ];
        for (path, want) in cases {
            assert_eq!(normalize(path).unwrap_err(), want, "{path}");
        }
    }

    proptest! {
        #[test]
        fn normalized_paths_are_canonical(raw in "/[a-z0-9%./_~-]{0,40}") {
            if let Ok(p) = normalize(&raw) {
                let p = p.into_owned();
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.contains("//"));
                prop_assert!(!p.split('/').any(|s| s == "." || s == ".."));
                prop_assert_eq!(normalize(&p).unwrap().into_owned(), p.clone());
            }
        }
    }
}
