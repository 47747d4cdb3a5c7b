//! Durations as users write them in resources (`"1h"`, `"30m"`, `"1h30m"`, `"90s"`).
//!
//! The same grammar as the CEL `duration()` function the apiserver uses to check bounds, restricted
//! to whole hours, minutes and seconds, so what `kubectl apply` accepts is what the operator parses.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration: write whole hours, minutes and seconds such as \"1h\", \"30m\" or \"1h30m\"",
            self.input
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `"1h"`, `"45m"`, `"1h30m"`, `"3600s"` (units in the order h, m, s; each at most once).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError { input: input.to_owned() };
    if input.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_unit_rank = 0u8;
    for ch in input.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let (rank, secs) = match ch {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(err()),
        };
        if digits.is_empty() || digits.len() > 9 || rank <= last_unit_rank {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = total.checked_add(n * secs).ok_or_else(err)?;
        digits.clear();
        last_unit_rank = rank;
    }
    if !digits.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hours_minutes_seconds_in_order() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h0m5s"), Ok(Duration::from_secs(7205)));
    }

    #[test]
    fn refuses_what_a_person_might_mistype() {
        for bad in ["", "1", "h", "1d", "30m1h", "1h1h", "1.5h", "-1h", " 1h", "1hour"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains("1h30m"), "{e}");
        }
    }
}
