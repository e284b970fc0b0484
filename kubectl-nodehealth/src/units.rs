//! Go durations (`3m5.2s`, as the kubelet writes them), Kubernetes quantities (`10Mi`) and
//! human formatting of both.

/// Parse a Go duration (`300ms`, `1m30s`, `3m5.2s`, `2h`) into seconds: the grammar shared with
/// the agent and xtask. A bare `0` is zero.
pub use nodehealth_units::parse_seconds as parse_go_duration;

/// Seconds as a short human duration: `850ms`, `12s`, `3m05s`, `2h10m`, `3d4h`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "never".to_string();
    }
    let negative = seconds < 0.0;
    let s = seconds.abs();
    let text = if s < 1.0 {
        format!("{}ms", (s * 1000.0).round() as u64)
    } else if s < 60.0 {
        let t = format!("{s:.1}");
        format!("{}s", t.trim_end_matches(".0"))
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s < 86400.0 {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else {
        format!(
            "{}d{}h",
            (s / 86400.0) as u64,
            ((s % 86400.0) / 3600.0) as u64
        )
    };
    if negative { format!("-{text}") } else { text }
}

/// Parse a Kubernetes binary/decimal quantity into bytes (`10Mi`, `1G`, `500000`).
pub fn parse_quantity_bytes(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let scale = match &text[split..] {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    Some(number * scale)
}

/// Bytes as MiB/GiB.
pub fn human_bytes(bytes: f64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024.0 * MIB {
        format!("{:.1} GiB", bytes / (1024.0 * MIB))
    } else {
        format!("{:.0} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("3m5.2s"), Some(185.2));
        assert_eq!(parse_go_duration("3m0s"), Some(180.0));
        assert_eq!(parse_go_duration("300ms"), Some(0.3));
        assert_eq!(parse_go_duration("1h2m"), Some(3720.0));
        assert_eq!(parse_go_duration("0"), Some(0.0));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
        let micro = parse_go_duration("1.5µs").unwrap();
        assert!((micro - 1.5e-6).abs() < 1e-12);
    }

    #[test]
    fn human_formats() {
        assert_eq!(human_duration(0.25), "250ms");
        assert_eq!(human_duration(12.0), "12s");
        assert_eq!(human_duration(185.2), "3m05s");
        assert_eq!(human_duration(7200.0 + 600.0), "2h10m");
        assert_eq!(human_duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d4h");
        assert_eq!(human_duration(f64::INFINITY), "never");
        assert_eq!(human_bytes(600.0 * 1024.0 * 1024.0), "600 MiB");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_bytes("10Mi"), Some(10.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity_bytes("1G"), Some(1e9));
        assert_eq!(parse_quantity_bytes("2048"), Some(2048.0));
        assert_eq!(parse_quantity_bytes("10Qi"), None);
    }
}
