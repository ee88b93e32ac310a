//! Keeping secrets out of everything keygate sends or records: redaction of free text (reasons, actors, request lines) before it reaches a webhook or the
//! audit log. Shared by [`crate::notify`] and [`crate::audit`].

/// Free text longer than this is cut (reasons, actors, request lines).
pub const MAX_TEXT: usize = 1024;

/// Replaces anything that could be a credential with `[redacted]`: keygate keys, `sk-`/`sk_`
/// provider keys, and any token of 32+ characters mixing letters and digits (hashes, base64,
/// JWTs). Key ids and ordinary words pass. Also cuts the text to 1024 characters.
pub fn redact(text: &str) -> String {
    let is_token = |c: char| c.is_ascii_alphanumeric() || "_-+=.".contains(c);
    let secret = |t: &str| {
        let lower = t.to_ascii_lowercase();
        lower.contains("kg_live_")
            || lower.contains("kg_test_")
            || ((t.starts_with("sk-") || t.starts_with("sk_")) && t.len() >= 20)
            || (t.len() >= 32
                && t.bytes().any(|b| b.is_ascii_digit())
                && t.bytes().any(|b| b.is_ascii_alphabetic()))
    };
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    let mut rest = text;
    while let Some(start) = rest.find(is_token) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_token(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        out.push_str(if secret(token) { "[redacted]" } else { token });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(MAX_TEXT)
        .collect()
}
