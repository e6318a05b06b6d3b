//! Masking throughput: result rows masked value by value as the gateway does (rows with
//! and without sensitive values), 1 MiB of ordinary result text as one value (nothing to
//! mask, the common case), 1 MiB with a sensitive value about every 200 bytes, and rows
//! as one JSON document masked as JSON and as text. `cargo bench -p gatehouse-mask`.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use divan::counter::BytesCount;
use gatehouse_mask::{Detectors, Masker};

fn main() {
    divan::main();
}

/// Text like result rows: ids, timestamps, names, prices, UUIDs.
fn ordinary(target: usize) -> String {
    let mut text = String::with_capacity(target + 200);
    let mut i = 0u64;
    while text.len() < target {
        text.push_str(&format!(
            "{i}\t2026-11-23 13:{:02}:{:02}.{:06}+00\tcustomer {i} of region {}\t{}.{:02} EUR\t3f2504e0-4f89-11d3-9a0c-{:012x}\n",
            i % 60,
            (i * 7) % 60,
            i * 13 % 1_000_000,
            i % 17,
            i % 10_000,
            i % 100,
            i
        ));
        i += 1;
    }
    text
}

/// The same with an e-mail address, a card number or an SSN in every row.
fn with_pii(target: usize) -> String {
    let pii = ["ada@example.com", "4111 1111 1111 1111", "123-45-6789"];
    ordinary(target)
        .lines()
        .enumerate()
        .map(|(n, line)| format!("{line}\t{}\n", pii[n % pii.len()]))
        .collect()
}

fn masker() -> Masker {
    Masker::new(Detectors::builtin(), b"bench-key").expect("a key")
}

#[divan::bench]
fn clean_1mib(bencher: divan::Bencher) {
    let text = ordinary(1 << 20);
    let m = masker();
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| m.mask_text(divan::black_box(&text)).counts.len());
}

#[divan::bench]
fn pii_every_row_1mib(bencher: divan::Bencher) {
    let text = with_pii(1 << 20);
    let m = masker();
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| m.mask_text(divan::black_box(&text)).counts.len());
}

/// One short value, as a DataRow column would be masked.
#[divan::bench]
fn one_short_value(bencher: divan::Bencher) {
    let m = masker();
    bencher.bench(|| {
        m.mask_text(divan::black_box("customer 42 of region 7"))
            .counts
            .len()
    });
}

/// Rows of a customers table in text format, as DataRow values: id, name, e-mail, phone,
/// SSN, card, notes, a timestamp, a UUID and a price. Every second row holds the sensitive
/// values; the others hold ordinary ones in the same columns.
fn rows(n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| {
            let pii = i % 2 == 0;
            vec![
                i.to_string(),
                format!("customer {i}"),
                if pii {
                    format!("user{i}@example.com")
                } else {
                    format!("user {i}")
                },
                if pii {
                    format!("(415) 555-{:04}", i % 10_000)
                } else {
                    "n/a".into()
                },
                if pii {
                    format!("{:03}-45-6789", 100 + i % 800)
                } else {
                    String::new()
                },
                if pii {
                    "4111 1111 1111 1111".into()
                } else {
                    "expired".into()
                },
                format!("order ORD-{i} shipped to region {}", i % 17),
                format!(
                    "2026-11-23 13:{:02}:{:02}.{:06}+00",
                    i % 60,
                    (i * 7) % 60,
                    i * 13 % 1_000_000
                ),
                format!("3f2504e0-4f89-11d3-9a0c-{i:012x}"),
                format!("{}.{:02}", i % 10_000, i % 100),
            ]
        })
        .collect()
}

/// 1,000 rows, half of them with sensitive values, each value masked on its own.
#[divan::bench]
fn rows_value_by_value(bencher: divan::Bencher) {
    let rows = rows(1_000);
    let bytes: usize = rows.iter().flatten().map(String::len).sum();
    let m = masker();
    bencher.counter(BytesCount::new(bytes)).bench(|| {
        let mut masked = 0;
        for row in &rows {
            for value in row {
                masked += m.mask_text(divan::black_box(value)).counts.len();
            }
        }
        masked
    });
}

/// One row with nothing to mask: the cost every ordinary row pays.
#[divan::bench]
fn one_clean_row(bencher: divan::Bencher) {
    let row = rows(2).swap_remove(1);
    let m = masker();
    bencher.bench(|| {
        row.iter()
            .map(|v| m.mask_text(divan::black_box(v)).counts.len())
            .sum::<usize>()
    });
}

/// One row with an e-mail address, a phone number, an SSN and a card number.
#[divan::bench]
fn one_row_with_pii(bencher: divan::Bencher) {
    let row = rows(1).swap_remove(0);
    let m = masker();
    bencher.bench(|| {
        row.iter()
            .map(|v| m.mask_text(divan::black_box(v)).counts.len())
            .sum::<usize>()
    });
}

/// The 1,000 rows as one JSON document (an array of arrays of strings, about 190 KB): masked
/// as JSON, each string decoded and masked on its own, against the same text masked as
/// text.
#[divan::bench(args = ["json", "text"])]
fn rows_as_json(bencher: divan::Bencher, how: &str) {
    let doc = serde_json::to_string(&rows(1_000)).expect("rows serialise");
    let m = masker();
    bencher
        .counter(BytesCount::of_str(&doc))
        .bench(|| match how {
            "json" => m
                .mask_json(divan::black_box(&doc))
                .expect("the document is JSON")
                .counts
                .len(),
            _ => m.mask_text(divan::black_box(&doc)).counts.len(),
        });
}
