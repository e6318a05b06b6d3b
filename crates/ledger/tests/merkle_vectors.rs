//! Known answers: the RFC 6962 test vectors published with transparency-dev/merkle
//! (`proof/verify_test.go`, the same data as certificate-transparency-go), used as data,
//! and a differential check against the independent `ct-merkle` crate.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use gatehouse_ledger::merkle::{
    CompactRange, Hash, ProofError, consistency_proof, empty_root, inclusion_proof, leaf_hash,
    node_hash, root_from_leaves, verify_consistency, verify_inclusion,
};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots of the trees made of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, audit path); the source numbers leaves from 1, these from 0.
const INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, consistency proof).
const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(text: &str) -> Hash {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn leaves() -> Vec<Hash> {
    LEAVES
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).unwrap()))
        .collect()
}

fn root(size: u64) -> Hash {
    h(ROOTS[size as usize - 1])
}

#[test]
fn roots_match_the_published_tree_heads() {
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let leaves = leaves();
    let mut range = CompactRange::new();
    for n in 1..=8 {
        range.push(leaves[n - 1]);
        assert_eq!(
            hex::encode(root_from_leaves(&leaves[..n])),
            ROOTS[n - 1],
            "size {n}"
        );
        assert_eq!(
            hex::encode(range.root()),
            ROOTS[n - 1],
            "compact range, size {n}"
        );
    }
    // The first two roots pin the domain separation: leaf = H(0x00‖d), node = H(0x01‖l‖r).
    assert_eq!(node_hash(&leaves[0], &leaves[1]), root(2));
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let leaves = leaves();
    for (index, size, path) in INCLUSION {
        let expected: Vec<Hash> = path.iter().map(|p| h(p)).collect();
        let ours = inclusion_proof(&leaves[..size as usize], index).unwrap();
        assert_eq!(ours, expected, "PATH({index}, {size})");
        verify_inclusion(&leaves[index as usize], index, size, &expected, &root(size)).unwrap();
    }
}

#[test]
fn consistency_proofs_match_and_verify() {
    let leaves = leaves();
    for (old, new, path) in CONSISTENCY {
        let expected: Vec<Hash> = path.iter().map(|p| h(p)).collect();
        let ours = consistency_proof(&leaves[..new as usize], old).unwrap();
        assert_eq!(ours, expected, "PROOF({old}, {new})");
        verify_consistency(old, new, &root(old), &root(new), &expected).unwrap();
    }
}

/// The corruptions the reference suite applies to each known-good inclusion proof.
#[test]
fn corrupted_inclusion_proofs_are_rejected() {
    let leaves = leaves();
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, path) in INCLUSION {
        let proof: Vec<Hash> = path.iter().map(|p| h(p)).collect();
        let (leaf, good) = (leaves[index as usize], root(size));
        let mut probes: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (
                "index - 1".into(),
                index.wrapping_sub(1),
                size,
                leaf,
                good,
                proof.clone(),
            ),
            (
                "index + 1".into(),
                index + 1,
                size,
                leaf,
                good,
                proof.clone(),
            ),
            (
                "index ^ 2".into(),
                index ^ 2,
                size,
                leaf,
                good,
                proof.clone(),
            ),
            (
                "size * 2".into(),
                index,
                size * 2,
                leaf,
                good,
                proof.clone(),
            ),
            (
                "size / 2".into(),
                index,
                size / 2,
                leaf,
                good,
                proof.clone(),
            ),
            (
                "wrong leaf".into(),
                index,
                size,
                leaf_hash(b"WrongLeaf"),
                good,
                proof.clone(),
            ),
            (
                "empty root".into(),
                index,
                size,
                leaf,
                empty_root(),
                proof.clone(),
            ),
            ("random root".into(), index, size, leaf, some, proof.clone()),
            (
                "trailing root".into(),
                index,
                size,
                leaf,
                good,
                [proof.clone(), vec![good]].concat(),
            ),
            (
                "preceding root".into(),
                index,
                size,
                leaf,
                good,
                [vec![good], proof.clone()].concat(),
            ),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 8;
            probes.push((format!("proof[{i}] bit 3"), index, size, leaf, good, wrong));
        }
        probes.push((
            "removed".into(),
            index,
            size,
            leaf,
            good,
            proof[..proof.len() - 1].to_vec(),
        ));
        if proof.len() > 1 {
            let inserted = [vec![proof[0], some], proof[1..].to_vec()].concat();
            probes.push(("inserted".into(), index, size, leaf, good, inserted));
        }
        for (what, i, n, leaf, root, proof) in probes {
            assert!(
                verify_inclusion(&leaf, i, n, &proof, &root).is_err(),
                "PATH({index}, {size}) accepted with {what}"
            );
        }
    }
}

