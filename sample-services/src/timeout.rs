//! The `grpc-timeout` request header, as the gRPC over HTTP/2 spec defines it:
//! `TimeoutValue TimeoutUnit`, at most 8 ASCII digits followed by one of
//! `H` (hours), `M` (minutes), `S` (seconds), `m` (ms), `u` (µs), `n` (ns).

use std::time::Duration;

/// Most digits the spec allows in a `grpc-timeout` value.
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Parses a `grpc-timeout` header value; `None` if it does not follow the spec.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = value.get(..value.len() - unit.len_utf8())?;
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 60 * 60),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_the_rest() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            ("123456789m", None),
            ("m", None),
            ("", None),
            ("10", None),
            ("10x", None),
            ("-1S", None),
            ("1 S", None),
            ("1é", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_grpc_timeout(value), want, "{value:?}");
        }
    }
}
