//! Parsing sizes, counts and modes from the command line; formatting them.

use std::time::{Duration, SystemTime};

/// Parses `64MiB`, `512KiB`, `1GiB`, `100MB`, `4k` or plain bytes.
/// Binary units: K, KiB, M, MiB, G, GiB, T, TiB; decimal: KB, MB, GB, TB.
/// Case-insensitive; no fractions.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    if num.is_empty() {
        return Err(format!("'{s}' is not a size (e.g. 64MiB, 1GiB, 4096)"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}': number too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}': size too large"))
}

/// An arena size: a size that is a multiple of 64 and at least 4 KiB.
pub fn parse_arena(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 4096 {
        return Err(format!("{s} is {n} bytes; the arena needs at least 4KiB"));
    }
    if n % 64 != 0 {
        return Err(format!("{s} is {n} bytes, not a multiple of 64"));
    }
    Ok(n)
}

/// A slot count: a power of two from 2 to 2^32.
pub fn parse_slots(s: &str) -> Result<usize, String> {
    let n = parse_count(s)?;
    if n < 2 || !n.is_power_of_two() || n > 1 << 32 {
        return Err(format!("{s} slots: must be a power of two from 2 to 2^32"));
    }
    usize::try_from(n).map_err(|_| format!("{s} slots: too many for this machine"))
}

/// A positive count; `_` separators allowed (`1_000_000`).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let clean: String = s.trim().chars().filter(|&c| c != '_').collect();
    let n: u64 = clean
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// A positive duration: `10s`, `500ms`, `2m`, `1h`, or plain seconds
/// (`30`). Case-insensitive; no fractions.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    if num.is_empty() {
        return Err(format!("'{s}' is not a duration (e.g. 10s, 500ms, 2m, 1h)"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}': number too large"))?;
    let ms_per: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!("'{s}': unknown unit '{other}' (use ms, s, m or h)"));
        }
    };
    let ms = n
        .checked_mul(ms_per)
        .ok_or_else(|| format!("'{s}': duration too long"))?;
    if ms == 0 {
        return Err("must be more than 0".into());
    }
    Ok(Duration::from_millis(ms))
}

/// A duration as [`parse_duration`] reads it: `2h`, `5m`, `10s`, `500ms`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A refresh interval: `500ms`, `2s` or seconds (`0.5`), from 10 ms to a
/// day.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not an interval (500ms, 2s, 0.5)"))?;
    let secs = v * scale;
    if !(0.01..=86_400.0).contains(&secs) {
        return Err(format!("'{s}' is outside 10ms to 1 day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Permission bits in octal (`600`, `0640`, `0o644`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    let m = u32::from_str_radix(t, 8).map_err(|_| format!("'{s}' is not an octal mode"))?;
    if m > 0o777 {
        return Err(format!(
            "'{s}': only permission bits (up to 777) are allowed"
        ));
    }
    if m & 0o002 != 0 {
        // Every command refuses to open such a ring (any local user could
        // rewrite it under its readers), so never make one.
        return Err(format!(
            "'{s}' lets every user write the ring, and no command opens such a ring; \
             for a group, use 660 and --shared"
        ));
    }
    Ok(m)
}

/// `1.5 MiB`-style bytes.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A nanosecond latency for humans: `850 ns`, `12.3 µs`, `4.56 ms`.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// `2026-11-27 01:02:03 UTC`.
pub fn fmt_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_junk() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        for bad in ["", "MiB", "1.5GiB", "12XB", "-1", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("16777216TiB").is_err(), "overflow");
        assert!(parse_arena("1KiB").is_err());
        assert!(parse_arena("4100").is_err());
        assert_eq!(parse_arena("4KiB"), Ok(4096));
    }

    #[test]
    fn slots_modes_and_counts() {
        assert_eq!(parse_slots("1024"), Ok(1024));
        for bad in ["0", "1", "1000", "x", "8589934592"] {
            assert!(parse_slots(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("800").is_err());
        assert!(parse_mode("1777").is_err());
        // A ring every user may write would be refused by every command.
        assert!(parse_mode("666").is_err());
        assert!(parse_mode("602").is_err());
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("0").is_err());
    }

    #[test]
    fn durations_parse_with_units_and_print_back() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2M"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "s",
            "0s",
            "1.5s",
            "10 parsecs",
            "-1s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["2h", "5m", "10s", "1500ms"] {
            assert_eq!(fmt_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_741_323);
        assert_eq!(fmt_utc(t), "2026-11-27 01:02:03 UTC");
        assert_eq!(fmt_utc(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
    }
}
