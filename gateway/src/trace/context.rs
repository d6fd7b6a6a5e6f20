//! W3C trace context (`traceparent`), read from a client and written to a
//! backend: <https://www.w3.org/TR/trace-context/>.

use http::{HeaderName, HeaderValue};

/// The `traceparent` header.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A valid `traceparent`: the trace, the caller's span, whether sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// Reads a `traceparent`; `None` when it is not valid (then a new trace
/// starts). Version `00` must be exactly 55 characters; a later version
/// may be longer, with a `-` after the flags.
pub(crate) fn parse(v: &HeaderValue) -> Option<Parent> {
    let s = v.as_bytes();
    if s.len() < 55 || s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
        return None;
    }
    let version = hex::<u8>(&s[0..2])?;
    match version {
        0xff => return None,
        0 if s.len() != 55 => return None,
        _ if s.len() > 55 && s[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex::<u128>(&s[3..35])?;
    let span_id = hex::<u64>(&s[36..52])?;
    let flags = hex::<u8>(&s[53..55])?;
    (trace_id != 0 && span_id != 0).then_some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` naming span `span_id` of trace `trace_id`. Marked
/// sensitive: HPACK then sends it as a never-indexed literal, so a value
/// that is new on every request does not churn the connection's dynamic
/// table (evicting the headers that repeat).
pub(crate) fn format(trace_id: u128, span_id: u64, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for i in 0..32 {
        b[3 + i] = HEX[((trace_id >> (124 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        b[36 + i] = HEX[((span_id >> (60 - 4 * i)) & 0xf) as usize];
    }
    b[54] = if sampled { b'1' } else { b'0' };
    let mut v = HeaderValue::from_bytes(&b).unwrap_or(HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// Lowercase hexadecimal digits only (W3C forbids uppercase).
fn hex<T: TryFrom<u128>>(s: &[u8]) -> Option<T> {
    let mut n: u128 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(d);
    }
    T::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<Parent> {
        parse(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn reads_valid_and_refuses_invalid_traceparents() {
        let ok = p("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ok.span_id, 0x00f067aa0ba902b7);
        assert!(ok.sampled);
        assert!(
            !p("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
        // A later version may carry more after the flags.
        assert!(p("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn writes_what_it_reads() {
        let v = format(0xabc, 0x12, true);
        assert_eq!(v, "00-00000000000000000000000000000abc-0000000000000012-01");
        assert_eq!(
            parse(&v),
            Some(Parent {
                trace_id: 0xabc,
                span_id: 0x12,
                sampled: true
            })
        );
    }
}
