//! Credentials out of quoted text: a log line the tool quotes (in the report, the bundle, the
//! terminal) keeps its shape and loses its secrets.
//!
//! What is a credential here: the token of an `Authorization: Bearer`/`Basic` value, the password
//! of a URL's userinfo (`https://user:pass@host`), and the value of a `key=value` or `key: value`
//! pair whose key names a secret (`password`, `token`, `secret`, `api_key`, ...). Over-redacting a
//! harmless word costs a little context; quoting a token hands it to whoever reads the bundle.

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Keys whose value is a secret (compared case-insensitively, `-` and `_` alike).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "bearer_token",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "access_key",
    "secret_key",
    "private_key",
];

/// Characters a token, password or key value is made of (up to a delimiter).
fn value_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '"' | '\'' | '&' | ',' | ';' | '}' | ')' | ']' | '>'))
}

/// `text` with its credentials replaced by [`REDACTED`]; borrowed when there were none.
pub fn secrets(text: &str) -> Cow<'_, str> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    auth_schemes(text, &mut spans);
    url_passwords(text, &mut spans);
    secret_pairs(text, &mut spans);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// The end of the value that starts at `from`.
fn value_end(text: &str, from: usize) -> usize {
    text[from..]
        .char_indices()
        .find(|&(_, c)| !value_char(c))
        .map_or(text.len(), |(i, _)| from + i)
}

/// `Bearer <token>` and `Basic <credentials>`, any case.
fn auth_schemes(text: &str, spans: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    for scheme in ["bearer ", "basic "] {
        for (i, _) in lower.match_indices(scheme) {
            // A whole word: "basic " inside "nonbasic " is not a scheme.
            if lower[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            {
                continue;
            }
            let from = i + scheme.len();
            let from = from + (text[from..].len() - text[from..].trim_start().len());
            let end = value_end(text, from);
            // Short words after "basic " are prose ("basic auth"), not credentials.
            if end - from >= 8 {
                spans.push((from, end));
            }
        }
    }
}

/// `scheme://user:password@host`: the password.
fn url_passwords(text: &str, spans: &mut Vec<(usize, usize)>) {
    for (i, _) in text.match_indices("://") {
        let from = i + 3;
        let end = value_end(text, from);
        let authority = &text[from..end];
        let authority = authority.split('/').next().unwrap_or(authority);
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            spans.push((from + colon + 1, from + at));
        }
    }
}

/// `key=value`, `key: value`, `"key":"value"` with a secret's key.
fn secret_pairs(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-') {
            i += 1;
            continue;
        }
        // A word: [A-Za-z0-9_-]+
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
        {
            i += 1;
        }
        let key = text[start..i].to_ascii_lowercase().replace('-', "_");
        if !SECRET_KEYS
            .iter()
            .any(|k| key == *k || key.ends_with(&format!("_{k}")))
        {
            continue;
        }
        // Then: optional closing quote, spaces, `=` or `:`, spaces, optional opening quote.
        let mut j = i;
        if j < bytes.len() && matches!(bytes[j], b'"' | b'\'') {
            j += 1;
        }
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j >= bytes.len() || !matches!(bytes[j], b'=' | b':') {
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j < bytes.len() && matches!(bytes[j], b'"' | b'\'') {
            j += 1;
        }
        let end = value_end(text, j);
        if end > j {
            spans.push((j, end));
            i = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_replaced_and_the_rest_kept() {
        for (line, want) in [
            (
                r#"E1206 1 request.go:1] "Unauthorized" header="Authorization: Bearer eyJhbGciOi.abc-def_123""#,
                r#"E1206 1 request.go:1] "Unauthorized" header="Authorization: Bearer [REDACTED]""#,
            ),
            (
                "GET https://admin:hunter2@10.0.0.1:6443/api failed",
                "GET https://admin:[REDACTED]@10.0.0.1:6443/api failed",
            ),
            (
                r#"time="2026-12-06T10:00:00Z" level=error msg="pull failed" password=s3cr3t user=bob"#,
                r#"time="2026-12-06T10:00:00Z" level=error msg="pull failed" password=[REDACTED] user=bob"#,
            ),
            (
                r#"{"registry_token": "abc.def", "user": "x"}"#,
                r#"{"registry_token": "[REDACTED]", "user": "x"}"#,
            ),
            (
                "authorization: Basic dXNlcjpwYXNzd29yZA==",
                "authorization: Basic [REDACTED]",
            ),
            (
                "url=https://r.example/v2/?access_token=xyz&scope=pull",
                "url=https://r.example/v2/?access_token=[REDACTED]&scope=pull",
            ),
        ] {
            assert_eq!(secrets(line), want, "{line}");
        }
    }

    #[test]
    fn ordinary_lines_are_untouched() {
        for line in [
            r#"E1206 13:31:24 status_manager.go:1045] "Failed to get status for pod" err="forbidden""#,
            "Failed to get token for service account default: the server is unavailable",
            "use basic auth for the registry",
            "https://10.0.0.1:6443/api/v1/nodes/vm?timeout=10s",
            "tokens: 3 refreshed",
            "",
        ] {
            assert!(matches!(secrets(line), Cow::Borrowed(_)), "{line}");
        }
    }

    #[test]
    fn any_text_is_handled_without_panic() {
        for line in [
            "password=",
            "bearer ",
            "://",
            "x://a:b@",
            "token:é",
            "é password: ü",
        ] {
            let _ = secrets(line);
        }
    }
}
