//! Fuzz target: the PostgreSQL wire codec never panics, whatever the bytes, and every frame
//! it reports complete lies within the input.
#![no_main]

use gatehouse_wire_pg::{backend, frontend, split_frame, split_startup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, len))) = split_startup(data) {
        assert!(len <= data.len());
    }
    let mut rest = data;
    while let Ok(Some(len)) = split_frame(rest) {
        assert!(len <= rest.len());
        let frame = &rest[..len];
        let _ = frontend::parse(frame);
        let _ = backend::parse(frame);
        if frame.len() >= 5 {
            let _ = backend::parameter_status(&frame[5..]);
        }
        rest = &rest[len..];
    }
});
