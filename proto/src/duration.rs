//! Durations as people type them: one or more number-unit pairs (`4h`,
//! `30m`, `1h30m`, `90s`, `500ms`, `2d`). One parser for the `arbor` CLI
//! and `arbor-node`'s configuration (claim deadlines at genesis, for one).

use std::time::Duration;

/// A duration: number-unit pairs, units `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a duration: use a number and a unit, e.g. 30m, 4h, 1h30m, 90s, 500ms, 2d"
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(n.saturating_mul(ms_per));
    }
    let ms = u64::try_from(total).map_err(|_| format!("{s:?} is too long a duration"))?;
    Ok(Duration::from_millis(ms))
}
