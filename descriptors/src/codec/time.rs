//! `google.protobuf.Timestamp` and `Duration` as JSON strings, printed and
//! parsed with plain integer arithmetic: the same text as prost-types'
//! `Display` and `FromStr` (RFC 3339 in UTC; seconds with 0, 3, 6 or 9
//! fractional digits), which go through `core::fmt` at about 2,000
//! instructions a timestamp. Anything outside the common form (offsets,
//! years outside 1..=9999) is left to prost-types by the callers.

use prost_types::{Duration, Timestamp};

/// Seconds from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, the range
/// the JSON mapping allows.
pub(super) const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> =
    -62_135_596_800..=253_402_300_799;
/// Days from 0000-03-01 to 1970-01-01 (the civil-date algorithms' epoch).
const EPOCH_SHIFT_DAYS: i64 = 719_468;
const DAYS_PER_ERA: i64 = 146_097;

/// Writes `t` quoted, as prost-types prints it. `None` (nothing written)
/// when the normalized time is outside years 1..=9999.
pub(super) fn write_timestamp(out: &mut Vec<u8>, t: &Timestamp) -> Option<()> {
    let mut t = *t;
    t.normalize();
    if !TIMESTAMP_SECONDS.contains(&t.seconds) {
        return None;
    }
    let days = t.seconds.div_euclid(86_400);
    let secs = t.seconds.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut buf = [0u8; 32];
    buf[0] = b'"';
    put_digits(&mut buf[1..5], year);
    buf[5] = b'-';
    put_digits(&mut buf[6..8], month);
    buf[8] = b'-';
    put_digits(&mut buf[9..11], day);
    buf[11] = b'T';
    put_digits(&mut buf[12..14], secs / 3600);
    buf[14] = b':';
    put_digits(&mut buf[15..17], secs / 60 % 60);
    buf[17] = b':';
    put_digits(&mut buf[18..20], secs % 60);
    let mut len = 20 + put_fraction(&mut buf[20..30], t.nanos as u32);
    buf[len] = b'Z';
    buf[len + 1] = b'"';
    len += 2;
    out.extend_from_slice(&buf[..len]);
    Some(())
}

