//! Masking throughput: 1 MiB of ordinary result text (nothing to mask, the common case),
//! and 1 MiB with a sensitive value about every 200 bytes. `cargo bench -p gatehouse-mask`.

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
