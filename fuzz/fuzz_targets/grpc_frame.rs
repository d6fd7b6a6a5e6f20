//! The gateway's gRPC frame decoder (balancer/src/grpc/frame.rs): arbitrary
//! bytes in arbitrary chunks; every message it yields is within the limit.
#![no_main]

use gateway_fuzz::grpc_frame::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[max, chunk], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(max) * 16;
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(max);
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => assert!(message.len() <= max),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