/// Writes `d` quoted, as prost-types prints it (the sign from the fields as
/// they are, the digits from the normalized duration). The caller has
/// checked the JSON mapping's range (|nanos| < 10^9).
pub(super) fn write_duration(out: &mut Vec<u8>, d: &Duration) {
    let negative = d.seconds < 0 || d.nanos < 0;
    let mut n = *d;
    n.normalize();
    out.push(b'"');
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(n.seconds.unsigned_abs())
            .as_bytes(),
    );
    let mut frac = [0u8; 10];
    let len = put_fraction(&mut frac, n.nanos.unsigned_abs());
    out.extend_from_slice(&frac[..len]);
    out.extend_from_slice(b"s\"");
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` with a valid date and time (year
/// 1 or later, seconds below 60). `None` for anything else, which the
/// caller hands to prost-types: every string accepted here it accepts too,
/// with the same value.
pub(super) fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            digits(frac)? * 10u32.pow(9 - frac.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

/// The value of ASCII decimal digits (at most 9 of them); `None` if any
/// byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// `00` to `99`, two bytes each.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Writes `n` as `dst.len()` decimal digits, zero-padded (n fits), two at
/// a time from the right.
fn put_digits(dst: &mut [u8], mut n: u32) {
    for d in dst.rchunks_mut(2) {
        match d {
            [hi, lo] => {
                let i = (n % 100) as usize * 2;
                *hi = PAIRS[i];
                *lo = PAIRS[i + 1];
                n /= 100;
            }
            [one] => *one = b'0' + (n % 10) as u8,
            _ => {}
        }
    }
}

/// `.mmm`, `.uuuuuu`, `.nnnnnnnnn` or nothing, as protobuf prints
/// fractional seconds; returns the bytes written (at most 10).
fn put_fraction(dst: &mut [u8], nanos: u32) -> usize {
    let (value, width) = match nanos {
        0 => return 0,
        n if n.is_multiple_of(1_000_000) => (n / 1_000_000, 3),
        n if n.is_multiple_of(1_000) => (n / 1_000, 6),
        n => (n, 9),
    };
    dst[0] = b'.';
    put_digits(&mut dst[1..=width], value);
    width + 1
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT_DAYS
}

/// The date `(year, month, day)` of a day since 1970-01-01 (H. Hinnant's
/// `civil_from_days`); the year is within 1..=9999 for the timestamp range.
pub fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + EPOCH_SHIFT_DAYS;
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z - era * DAYS_PER_ERA;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn displayed(value: &impl std::fmt::Display) -> String {
        format!("\"{value}\"")
    }

    /// A deterministic spread of values (xorshift), edges included.
    fn samples() -> impl Iterator<Item = (i64, i32)> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let edges = [
            (*TIMESTAMP_SECONDS.start(), 0),
            (*TIMESTAMP_SECONDS.end(), 999_999_999),
            (0, 0),
            (-1, 999_999_999),
            (951_782_400, 1_000_000), // 2000-02-29
            (4_107_542_400, 1_000),   // 2100-03-01
        ];
        let random = std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (TIMESTAMP_SECONDS.end() - TIMESTAMP_SECONDS.start()) as u64;
            let seconds = TIMESTAMP_SECONDS.start() + (x % span) as i64;
            let nanos = match x % 4 {
                0 => 0,
                1 => (x >> 20) % 1000 * 1_000_000,
                2 => (x >> 20) % 1_000_000 * 1_000,
                _ => (x >> 20) % 1_000_000_000,
            } as i32;
            Some((seconds, nanos))
        });
        edges.into_iter().chain(random.take(20_000))
    }

    #[test]
    fn timestamps_print_and_parse_as_prost_types_does() {
        for (seconds, nanos) in samples() {
            let t = Timestamp { seconds, nanos };
            let mut out = Vec::new();
            write_timestamp(&mut out, &t).expect("in range");
            let text = String::from_utf8(out).expect("ASCII");
            assert_eq!(text, displayed(&t), "{t:?}");
            let inner = &text[1..text.len() - 1];
            assert_eq!(parse_timestamp(inner), Some(t), "{inner}");
            assert_eq!(inner.parse::<Timestamp>().ok(), Some(t), "{inner}");
        }
    }

    #[test]
    fn denormalized_and_out_of_range_timestamps() {
        // Nanos past a second move into the seconds, as prost-types does.
        for t in [
            Timestamp {
                seconds: 10,
                nanos: -1,
            },
            Timestamp {
                seconds: 10,
                nanos: 2_500_000_000u32 as i32,
            },
            Timestamp {
                seconds: 10,
                nanos: -1_500_000_000,
            },
        ] {
            let mut out = Vec::new();
            write_timestamp(&mut out, &t).expect("in range");
            assert_eq!(String::from_utf8(out).expect("ASCII"), displayed(&t));
        }
        let past_the_end = Timestamp {
            seconds: *TIMESTAMP_SECONDS.end(),
            nanos: 1_000_000_000,
        };
        let mut out = Vec::new();
        assert_eq!(write_timestamp(&mut out, &past_the_end), None);
        assert!(out.is_empty());
    }

    #[test]
    fn only_the_plain_utc_form_is_parsed_here() {
        for s in [
            "2001-02-03T04:05:06+01:00",
            "2001-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2001-13-01T00:00:00Z",
            "2001-02-03T24:00:00Z",
            "2001-02-03T04:05:60Z",
            "2001-02-03t04:05:06Z",
            "2001-02-03T04:05:06.Z",
            "2001-02-03T04:05:06.1234567890Z",
            "0000-01-01T00:00:00Z",
            "2001-02-03T04:05:06",
            "2001-02-03T04:05:0xZ",
            "+2001-02-03T04:05:06Z",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
        assert_eq!(
            parse_timestamp("2000-02-29T23:59:59.5Z"),
            "2000-02-29T23:59:59.5Z".parse().ok()
        );
    }

    #[test]
    fn durations_print_as_prost_types_does() {
        for (seconds, nanos) in samples() {
            let seconds = seconds % 315_576_000_000;
            for d in [
                Duration { seconds, nanos },
                Duration {
                    seconds: -seconds,
                    nanos: -nanos,
                },
                Duration {
                    seconds: 0,
                    nanos: -nanos,
                },
                Duration {
                    seconds,
                    nanos: -nanos,
                },
            ] {
                let mut out = Vec::new();
                write_duration(&mut out, &d);
                assert_eq!(
                    String::from_utf8(out).expect("ASCII"),
                    displayed(&d),
                    "{d:?}"
                );
            }
        }
    }
}
