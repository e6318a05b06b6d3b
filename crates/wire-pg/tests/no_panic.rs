//! The codec never panics on arbitrary bytes: every input is a frame, "need more", or an error.
//! And the binary value walkers reproduce what they do not change, byte for byte.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use gatehouse_wire_pg::types::{Leaf, rewrite_binary_array, rewrite_binary_record};
use gatehouse_wire_pg::{backend, frontend, rows, split_frame, split_startup};
use proptest::prelude::*;

/// Every body decoder, on the same bytes.
fn decode_everything(body: &[u8]) {
    let _ = backend::error_fields(body);
    let _ = backend::message_fields(body);
    let _ = backend::notification(body);
    let _ = backend::copy_response(body);
    let _ = backend::parameter_status(body);
    let _ = frontend::bind_result_formats(body);
    let _ = rows::row_description(body);
    if let Ok(row) = rows::data_row(body) {
        let _ = row.collect::<Result<Vec<_>, _>>();
    }
}

/// A binary value as a model: leaves are text (25) or int4 (23).
#[derive(Debug, Clone)]
enum Value {
    Null(u32),
    Text(Vec<u8>),
    Int(i32),
    /// Elements of one type (text 25 or record 2249), as 1-D or, when `square`, 2 × n/2.
    Array {
        element_oid: u32,
        square: bool,
        elements: Vec<Value>,
    },
    Record(Vec<Value>),
}

impl Value {
    fn oid(&self) -> u32 {
        match self {
            Value::Null(oid) => *oid,
            Value::Text(_) => 25,
            Value::Int(_) => 23,
            // A record's text[] fields and _record fields.
            Value::Array {
                element_oid: 25, ..
            } => 1009,
            Value::Array { .. } => 2287,
            Value::Record(_) => 2249,
        }
    }

    /// The binary format, as PostgreSQL's *_send functions write it.
    fn encode(&self) -> Option<Vec<u8>> {
        Some(match self {
            Value::Null(_) => return None,
            Value::Text(text) => text.clone(),
            Value::Int(n) => n.to_be_bytes().to_vec(),
            Value::Array {
                element_oid,
                square,
                elements,
            } => {
                let dims: &[usize] = match (elements.len(), square) {
                    (0, _) => &[],
                    (n, true) if n % 2 == 0 => &[2, n / 2],
                    (n, _) => &[n],
                };
                let mut out = (dims.len() as i32).to_be_bytes().to_vec();
                let has_nulls = elements.iter().any(|e| matches!(e, Value::Null(_)));
                out.extend((has_nulls as i32).to_be_bytes());
                out.extend(element_oid.to_be_bytes());
                for dim in dims {
                    out.extend((*dim as i32).to_be_bytes());
                    out.extend(1i32.to_be_bytes());
                }
                for element in elements {
                    put(&mut out, element.encode());
                }
                out
            }
            Value::Record(fields) => {
                let mut out = (fields.len() as i32).to_be_bytes().to_vec();
                for field in fields {
                    out.extend(field.oid().to_be_bytes());
                    put(&mut out, field.encode());
                }
                out
            }
        })
    }

    /// What `mask` below does to the value: text gets longer, int4 becomes NULL.
    fn masked(&self) -> Value {
        match self {
            Value::Text(text) => Value::Text(mask_text(text)),
            Value::Int(_) => Value::Null(23),
            Value::Array {
                element_oid,
                square,
                elements,
            } => Value::Array {
                element_oid: *element_oid,
                square: *square,
                elements: elements.iter().map(Value::masked).collect(),
            },
            Value::Record(fields) => Value::Record(fields.iter().map(Value::masked).collect()),
            null => null.clone(),
        }
    }

    fn leaves(&self) -> usize {
        match self {
            Value::Null(_) => 0,
            Value::Text(_) | Value::Int(_) => 1,
            Value::Array { elements: v, .. } | Value::Record(v) => {
                v.iter().map(Value::leaves).sum()
            }
        }
    }
}

fn put(out: &mut Vec<u8>, value: Option<Vec<u8>>) {
    match value {
        None => out.extend((-1i32).to_be_bytes()),
        Some(bytes) => {
            out.extend((bytes.len() as i32).to_be_bytes());
            out.extend(bytes);
        }
    }
}

fn mask_text(text: &[u8]) -> Vec<u8> {
    let mut masked = vec![b'*'; text.len()];
    masked.extend_from_slice(b"!");
    masked
}

fn mask(oid: u32, bytes: &[u8]) -> Leaf {
    match oid {
        25 => Leaf::Replace(mask_text(bytes)),
        23 => Leaf::Null,
        _ => Leaf::Keep,
    }
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null(25)),
        4 => proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::Text),
    ]
}

fn text_array() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(text(), 0..6), any::<bool>()).prop_map(|(elements, square)| {
        Value::Array {
            element_oid: 25,
            square,
            elements,
        }
    })
}

