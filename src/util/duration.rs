//! Durations as operators write them (`10s`, `500ms`, `10m`, `24h`, `7d`, `1.5s`): the load
//! generator's options today, and the ban and auto-ban durations of the incident controls.
//! A number without a unit is an error, as `5` could mean seconds or minutes.
//!
//! Written by hand: the format is six units and a number, and the error messages are
//! what an operator sees at 3 a.m.

use std::time::Duration;

/// Parses `text`; the error is one line naming the problem.
///
/// ```
/// use std::time::Duration;
/// use spoa_guard::util::parse_duration;
/// assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?} (e.g. 10s, 500ms, 10m, 24h)"))?;
    let seconds = match unit {
        "" => {
            return Err(format!(
                "{text:?}: a duration needs a unit, e.g. {number}s or 500ms"
            ))
        }
        "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "bad duration unit {unit:?} (use us, ms, s, m, h, d)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("bad duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_their_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn a_number_without_a_unit_or_a_bad_one_is_refused() {
        assert_eq!(
            parse_duration("3"),
            Err("\"3\": a duration needs a unit, e.g. 3s or 500ms".to_owned())
        );
        assert_eq!(
            parse_duration("0.5"),
            Err("\"0.5\": a duration needs a unit, e.g. 0.5s or 500ms".to_owned())
        );
        assert_eq!(
            parse_duration("10 parsecs"),
            Err("bad duration unit \" parsecs\" (use us, ms, s, m, h, d)".to_owned())
        );
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e400s").is_err());
    }
}
