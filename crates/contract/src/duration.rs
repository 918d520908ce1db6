//! The one duration grammar of the command line and the console: `500ms`, `90s`, `10m`,
//! `2h`, `1d`, or several run together (`1h30m`), up to [`MAX`]. Each caller adds what
//! its field allows beyond it (plain seconds for `apply --timeout`, a time or epoch
//! seconds for `audit --since`, whole seconds and no zero for a grant's `--for`).

use std::time::Duration;

/// The longest duration accepted (a year and a day), so that adding one to a time
/// cannot overflow and a typo does not mean for ever.
pub const MAX: Duration = Duration::from_secs(366 * 86_400);

/// `s` as a duration: one or more `<digits><unit>` terms, the unit `ms`, `s`, `m`, `h`
/// or `d`. Anything else (no unit, a sign, a fraction, over [`MAX`]) is an error saying
/// what is expected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a duration such as 500ms, 90s, 10m, 2h, 1d or 1h30m");
    let t = s.trim();
    if t.is_empty() || t.len() > 32 {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total_ms = n
            .checked_mul(ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
        rest = next;
    }
    let d = Duration::from_millis(total_ms);
    if d > MAX {
        return Err(format!(
            "{s:?}: longer than {} days",
            MAX.as_secs() / 86_400
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_add_up_and_anything_else_is_refused() {
        let ok = |s: &str, ms: u64| assert_eq!(parse(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("500ms", 500);
        ok("90s", 90_000);
        ok(" 10m ", 600_000);
        ok("2h", 7_200_000);
        ok("1d", 86_400_000);
        ok("1h30m", 5_400_000);
        ok("1m500ms", 60_500);
        ok("0s", 0);
        ok("366d", MAX.as_millis() as u64);
        for bad in [
            "",
            "2",
            "h",
            "2x",
            "-1h",
            "1.5h",
            "400d",
            "1h30",
            "ms",
            "5 m",
            "99999999999999999999s",
            "99999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
