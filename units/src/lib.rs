//! The one duration grammar of the plugin, the node agent and xtask: Go's `time.ParseDuration`
//! (`5s`, `1m30s`, `250ms`, `1.5h`, `300us`), the grammar the kubelet writes its own durations in
//! and kubectl's `--request-timeout` takes. A bare number is refused (is `5` seconds or
//! minutes?), except `0`.

use std::time::Duration;

/// A Go duration in seconds (`3m5.2s` → 185.2). `None` when it is not one. A bare `0` is zero.
pub fn parse_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    if text == "0" {
        return Some(0.0);
    }
    if text.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    total.is_finite().then_some(total)
}

/// A flag's duration: a Go duration that is positive. The message names the grammar.
pub fn parse(text: &str) -> Result<Duration, String> {
    let seconds = parse_seconds(text)
        .ok_or_else(|| format!("{text:?} is not a duration (examples: 5s, 500ms, 1m30s)"))?;
    if seconds <= 0.0 {
        return Err(format!(
            "{text:?}: a duration must be positive (examples: 5s, 500ms, 1m30s)"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_grammar() {
        assert_eq!(parse_seconds("300ms"), Some(0.3));
        assert_eq!(parse_seconds("1m30s"), Some(90.0));
        assert_eq!(parse_seconds("3m5.2s"), Some(185.2));
        assert_eq!(parse_seconds("2h"), Some(7200.0));
        assert_eq!(parse_seconds("1.5s"), Some(1.5));
        assert_eq!(parse_seconds("250us"), Some(0.00025));
        assert_eq!(parse_seconds("0"), Some(0.0));
        for bad in ["", "5", "fast", "1d", "s", "1m30", "-"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flags_are_positive() {
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert!(parse("0s").unwrap_err().contains("positive"));
        assert!(parse("0").is_err());
        assert!(parse("30").unwrap_err().contains("examples"));
        assert!(parse("-1s").is_err());
    }
}
