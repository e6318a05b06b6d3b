//! Fuzz target: the readers of values the masking rewrites never panic, whatever the bytes —
//! text and binary arrays and records, the text of binary scalars, COPY rows in text, CSV
//! and binary, message fields and notifications as bytes — and a text array or record
//! rewritten with every element replaced reads back with the replacements.
#![no_main]

use gatehouse_wire_pg::types::{self, Leaf};
use gatehouse_wire_pg::{backend, copy};
use libfuzzer_sys::fuzz_target;

/// Types whose binary text is read: integers, oid, numeric, inet, cidr, macaddr(8), bit.
const SCALARS: [u32; 11] = [20, 21, 23, 26, 1700, 869, 650, 829, 774, 1560, 1562];

fuzz_target!(|data: &[u8]| {
    for oid in SCALARS {
        let _ = types::binary_text(oid, data);
    }
    let mut out = Vec::new();
    let _ = types::rewrite_binary_array(data, &mut |_, _| Leaf::Null, &mut out);
    out.clear();
    let _ = types::rewrite_binary_record(data, &mut |_, b| Leaf::Replace(b.to_vec()), &mut out);
    let _ = copy::binary_chunk(data);
    let _ = backend::message_fields_raw(data);
    let _ = backend::notification_raw(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = copy::text_fields(text, b'\t');
    let _ = copy::csv_fields(text, b',', b'"', b'"');
    for delimiter in [b',', b';'] {
        let mut out = Vec::new();
        if let Ok(true) = types::rewrite_text_array(
            text,
            delimiter,
            &mut |_| Leaf::Replace(b"x".to_vec()),
            &mut out,
        ) {
            // What was written is an array again, every element the replacement.
            let written = std::str::from_utf8(&out).expect("a rewritten array is text");
            let mut again = Vec::new();
            let reread = types::rewrite_text_array(
                written,
                delimiter,
                &mut |e| {
                    assert_eq!(e, "x");
                    Leaf::Keep
                },
                &mut again,
            );
            assert!(reread.is_ok(), "{written:?} does not read back");
        }
    }
    let mut out = Vec::new();
    let _ = types::rewrite_text_record(text, &mut |_| Leaf::Null, &mut out);
});
