//! The parameters of `GET /top`: `window=` and `n=`, checked.

use std::time::Duration;

/// Why a `/top` query was refused: the message is the 400 answer's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(String);

/// The parameters of `GET /top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopQuery {
    /// `window=`: `30s`, `1m`, `5m` or plain seconds; default 1 minute.
    pub window: Duration,
    /// `n=`: entries per dimension, 1 to 100; default 10.
    pub n: usize,
}

impl TopQuery {
    /// Parses a query string; windows longer than `max_window` are refused.
    ///
    /// # Errors
    ///
    /// A malformed value, or one out of range, explained.
    pub fn parse(query: &str, max_window: Duration) -> Result<TopQuery, BadQuery> {
        let mut top = TopQuery {
            window: Duration::from_secs(60).min(max_window),
            n: 10,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "window" => {
                    top.window = parse_window(value)
                        .filter(|w| !w.is_zero() && *w <= max_window)
                        .ok_or_else(|| {
                            BadQuery(format!(
                                "window={value:?}: expected 30s, 1m, 5m or seconds, up to {}s",
                                max_window.as_secs()
                            ))
                        })?;
                }
                "n" => {
                    top.n = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| BadQuery(format!("n={value:?}: expected 1 to 100")))?;
                }
                _ => {
                    return Err(BadQuery(format!(
                        "unknown parameter {key:?}: use window= and n="
                    )))
                }
            }
        }
        Ok(top)
    }
}

/// `30s`, `1m`, `5m`, `90` (seconds).
pub fn parse_window(text: &str) -> Option<Duration> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .map(|n| Duration::from_secs(n.saturating_mul(unit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_query() {
        let max = Duration::from_secs(300);
        let parse = |q: &str| TopQuery::parse(q, max);
        assert_eq!(
            parse("").unwrap(),
            TopQuery {
                window: Duration::from_secs(60),
                n: 10
            }
        );
        assert_eq!(
            parse("window=5m&n=3").unwrap(),
            TopQuery { window: max, n: 3 }
        );
        assert_eq!(parse("window=30s").unwrap().window, Duration::from_secs(30));
        assert_eq!(parse("window=90").unwrap().window, Duration::from_secs(90));
        for bad in [
            "window=10m",
            "window=0",
            "window=x",
            "n=0",
            "n=101",
            "n=",
            "top=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