/// Records and arrays nested in each other, as PostgreSQL sends them.
fn container() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text(),
        any::<i32>().prop_map(Value::Int),
        Just(Value::Null(23)),
    ];
    let base = prop_oneof![
        text_array(),
        proptest::collection::vec(leaf.clone(), 0..4).prop_map(Value::Record),
    ];
    base.prop_recursive(4, 48, 4, move |inner| {
        let field = prop_oneof![leaf.clone(), inner.clone()];
        let record = proptest::collection::vec(field, 0..4).prop_map(Value::Record);
        let element = prop_oneof![1 => Just(Value::Null(2249)), 4 => record.clone()];
        let records = (proptest::collection::vec(element, 0..4), any::<bool>()).prop_map(
            |(elements, square)| Value::Array {
                element_oid: 2249,
                square,
                elements,
            },
        );
        prop_oneof![record, records, text_array()]
    })
}

fn rewrite(
    value: &[u8],
    is_array: bool,
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, gatehouse_wire_pg::DecodeError> {
    if is_array {
        rewrite_binary_array(value, leaf, out)
    } else {
        rewrite_binary_record(value, leaf, out)
    }
}

/// Counts the leaves a walk sees, changing nothing.
fn count_leaves(value: &[u8], is_array: bool) -> Result<usize, gatehouse_wire_pg::DecodeError> {
    let mut count = 0;
    let mut out = Vec::new();
    let changed = rewrite(
        value,
        is_array,
        &mut |_, _| {
            count += 1;
            Leaf::Keep
        },
        &mut out,
    )?;
    assert!(!changed && out.is_empty());
    Ok(count)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = split_startup(&bytes);
        if let Ok(Some(len)) = split_frame(&bytes) {
            let _ = frontend::parse(&bytes[..len]);
            let _ = backend::parse(&bytes[..len]);
        }
        decode_everything(&bytes);
    }

    #[test]
    fn well_framed_garbage_never_panics(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut frame = Vec::new();
        frontend::frame(tag, &body, &mut frame);
        prop_assert_eq!(split_frame(&frame), Ok(Some(frame.len())));
        let _ = frontend::parse(&frame);
        let _ = backend::parse(&frame);
        decode_everything(&body);
    }

    /// On arbitrary bytes the walkers fail cleanly, and whatever they accept they reproduce
    /// exactly when every leaf is "replaced" by itself, and rewrite into something that walks
    /// again with the same number of elements.
    #[test]
    fn walkers_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), is_array in any::<bool>()) {
        let mut out = Vec::new();
        match rewrite(&bytes, is_array, &mut |_, _| Leaf::Keep, &mut out) {
            Ok(changed) => prop_assert!(!changed && out.is_empty()),
            Err(_) => prop_assert!(out.is_empty()),
        }
        if let Ok(leaves) = count_leaves(&bytes, is_array) {
            let mut same = Vec::new();
            let changed = rewrite(&bytes, is_array, &mut |_, b| Leaf::Replace(b.to_vec()), &mut same).unwrap();
            prop_assert_eq!(changed, leaves > 0);
            if changed {
                prop_assert_eq!(&same, &bytes);
            }
            let mut masked = Vec::new();
            if rewrite(&bytes, is_array, &mut |_, b| Leaf::Replace(mask_text(b)), &mut masked).unwrap() {
                prop_assert_eq!(count_leaves(&masked, is_array), Ok(leaves));
            }
        }
    }

    #[test]
    fn walkers_rewrite_nested_values_exactly(value in container()) {
        let is_array = matches!(value, Value::Array { .. });
        let bytes = value.encode().unwrap();

        // Keeping everything writes nothing: the caller keeps the original.
        let mut out = b"x".to_vec();
        prop_assert_eq!(rewrite(&bytes, is_array, &mut |_, _| Leaf::Keep, &mut out), Ok(false));
        prop_assert_eq!(&out, b"x");
        prop_assert_eq!(count_leaves(&bytes, is_array), Ok(value.leaves()));

        // Replacing every leaf by itself reproduces the input.
        let mut same = b"x".to_vec();
        let changed = rewrite(&bytes, is_array, &mut |_, b| Leaf::Replace(b.to_vec()), &mut same).unwrap();
        prop_assert_eq!(changed, value.leaves() > 0);
        if changed {
            prop_assert_eq!(&same[1..], &bytes[..]);
        }

        // Masking gives exactly the encoding of the masked model.
        let mut masked = Vec::new();
        let changed = rewrite(&bytes, is_array, &mut mask, &mut masked).unwrap();
        prop_assert_eq!(changed, value.leaves() > 0);
        if changed {
            prop_assert_eq!(Some(masked.clone()), value.masked().encode());
            prop_assert_eq!(count_leaves(&masked, is_array), Ok(value.masked().leaves()));
        }
    }

    #[test]
    fn data_rows_round_trip(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)), 0..8)) {
        let mut frame = Vec::new();
        rows::write_data_row(values.iter().map(|v| v.as_deref()), &mut frame);
        prop_assert_eq!(split_frame(&frame), Ok(Some(frame.len())));
        let read: Vec<Option<Vec<u8>>> = rows::data_row(&frame[5..])
            .unwrap()
            .map(|v| v.unwrap().map(<[u8]>::to_vec))
            .collect();
        prop_assert_eq!(read, values);
    }
}
