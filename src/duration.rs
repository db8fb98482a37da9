//! The one duration grammar of every sockbench binary (`server`, `loadgen`,
//! `compare`): humantime's (`500ms`, `2s`, `1.5s`, `1m`, `1h 30m`, `250us`),
//! plus a bare number meaning seconds, as `timeout(1)` and `sleep(1)` take it.

use std::time::Duration;

/// The longest duration any flag accepts: longer is a typo, not a benchmark.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// Parses a duration flag's value; the error says what was wrong with it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let parsed = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 && secs <= MAX_DURATION.as_secs_f64() => {
            Duration::from_secs_f64(secs)
        }
        Ok(_) => return Err(format!("{s:?} is not a duration from 0 to a week")),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("{s:?} is not a duration like 500ms, 2s, 1.5m or 1h ({e})"))?,
    };
    if parsed > MAX_DURATION {
        return Err(format!("{s:?}: duration too long (at most a week)"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_fractions_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn nonsense_is_refused_with_the_value_named() {
        for bad in ["", "s", "fast", "-1", "-1s", "NaN", "inf", "2 parsecs", "8d", "1000000"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
