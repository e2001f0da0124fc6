//! The one duration syntax of the command line: humantime's (`200ms`, `30s`, `5m`, `7d`,
//! `1h 30m`), or a bare number of seconds (`2`, `0.5`).

use std::time::Duration;

/// What the error messages suggest.
const EXAMPLES: &str = "write e.g. 200ms, 30s, 7d, 1h 30m, or a number of seconds";

/// Parses a duration as humantime writes them, or a bare number of seconds. For clap's
/// `value_parser`: the error names examples of what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bare = !text.is_empty()
        && text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if bare {
        let seconds: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds ({EXAMPLES})"))?;
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{e} ({EXAMPLES})"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} ({EXAMPLES})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_humantime_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("5 days"),
            Ok(Duration::from_secs(5 * 86_400))
        );
    }

    #[test]
    fn a_bad_duration_is_refused_with_examples() {
        for bad in ["soon", "", "5 fortnights", "1.2.3", "-1", "ms", "."] {
            match parse_duration(bad) {
                Ok(d) => panic!("{bad:?} parsed as {d:?}"),
                Err(e) => assert!(e.contains("e.g. 200ms, 30s"), "{bad:?}: {e}"),
            }
        }
    }
}
