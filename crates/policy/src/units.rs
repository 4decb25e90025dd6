//! Parsing of human-written quantities: sizes (`512M`, `1G`, `1GiB`) and CPU counts.

use thiserror::Error;

/// A quantity that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    /// The text is not a size.
    #[error(
        "{0:?} is not a size (expected a number with an optional K, M, G or T suffix, e.g. 512M)"
    )]
    BadSize(String),
    /// The text is not a CPU count.
    #[error("{0:?} is not a CPU count (expected a positive number such as 1 or 0.5)")]
    BadCpus(String),
}

/// Parses a size in bytes. Suffixes are binary (K = 1024) with or without `i`/`B`,
/// so `1G`, `1GiB` and `1gb` all mean 1073741824.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::BadSize(text.to_string());
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(bad());
    }
    let suffix = suffix.trim().to_ascii_lowercase();
    let suffix = suffix.strip_suffix('b').unwrap_or(&suffix);
    let suffix = suffix.strip_suffix('i').unwrap_or(suffix);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Parses a CPU count such as `2`, `0.5` or `1.25`.
pub fn parse_cpus(text: &str) -> Result<f64, UnitError> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| UnitError::BadCpus(text.to_string()))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(UnitError::BadCpus(text.to_string()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_common_spellings() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 2T "), Ok(2 << 40));
    }

    #[test]
    fn sizes_reject_garbage_and_overflow() {
        for bad in [
            "",
            "G",
            "1X",
            "-1G",
            "1..2M",
            "abc",
            "99999999999999999999T",
            "1 G B",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cpus_must_be_positive_numbers() {
        assert_eq!(parse_cpus("2"), Ok(2.0));
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        for bad in ["0", "-1", "nan", "inf", "two", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
