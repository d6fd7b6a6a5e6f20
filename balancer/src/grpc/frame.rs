//! gRPC message framing (gRPC over HTTP/2 spec, "Length-Prefixed-Message"):
//! a compressed flag byte, a big-endian u32 length, then the message. The
//! length is checked against the limit before anything is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a frame stream was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The compressed flag is set; the gateway asks for no compression.
    #[error("compressed gRPC messages are not supported")]
    Compressed,
    /// A message is larger than allowed.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a gRPC frame")]
    Truncated,
}

/// Frames one message.
pub fn encode(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Counts the messages of a gRPC byte stream as it passes, reading only
/// the 5-byte headers (kept across chunks) and skipping the messages: no
/// buffering, whatever their size (for the metrics).
#[derive(Debug, Default)]
pub struct FrameCounter {
    head: [u8; 5],
    head_len: usize,
    /// Message bytes still to skip.
    left: u64,
}

impl FrameCounter {
    /// Reads the next chunk; returns how many message headers it ended
    /// (each header is one message, counted once its 5 bytes have passed).
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len == 5 {
                self.head_len = 0;
                messages += 1;
                self.left = u64::from(u32::from_be_bytes([
                    self.head[1],
                    self.head[2],
                    self.head[3],
                    self.head[4],
                ]));
            }
        }
        messages
    }
}

/// Splits a byte stream into messages.
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// A decoder refusing messages over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] & 1 != 0 {
            return Err(FrameError::Compressed);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Checks that no partial frame is left at the end of the stream.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_headers_across_chunks() {
        let mut wire = Vec::new();
        for m in [&b""[..], b"abc", &[7u8; 300]] {
            wire.extend_from_slice(&encode(m));
        }
        let mut c = FrameCounter::default();
        assert_eq!(
            wire.iter()
                .map(|b| c.feed(std::slice::from_ref(b)))
                .sum::<u64>(),
            3
        );
        let mut c = FrameCounter::default();
        assert_eq!(c.feed(&wire), 3);
        assert_eq!(c.feed(&wire[..7]), 1);
    }

    #[test]
    fn split_and_limits() {
        let mut d = FrameDecoder::new(10);
        let a = encode(b"hello");
        let b = encode(b"");
        d.push(&a[..3]);
        assert_eq!(d.next_message(), Ok(None));
        d.push(&a[3..]);
        d.push(&b);
        assert_eq!(d.next_message(), Ok(Some(Bytes::from_static(b"hello"))));
        assert_eq!(d.next_message(), Ok(Some(Bytes::new())));
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.finish().is_ok());
        d.push(&encode(b"0123456789a")[..5]);
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        let mut d = FrameDecoder::new(10);
        d.push(&[1, 0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(FrameError::Compressed));
        let mut d = FrameDecoder::new(10);
        d.push(&[0, 0]);
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }
}
