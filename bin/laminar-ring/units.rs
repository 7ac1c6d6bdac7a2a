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

/// A slot count: a power of two from 1 to 2^32, the library's rule for
/// every ring (`check_capacity`). Every value that breaks it gets the same
/// message, with the rule.
pub fn parse_slots(s: &str) -> Result<usize, String> {
    const RULE: &str =
        "must be a power of two from 1 to 2^32 (1, 2, 4, ..., 1024, ..., 4294967296)";
    let clean: String = s.trim().chars().filter(|&c| c != '_').collect();
    let n = clean
        .parse::<u64>()
        .ok()
        .filter(|&n| n.is_power_of_two() && n <= 1 << 32)
        .ok_or_else(|| format!("'{s}' slots: {RULE}"))?;
    usize::try_from(n).map_err(|_| format!("'{s}' slots: too many for this machine"))
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

/// `1 row`, `2 rows`, `1,024 slots`: a count with its noun, singular for
/// exactly one.
pub fn fmt_counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", fmt_count(n), if n == 1 { one } else { many })
}

/// `a` or `an`, as `text` is read aloud: `an 8.60x`, `an 11x`, `an Arrow`,
/// `a 1.25x`, `a typed`.
pub fn article(text: &str) -> &'static str {
    let t = text.trim_start();
    let digits: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    let vowel = if digits.is_empty() {
        // Words: by their first letter, but "a unix", "a user", "a one".
        let lower = t.to_ascii_lowercase();
        t.starts_with(|c: char| "aeiouAEIOU".contains(c))
            && !["uni", "use", "usu", "one"]
                .iter()
                .any(|p| lower.starts_with(p))
    } else {
        // Numbers: "eight...", "eleven...", "eighteen..." (in the thousands
        // and millions too: 11,000 is "eleven thousand").
        digits.starts_with('8')
            || (digits.len() % 3 == 2 && (digits.starts_with("11") || digits.starts_with("18")))
    };
    if vowel { "an" } else { "a" }
}

/// `text` after its article: `an 8.60x`, `a 3.10x`.
pub fn with_article(text: &str) -> String {
    format!("{} {text}", article(text))
}

/// A unit for a column of nanosecond latencies: the one that suits the
/// column's median: ns below 10 µs, µs below 10 ms, else ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsUnit {
    Ns,
    Us,
    Ms,
}

impl NsUnit {
    /// The unit for the median of `values`.
    pub fn for_column(values: &[u64]) -> Self {
        let mut v = values.to_vec();
        v.sort_unstable();
        match v.get(v.len() / 2).copied().unwrap_or(0) {
            0..10_000 => Self::Ns,
            10_000..10_000_000 => Self::Us,
            _ => Self::Ms,
        }
    }

    /// `ns`, `µs` or `ms`, for the column's header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ns => "ns",
            Self::Us => "µs",
            Self::Ms => "ms",
        }
    }

    /// `ns` in this unit, without it: three significant digits, or the
    /// whole number when it has more (`3.84`, `64.2`, `4502`).
    pub fn fmt(self, ns: u64) -> String {
        let v = ns as f64
            / match self {
                Self::Ns => 1.0,
                Self::Us => 1e3,
                Self::Ms => 1e6,
            };
        if self == Self::Ns || v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
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
        assert_eq!(parse_slots("1"), Ok(1));
        assert_eq!(parse_slots("4294967296"), Ok(1 << 32));
        for bad in ["0", "3", "1000", "x", "-2", "8589934592", ""] {
            let e = parse_slots(bad).unwrap_err();
            assert!(
                e.ends_with(
                    "must be a power of two from 1 to 2^32 (1, 2, 4, ..., 1024, ..., 4294967296)"
                ),
                "{bad}: {e}"
            );
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
    fn counts_take_the_singular_for_exactly_one() {
        assert_eq!(fmt_counted(0, "row", "rows"), "0 rows");
        assert_eq!(fmt_counted(1, "row", "rows"), "1 row");
        assert_eq!(fmt_counted(2, "batch", "batches"), "2 batches");
        assert_eq!(fmt_counted(1_000, "slot", "slots"), "1,000 slots");
    }

    #[test]
    fn the_article_follows_how_the_text_is_read() {
        for an in [
            "8.60x",
            "8",
            "80x",
            "800",
            "11x",
            "18.5x",
            "11,000",
            "18000",
            "Arrow",
            "arrow",
            "8,000,000",
        ] {
            assert_eq!(article(an), "an", "{an}");
        }
        for a in [
            "1.25x", "3.10x", "110x", "1,100", "180", "typed", "Parquet", "2", "100", "unix",
            "user",
        ] {
            assert_eq!(article(a), "a", "{a}");
        }
        assert_eq!(with_article("8.60x lower"), "an 8.60x lower");
        assert_eq!(with_article("3.10x lower"), "a 3.10x lower");
    }

    #[test]
    fn a_latency_column_takes_one_unit_from_its_median() {
        let col = [3_837, 64_200, 4_501_500];
        let u = NsUnit::for_column(&col);
        assert_eq!(u, NsUnit::Us);
        let cells: Vec<_> = col.iter().map(|&v| u.fmt(v)).collect();
        assert_eq!(cells, ["3.84", "64.2", "4502"]);
        assert_eq!(NsUnit::for_column(&[850, 900]).fmt(850), "850");
        assert_eq!(NsUnit::for_column(&[850, 9_999]).name(), "ns");
        assert_eq!(NsUnit::for_column(&[20_000_000]).name(), "ms");
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_741_323);
        assert_eq!(fmt_utc(t), "2026-11-27 01:02:03 UTC");
        assert_eq!(fmt_utc(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
    }
}