/// The corruptions the reference suite applies to each known-good consistency proof.
#[test]
fn corrupted_consistency_proofs_are_rejected() {
    for (old, new, path) in CONSISTENCY {
        let proof: Vec<Hash> = path.iter().map(|p| h(p)).collect();
        let (r1, r2) = (root(old), root(new));
        let wrong_root = leaf_hash(b"WrongRoot");
        let mut probes: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            ("old - 1".into(), old - 1, new, r1, r2, proof.clone()),
            ("old + 1".into(), old + 1, new, r1, r2, proof.clone()),
            ("old ^ 2".into(), old ^ 2, new, r1, r2, proof.clone()),
            ("new * 2".into(), old, new * 2, r1, r2, proof.clone()),
            ("new / 2".into(), old, new / 2, r1, r2, proof.clone()),
            (
                "wrong old root".into(),
                old,
                new,
                wrong_root,
                r2,
                proof.clone(),
            ),
            (
                "wrong new root".into(),
                old,
                new,
                r1,
                wrong_root,
                proof.clone(),
            ),
            ("swapped roots".into(), old, new, r2, r1, proof.clone()),
            ("empty proof".into(), old, new, r1, r2, Vec::new()),
            (
                "trailing old root".into(),
                old,
                new,
                r1,
                r2,
                [proof.clone(), vec![r1]].concat(),
            ),
            (
                "trailing new root".into(),
                old,
                new,
                r1,
                r2,
                [proof.clone(), vec![r2]].concat(),
            ),
            (
                "preceding old root".into(),
                old,
                new,
                r1,
                r2,
                [vec![r1], proof.clone()].concat(),
            ),
            (
                "preceding new root".into(),
                old,
                new,
                r1,
                r2,
                [vec![r2], proof.clone()].concat(),
            ),
            (
                "preceding proof[0]".into(),
                old,
                new,
                r1,
                r2,
                [vec![proof[0]], proof.clone()].concat(),
            ),
            (
                "truncated".into(),
                old,
                new,
                r1,
                r2,
                proof[..proof.len() - 1].to_vec(),
            ),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 16;
            probes.push((format!("proof[{i}] bit 4"), old, new, r1, r2, wrong));
        }
        for (what, o, n, a, b, proof) in probes {
            assert!(
                verify_consistency(o, n, &a, &b, &proof).is_err(),
                "PROOF({old}, {new}) accepted with {what}"
            );
        }
    }
}

#[test]
fn edge_cases_of_the_reference_suite() {
    let (r1, r2) = (leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2"));
    // Always consistent: 0→0 with equal roots, 0→n, n→n with equal roots.
    assert!(verify_consistency(0, 0, &r1, &r1, &[]).is_ok());
    assert!(verify_consistency(0, 1, &r1, &r2, &[]).is_ok());
    assert!(verify_consistency(1, 1, &r2, &r2, &[]).is_ok());
    // Different roots for one size, time travel, empty proofs, non-empty trivial proofs.
    assert_eq!(
        verify_consistency(1, 1, &r1, &r2, &[]),
        Err(ProofError::RootMismatch)
    );
    assert!(verify_consistency(1, 0, &r1, &r2, &[]).is_err());
    assert!(verify_consistency(2, 1, &r1, &r2, &[]).is_err());
    assert!(verify_consistency(1, 2, &r1, &r2, &[]).is_err());
    assert!(verify_consistency(0, 1, &empty_root(), &empty_root(), &[empty_root()]).is_err());
    assert!(verify_consistency(1, 1, &empty_root(), &empty_root(), &[empty_root()]).is_err());
    // Inclusion in an empty or too-small tree.
    for (index, size) in [(0, 0), (1, 0), (2, 1)] {
        assert!(verify_inclusion(&r1, index, size, &[], &empty_root()).is_err());
        assert!(inclusion_proof(&vec![r1; size as usize], index).is_err());
    }
    // A one-leaf tree: the root is the leaf hash and the path is empty.
    let leaf = leaf_hash(b"data");
    assert!(verify_inclusion(&leaf, 0, 1, &[], &leaf).is_ok());
    assert!(verify_inclusion(&leaf, 0, 1, &[], &empty_root()).is_err());
}

type CtTree = MemoryBackedTree<sha2_next::Sha256, Vec<u8>>;

/// Differential test: for trees of 0..=300 pseudo-random entries, `ct-merkle` (an
/// independent implementation) and ours agree on every root, on the bytes of sampled
/// inclusion and consistency proofs, and each accepts the other's proofs.
#[test]
fn agrees_with_ct_merkle() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut entry = |i: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 40) as usize;
        (0..len)
            .map(|k| (state >> (k % 8 * 8)) as u8 ^ i as u8)
            .collect::<Vec<u8>>()
    };
    let mut ct = CtTree::new();
    let mut ours: Vec<Hash> = Vec::new();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    assert_eq!(ct.root().as_bytes().as_slice(), &root_from_leaves(&ours));
    for n in 1..=300usize {
        let e = entry(n);
        ct.push(e.clone());
        ours.push(leaf_hash(&e));
        entries.push(e);
        let root = root_from_leaves(&ours);
        assert_eq!(ct.root().as_bytes().as_slice(), &root, "root of size {n}");

        for index in [0, n / 3, n / 2, n - 1] {
            let theirs = ct.prove_inclusion(index);
            let mine = inclusion_proof(&ours, index as u64).unwrap();
            assert_eq!(theirs.as_bytes(), mine.concat(), "PATH({index}, {n})");
            ct.root()
                .verify_inclusion(&entries[index], index as u64, &theirs)
                .unwrap();
            verify_inclusion(&ours[index], index as u64, n as u64, &mine, &root).unwrap();
        }
        for old in [1, n / 2, n - 1] {
            if old == 0 || old >= n {
                continue;
            }
            let theirs = ct.prove_consistency(n - old);
            let mine = consistency_proof(&ours, old as u64).unwrap();
            assert_eq!(theirs.as_bytes(), mine.concat(), "PROOF({old}, {n})");
            let old_root = root_from_leaves(&ours[..old]);
            let old_ct = ct_merkle::RootHash::<sha2_next::Sha256>::new(old_root.into(), old as u64);
            ct.root().verify_consistency(&old_ct, &theirs).unwrap();
            verify_consistency(old as u64, n as u64, &old_root, &root, &mine).unwrap();
        }
    }
}
