//! Properties of the Merkle tree for every size up to a few hundred: every proof that is
//! generated verifies, and any single-bit change to a proof, a root or a leaf makes
//! verification fail.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use gatehouse_ledger::merkle::{
    CompactRange, Hash, consistency_proof, inclusion_proof, leaf_hash, root_from_leaves,
    verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

fn leaves(n: usize, salt: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&[(i as u32).to_be_bytes().as_slice(), &[salt]].concat()))
        .collect()
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out[bit / 8 % 32] ^= 1 << (bit % 8);
    out
}

/// Exhaustive over small trees: all indexes, all old sizes.
#[test]
fn every_proof_of_every_small_tree_verifies() {
    let all = leaves(64, 1);
    let mut range = CompactRange::new();
    for n in 1..=all.len() {
        range.push(all[n - 1]);
        let tree = &all[..n];
        let root = root_from_leaves(tree);
        assert_eq!(range.root(), root);
        for index in 0..n {
            let path = inclusion_proof(tree, index as u64).unwrap();
            verify_inclusion(&tree[index], index as u64, n as u64, &path, &root).unwrap();
            // The same path never proves a neighbouring index or a different size.
            for other in [index.wrapping_sub(1), index + 1] {
                if other < n {
                    assert!(
                        verify_inclusion(&tree[index], other as u64, n as u64, &path, &root)
                            .is_err()
                    );
                }
            }
        }
        for old in 0..=n {
            let proof = consistency_proof(tree, old as u64).unwrap();
            let old_root = root_from_leaves(&tree[..old]);
            verify_consistency(old as u64, n as u64, &old_root, &root, &proof).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_fails_on_any_single_bit_change(
        size in 1usize..=300, index_seed in any::<usize>(), bit in 0usize..256,
        salt in any::<u8>(), target in 0usize..3, element_seed in any::<usize>(),
    ) {
        let tree = leaves(size, salt);
        let index = index_seed % size;
        let root = root_from_leaves(&tree);
        let mut path = inclusion_proof(&tree, index as u64).unwrap();
        prop_assert!(verify_inclusion(&tree[index], index as u64, size as u64, &path, &root).is_ok());
        let (mut leaf, mut root2) = (tree[index], root);
        match target {
            0 if !path.is_empty() => {
                let k = element_seed % path.len();
                path[k] = flip(&path[k], bit);
            }
            1 => root2 = flip(&root, bit),
            _ => leaf = flip(&leaf, bit),
        }
        prop_assert!(verify_inclusion(&leaf, index as u64, size as u64, &path, &root2).is_err());
    }

    #[test]
    fn consistency_fails_on_any_single_bit_change(
        new in 2usize..=300, old_seed in any::<usize>(), bit in 0usize..256,
        salt in any::<u8>(), target in 0usize..3, element_seed in any::<usize>(),
    ) {
        let tree = leaves(new, salt);
        let old = 1 + old_seed % (new - 1);
        let (old_root, new_root) = (root_from_leaves(&tree[..old]), root_from_leaves(&tree));
        let mut proof = consistency_proof(&tree, old as u64).unwrap();
        prop_assert!(verify_consistency(old as u64, new as u64, &old_root, &new_root, &proof).is_ok());
        let (mut r1, mut r2) = (old_root, new_root);
        match target {
            0 => {
                let k = element_seed % proof.len();
                proof[k] = flip(&proof[k], bit);
            }
            1 => r1 = flip(&r1, bit),
            _ => r2 = flip(&r2, bit),
        }
        prop_assert!(verify_consistency(old as u64, new as u64, &r1, &r2, &proof).is_err());
    }

    #[test]
    fn changing_any_entry_changes_the_root(size in 1usize..=300, which in any::<usize>(), salt in any::<u8>()) {
        let mut tree = leaves(size, salt);
        let before = root_from_leaves(&tree);
        let k = which % size;
        tree[k] = leaf_hash(b"changed");
        prop_assert_ne!(before, root_from_leaves(&tree));
    }

    #[test]
    fn dropping_or_adding_a_proof_element_fails(size in 2usize..=300, index_seed in any::<usize>(), extra in any::<[u8; 32]>()) {
        let tree = leaves(size, 7);
        let index = index_seed % size;
        let root = root_from_leaves(&tree);
        let path = inclusion_proof(&tree, index as u64).unwrap();
        let mut longer = path.clone();
        longer.push(extra);
        prop_assert!(verify_inclusion(&tree[index], index as u64, size as u64, &longer, &root).is_err());
        if !path.is_empty() {
            let shorter = &path[..path.len() - 1];
            prop_assert!(verify_inclusion(&tree[index], index as u64, size as u64, shorter, &root).is_err());
        }
    }
}
