//! Times and durations as people type them.
//!
//! A time is RFC 3339 (`2025-12-07T15:23:00Z`, `2025-12-07T23:23:00+08:00`,
//! fractions allowed), `now`, or `now` plus or minus a duration
//! (`now-2h`, `now+30m`). A duration is one or more number-unit pairs
//! (`4h`, `30m`, `1h30m`, `90s`, `500ms`, `2d`). Times are printed in UTC,
//! RFC 3339 ([`crate::output::utc`]); raw Unix milliseconds appear only in
//! JSON fields whose names end in `_ms`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix milliseconds below this (1973-03-03) are taken for a mistake: a
/// real incident time in ms is about 1.7e12, and the same instant in
/// seconds (about 1.7e9) falls below it.
pub const MIN_PLAUSIBLE_MS: u64 = 100_000_000_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A duration: number-unit pairs, units `ms`, `s`, `m`, `h`, `d` (shared
/// with `arbor-node`'s genesis flags).
pub use arbor_proto::duration::parse_duration;

/// A time as Unix milliseconds: RFC 3339, `now`, `now-DURATION`, `now+DURATION`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("now") {
        let now = now_ms();
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, d) = rest.split_at(1);
        let d = parse_duration(d)?.as_millis() as u64;
        return match sign {
            "-" => Ok(now.saturating_sub(d)),
            "+" => Ok(now.saturating_add(d)),
            _ => Err(format!("{s:?} is not a time: use now, now-2h or now+30m")),
        };
    }
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a time: give RFC 3339 in UTC such as 2025-12-07T15:23:00Z, or now, now-2h \
             (Unix milliseconds go in the *-ms option)"
        ));
    }
    let dt = OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
        format!(
            "{s:?} is not an RFC 3339 time ({e}): use e.g. 2025-12-07T15:23:00Z, \
             2025-12-07T23:23:00+08:00, now or now-2h"
        )
    })?;
    let ms = dt.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

/// Unix milliseconds, refusing a value that can only be seconds.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of Unix milliseconds"))?;
    if v < MIN_PLAUSIBLE_MS {
        let hint = if v >= 100_000_000 {
            format!(
                "; it looks like Unix seconds ({}): give {v}000, or the time as RFC 3339 with --at",
                crate::output::utc(v.saturating_mul(1000))
            )
        } else {
            "; give the time as RFC 3339 with --at, e.g. --at 2025-12-07T15:23:00Z".to_string()
        };
        return Err(format!(
            "{v} ms is {}, not a plausible time{hint}",
            crate::output::utc(v)
        ));
    }
    Ok(v)
}

// clap value parsers (clap wants `Fn(&str) -> Result<T, E>`).
pub fn parse_time_arg(s: &str) -> Result<u64, String> {
    parse_time(s)
}

pub fn parse_ms_arg(s: &str) -> Result<u64, String> {
    parse_ms(s)
}

/// A duration option: a duration, or a bare number of seconds (the older form).
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?} is too large"));
    }
    parse_duration(t)
}

/// A duration for people: `4h`, `1h30m`, `90s`, `250ms`, `0s`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= per {
            out.push_str(&format!("{}{unit}", rest / per));
            rest %= per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4h").unwrap(), Duration::from_secs(4 * 3600));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "h", "4", "4x", "-4h", "4 h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration_arg("3600").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(parse_duration_arg("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn durations_print_as_they_parse() {
        for ms in [0u64, 250, 90_000, 5_400_000, 14_400_000, 90_061_001] {
            let s = format_duration_ms(ms);
            assert_eq!(parse_duration(&s).unwrap().as_millis() as u64, ms, "{s}");
        }
        assert_eq!(format_duration_ms(14_400_000), "4h");
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2025-12-07T15:23:44.123Z").unwrap(),
            1_765_121_024_123
        );
        assert_eq!(
            parse_time("2025-12-07T23:23:44.123+08:00").unwrap(),
            1_765_121_024_123
        );
        let before = now_ms();
        let t = parse_time("now-2h").unwrap();
        assert!(t <= before - 7_200_000 + 5_000 && t + 7_200_000 >= before);
        assert!(parse_time("now").unwrap() >= before);
        assert!(parse_time("now+30m").unwrap() >= before + 1_800_000);
        for bad in ["2025-12-07", "yesterday", "1765121024", "now*2h", "now-"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_are_refused_with_a_hint() {
        let e = parse_ms("1765121024").unwrap_err();
        assert!(e.contains("seconds") && e.contains("1765121024000"), "{e}");
        assert!(e.contains("2025-12-07T15:23:44"), "{e}");
        assert!(parse_ms("12").is_err());
        assert_eq!(parse_ms("1765121024123").unwrap(), 1_765_121_024_123);
    }
}
