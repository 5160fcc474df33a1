//! How durations are written on the command line: plain seconds (`10`, `2.5`) or a humantime
//! duration (`1m30s`), and what zero means for each kind of flag.

use std::time::Duration;

/// A timeout of zero means no limit.
pub(crate) fn limit(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then_some(timeout)
}

/// Plain seconds (`10`, `2.5`) or a humantime duration (`1m30s`).
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text}: {e}"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected seconds or a duration such as 1m30s"))
}

/// A time to live: parsed as a timeout is, but zero is refused rather than read as "no limit",
/// since it would let the message expire at once.
pub(crate) fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_timeout(text)?;
    if ttl.is_zero() {
        return Err("a time to live must be more than zero; leave out --ttl for none".into());
    }
    Ok(ttl)
}

/// A duration above zero: plain seconds or a duration such as `5m`.
pub(crate) fn parse_positive(text: &str) -> Result<Duration, String> {
    let duration = parse_timeout(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_seconds_or_durations() {
        assert_eq!(parse_timeout("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2_500)));
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("soon").is_err());
        assert_eq!(limit(Duration::ZERO), None);
    }

    #[test]
    fn a_ttl_is_seconds_or_a_duration_and_never_zero() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("-5").is_err());
        assert!(parse_ttl("later").is_err());
    }
}
