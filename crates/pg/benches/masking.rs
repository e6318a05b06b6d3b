//! What masking costs per DataRow on the PostgreSQL data path: the rows of
//! `bench/masking.sh` (id, name, e-mail, phone, SSN, card, notes, timestamp) in text
//! format, rewritten by the default policy, with and without something to mask.
//! Also a row of binary bigints. `cargo bench -p gatehouse-pg --bench masking`.
//! A row takes well under a microsecond, so each sample times 2,000 of them: one per
//! sample measures the timer more than the row.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use gatehouse_config::MaskingConfig;
use gatehouse_pg::catalog::Catalog;
use gatehouse_pg::masking::{ColumnMask, ColumnPlan, MaskCounts, MaskPolicy, ResultPlan, Rewriter};
use gatehouse_wire_pg::rows;

fn main() {
    divan::main();
}

fn frame(values: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    rows::write_data_row(values.iter().map(|v| Some(v.as_bytes())), &mut out);
    out
}

fn plan(policy: &MaskPolicy, catalog: &Catalog) -> ResultPlan {
    // int4, then six text columns, then timestamptz.
    let oids = [23, 25, 25, 25, 25, 25, 25, 1184];
    ResultPlan {
        columns: oids
            .iter()
            .map(|&type_oid| ColumnPlan::new(policy, catalog, ColumnMask::Content, type_oid, 0))
            .collect(),
    }
}

fn bench_row(bencher: divan::Bencher, values: &[&str]) {
    let policy = MaskPolicy::from_config(&MaskingConfig::default(), b"bench-key").unwrap();
    let catalog = Catalog::new();
    let rewriter = Rewriter {
        policy: &policy,
        catalog: &catalog,
        encoding: Default::default(),
    };
    let plan = plan(&policy, &catalog);
    let frame = frame(values);
    // One buffer for every row, as a session keeps.
    let mut out = Vec::new();
    bencher.bench_local(|| {
        let mut counts = MaskCounts::default();
        out.clear();
        rewriter.data_row_into(divan::black_box(&frame), Some(&plan), &mut counts, &mut out)
    });
}

/// A row as `bench/masking.sh` selects it: e-mail, phone and card are masked.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn row_with_pii(bencher: divan::Bencher) {
    bench_row(
        bencher,
        &[
            "7",
            "customer 7",
            "user7@example.com",
            "(415) 555-0007",
            "100000007",
            "4111111111111111",
            "order ORD-7 shipped",
            "2026-11-23 17:49:01.123456+00",
        ],
    );
}

/// The same columns with nothing to mask.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn clean_row(bencher: divan::Bencher) {
    bench_row(
        bencher,
        &[
            "7",
            "customer 7",
            "user 7",
            "n/a",
            "",
            "expired",
            "order ORD-7 shipped",
            "2026-11-23 17:49:01.123456+00",
        ],
    );
}

/// Eight bigints in binary format (ids, counters): each one's digits are looked at for a
/// card number kept as a number.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn binary_bigint_row(bencher: divan::Bencher) {
    let policy = MaskPolicy::from_config(&MaskingConfig::default(), b"bench-key").unwrap();
    let catalog = Catalog::new();
    let rewriter = Rewriter {
        policy: &policy,
        catalog: &catalog,
        encoding: Default::default(),
    };
    let plan = ResultPlan {
        columns: (0..8)
            .map(|_| ColumnPlan::new(&policy, &catalog, ColumnMask::Content, 20, 1))
            .collect(),
    };
    let values: Vec<[u8; 8]> = (0..8i64)
        .map(|i| (1_000_000 + i * 7919).to_be_bytes())
        .collect();
    let mut frame = Vec::new();
    rows::write_data_row(values.iter().map(|v| Some(&v[..])), &mut frame);
    let mut out = Vec::new();
    bencher.bench_local(|| {
        let mut counts = MaskCounts::default();
        out.clear();
        rewriter.data_row_into(divan::black_box(&frame), Some(&plan), &mut counts, &mut out)
    });
}
