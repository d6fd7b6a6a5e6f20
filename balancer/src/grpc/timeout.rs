//! The `grpc-timeout` header (gRPC over HTTP/2 spec): at most 8 ASCII
//! digits and a unit, H M S m u n.

use std::time::Duration;

use http::HeaderValue;

/// Parses a `grpc-timeout` value; None when malformed.
pub fn parse(v: &HeaderValue) -> Option<Duration> {
    let s = v.as_bytes();
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes a duration as a `grpc-timeout` value, in the finest unit that
/// fits in 8 digits (rounding up, so a deadline never gets longer... or
/// shorter than one unit).
pub fn encode(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= MAX {
            return HeaderValue::from_str(&format!("{n}{unit}"))
                .unwrap_or(HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (s, d) in [
            ("1S", Duration::from_secs(1)),
            ("250m", Duration::from_millis(250)),
            ("2H", Duration::from_secs(7200)),
            ("10u", Duration::from_micros(10)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            assert_eq!(parse(&HeaderValue::from_static(s)), Some(d), "{s}");
            assert_eq!(parse(&encode(d)), Some(d), "{s}");
        }
        for bad in ["", "S", "1", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }
}
