//! Go `time.Duration` text format: parsing (`"1h30m"`, `"500ms"`, `"-1s"`) and printing
//! (`"1h30m0s"`), so configs written for Centrifugo read the same here and `defaultconfig`
//! prints what Centrifugo would. Pure functions; must not know about config keys.

use std::time::Duration;

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MINUTE: u128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MINUTE;

/// Go durations are an `int64` of nanoseconds; anything beyond is an overflow there too.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration string into signed nanoseconds.
///
/// Follows `time.ParseDuration`, plus the rule of Go's config loader (spf13/cast) that a
/// string without any unit letter is a count of nanoseconds (`"-1"` is -1ns, `"0"` is 0).
pub fn parse_nanos(text: &str) -> Result<i128, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && !trimmed.contains(['n', 's', 'u', 'µ', 'μ', 'm', 'h']) {
        return parse_go(&format!("{trimmed}ns"), text);
    }
    parse_go(trimmed, text)
}

fn parse_go(s: &str, original: &str) -> Result<i128, String> {
    let bad = || format!("invalid duration {original:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SECOND,
            "m" => NANOS_PER_MINUTE,
            "h" => NANOS_PER_HOUR,
            "" => return Err(format!("invalid duration {original:?}: missing unit")),
            other => return Err(format!("invalid duration {original:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| format!("invalid duration {original:?}: overflow"))?
        };
        let mut value = whole.checked_mul(unit).ok_or_else(|| overflow(original))?;
        // Fractions keep at most the digits that can still matter at nanosecond precision.
        let mut scale = 1u128;
        let mut frac = 0u128;
        for digit in frac_part.bytes().take(18) {
            frac = frac * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        value += frac * unit / scale;
        total = total.checked_add(value).ok_or_else(|| overflow(original))?;
        if total > MAX_NANOS {
            return Err(overflow(original));
        }
    }
    let signed = i128::try_from(total).map_err(|_| overflow(original))?;
    Ok(if negative { -signed } else { signed })
}

fn overflow(original: &str) -> String {
    format!("invalid duration {original:?}: overflow")
}

/// Formats like Go's `Duration.String()`: `"0s"`, `"500ms"`, `"1.5s"`, `"720h0m0s"`.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos().min(MAX_NANOS);
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < NANOS_PER_SECOND {
        let (unit, per) = if nanos < NANOS_PER_MICRO {
            ("ns", 1)
        } else if nanos < NANOS_PER_MILLI {
            ("µs", NANOS_PER_MICRO)
        } else {
            ("ms", NANOS_PER_MILLI)
        };
        return format!("{}{}{unit}", nanos / per, fraction(nanos % per, per));
    }
    let seconds = nanos / NANOS_PER_SECOND;
    let frac = fraction(nanos % NANOS_PER_SECOND, NANOS_PER_SECOND);
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{secs}{frac}s")
    } else if minutes > 0 {
        format!("{minutes}m{secs}{frac}s")
    } else {
        format!("{secs}{frac}s")
    }
}

/// `.5`-style fraction of `rest / per` with trailing zeros removed; empty when zero.
fn fraction(rest: u128, per: u128) -> String {
    if rest == 0 {
        return String::new();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_duration_strings() {
        assert_eq!(parse_nanos("500ms"), Ok(500_000_000));
        assert_eq!(parse_nanos("25s"), Ok(25_000_000_000));
        assert_eq!(parse_nanos("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_nanos("720h"), Ok(720 * 3_600_000_000_000));
        assert_eq!(parse_nanos("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_nanos(".5s"), Ok(500_000_000));
        assert_eq!(parse_nanos("10us"), Ok(10_000));
        assert_eq!(parse_nanos("10µs"), Ok(10_000));
        assert_eq!(parse_nanos("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_nanos("0"), Ok(0));
    }

    #[test]
    fn unitless_strings_are_nanoseconds() {
        assert_eq!(parse_nanos("-1"), Ok(-1));
        assert_eq!(parse_nanos("1500"), Ok(1500));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "s", "1x", "1.s.", "abc", "1h-", "99999999999h"] {
            assert!(parse_nanos(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_millis(1000)), "1s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_secs(25)), "25s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(720 * 3600)), "720h0m0s");
        assert_eq!(format(Duration::from_secs(604_800)), "168h0m0s");
        assert_eq!(format(Duration::from_micros(15)), "15µs");
        assert_eq!(format(Duration::from_nanos(7)), "7ns");
    }

    proptest::proptest! {
        #[test]
        fn any_duration_survives_format_and_parse(nanos in 0u64..=i64::MAX as u64) {
            let d = Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(parse_nanos(&format(d)), Ok(i128::from(nanos)));
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        for nanos in [1u64, 999, 1_000_001, 1_500_000_000, 3_723_000_000_000] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse_nanos(&format(d)), Ok(i128::from(nanos)));
        }
    }
}
