//! The codec never panics on arbitrary bytes: every input is a frame, "need more", or an error.

use gatehouse_wire_pg::{backend, frontend, split_frame, split_startup};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = split_startup(&bytes);
        if let Ok(Some(len)) = split_frame(&bytes) {
            let _ = frontend::parse(&bytes[..len]);
            let _ = backend::parse(&bytes[..len]);
        }
    }

    #[test]
    fn well_framed_garbage_never_panics(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut frame = Vec::new();
        frontend::frame(tag, &body, &mut frame);
        prop_assert_eq!(split_frame(&frame), Ok(Some(frame.len())));
        let _ = frontend::parse(&frame);
        let _ = backend::parse(&frame);
        let _ = backend::error_fields(&body);
    }
}
