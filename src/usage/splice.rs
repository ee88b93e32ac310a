//! A minimal scanner over JSON text that finds an object's members by byte range, so a request
//! body can be edited by splicing: every byte not edited (key order, number spelling, spacing)
//! is kept exactly as the client sent it, which re-serializing a parsed value would not do.
//!
//! Callers validate the text with serde_json first; the scanner only has to be correct on
//! valid JSON, and merely never panics (it returns `None`) on anything else.

use std::ops::Range;

/// One `"key": value` member of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    /// The key's string token, quotes included.
    pub key: Range<usize>,
    /// The value's tokens.
    pub value: Range<usize>,
}

/// An object's members in source order, and the index of its closing `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Object {
    pub members: Vec<Member>,
    pub close: usize,
}

impl Object {
    /// The last member whose key decodes to `name` (JSON parsers keep the last duplicate).
    pub fn last(&self, json: &[u8], name: &str) -> Option<Member> {
        self.members
            .iter()
            .rev()
            .find(|m| {
                json.get(m.key.clone())
                    .and_then(|k| serde_json::from_slice::<String>(k).ok())
                    .is_some_and(|k| k == name)
            })
            .cloned()
    }
}

fn skip_ws(json: &[u8], mut at: usize) -> usize {
    while json
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// The index just past the string starting at `at`.
fn skip_string(json: &[u8], at: usize) -> Option<usize> {
    if json.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match json.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index just past the value starting at `at`.
fn skip_value(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => skip_string(json, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = skip_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while json
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

/// The object whose `{` is the first non-space byte at or after `at`; `None` if there is none.
pub(super) fn object_at(json: &[u8], at: usize) -> Option<Object> {
    let mut i = skip_ws(json, at);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    i = skip_ws(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return Some(Object { members, close: i });
    }
    loop {
        let key_end = skip_string(json, i)?;
        let colon = skip_ws(json, key_end);
        if json.get(colon) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(json, colon + 1);
        let value_end = skip_value(json, value_start)?;
        members.push(Member {
            key: i..key_end,
            value: value_start..value_end,
        });
        i = skip_ws(json, value_end);
        match json.get(i)? {
            b',' => i = skip_ws(json, i + 1),
            b'}' => return Some(Object { members, close: i }),
            _ => return None,
        }
    }
}

/// `json` with `range` replaced by `with`.
pub(super) fn replace(json: &[u8], range: Range<usize>, with: &[u8]) -> Option<Vec<u8>> {
    let (head, tail) = (json.get(..range.start)?, json.get(range.end..)?);
    Some([head, with, tail].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_with_nested_values_and_escapes() {
        let json = br#" { "a" : [1, {"}": "]"}], "b\"q": "x\\", "c":-1.5e3 ,"d":{}} "#;
        let obj = object_at(json, 0).unwrap();
        let text = |r: &Range<usize>| std::str::from_utf8(&json[r.clone()]).unwrap();
        let got: Vec<(&str, &str)> = obj
            .members
            .iter()
            .map(|m| (text(&m.key), text(&m.value)))
            .collect();
        assert_eq!(
            got,
            vec![
                (r#""a""#, r#"[1, {"}": "]"}]"#),
                (r#""b\"q""#, r#""x\\""#),
                (r#""c""#, "-1.5e3"),
                (r#""d""#, "{}"),
            ]
        );
        assert_eq!(json[obj.close], b'}');
        assert_eq!(
            obj.last(json, "b\"q").map(|m| m.value),
            Some(obj.members[1].value.clone())
        );
    }

    #[test]
    fn last_duplicate_wins_and_escaped_keys_decode() {
        let json = br#"{"stream":false,"str\u0065am":true}"#;
        let obj = object_at(json, 0).unwrap();
        let m = obj.last(json, "stream").unwrap();
        assert_eq!(&json[m.value], b"true");
    }

    #[test]
    fn never_panics_on_broken_input() {
        for bad in [
            &b"{"[..],
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":1",
            b"{\"a\\",
            b"[1]",
            b"",
            b"}}",
            b"{\"a\":]}",
        ] {
            let _ = object_at(bad, 0);
        }
        assert_eq!(replace(b"abc", 2..9, b"x"), None);
    }
}
