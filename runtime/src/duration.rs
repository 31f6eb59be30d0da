//! The one way durations are given on the command line and in the environment: a whole number with a
//! unit, `250ms`, `3s`, `2m` or `1h`. A bare number is refused (its unit would be a guess), and each flag
//! states its range, which the parser enforces instead of clamping a bad value silently.
//!
//! ```text
//! #[arg(long, env = "…", default_value = "3s", value_parser = duration::within(MIN, MAX))]
//! ```

use std::time::Duration;

/// Parses `250ms`, `3s`, `2m`, `1h` (a whole number and a unit, no space).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write it as 250ms, 3s, 2m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write it as 250ms, 3s, 2m or 1h"))?;
    let seconds = |factor: u64| {
        value
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!(
            "{text:?} has an unknown unit {unit:?}: use ms, s, m or h"
        )),
    }
}

/// A clap value parser for durations between `min` and `max` (inclusive).
pub fn within(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let value = parse(text)?;
        if value < min || value > max {
            return Err(format!(
                "{text} is out of range: between {} and {}",
                display(min),
                display(max)
            ));
        }
        Ok(value)
    }
}

/// `d` in the flag syntax (the largest unit that divides it exactly): `1500ms`, `3s`, `2m`.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_read() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn a_bare_number_or_unknown_unit_is_refused_with_the_syntax() {
        for bad in ["3", "3 s", "3d", "s", "", "-1s", "1.5s"] {
            let error = parse(bad).expect_err(bad);
            assert!(
                error.contains("ms") || error.contains("unit"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_refused_not_clamped() {
        let parser = within(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(parser("1s"), Ok(Duration::from_secs(1)));
        let error = parser("500ms").expect_err("below");
        assert!(error.contains("between 1s and 1m"), "{error}");
        assert!(parser("61s").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["0ms", "1500ms", "3s", "90s", "2m", "1h"] {
            let d = parse(text).expect(text);
            assert_eq!(display(d), text);
            assert_eq!(parse(&display(d)), Ok(d));
        }
    }
}
