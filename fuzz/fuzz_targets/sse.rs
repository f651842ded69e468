//! The remote engine's SSE reader over any response body: the same events, `[DONE]`, count of
//! malformed lines and end state however the bytes arrive from the socket.
//! Input: one flag byte (bit 0: a reasoning model; the rest seed the read sizes), then the body.
#![no_main]

mod common;

use aha::engine::remote::decode_sse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let reasoning = flags & 1 == 1;
    let whole = decode_sse([body], reasoning);
    let split = decode_sse(common::split_bytes(body, flags, 17), reasoning);
    assert_eq!(split.events, whole.events);
    assert_eq!(split.done, whole.done);
    assert_eq!(split.malformed, whole.malformed);
    assert_eq!(split.error, whole.error);
});
