//! The RFC 6962 / RFC 9162 Merkle tree over SHA-256: hashing, an O(log n) incremental
//! tree, inclusion and consistency proofs, and their verification.
//!
//! Leaves are hashed as SHA-256(0x00 ‖ entry) and interior nodes as
//! SHA-256(0x01 ‖ left ‖ right), so a leaf can never be passed off as a node.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Why a proof or tree state was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old} is larger than new size {new}")]
    SizeOrder { old: u64, new: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("a subtree does not start on a multiple of its width")]
    Misaligned,
    #[error("a compact range of size {size} needs {expected} hashes, not {got}")]
    BadRange {
        size: u64,
        expected: usize,
        got: usize,
    },
}

/// SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The roots of the perfect subtrees that make up a tree of `size` leaves, largest first:
/// all that is needed to append more leaves and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a range from its size and subtree roots (as returned by [`Self::hashes`]).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, ProofError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(ProofError::BadRange {
                size,
                expected,
                got: hashes.len(),
            });
        }
        Ok(CompactRange { size, hashes })
    }

    /// Appends one leaf hash, merging equal-sized subtrees as a binary counter carries.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        while (self.size >> level) & 1 == 1 {
            let left = self.hashes.pop().expect("one hash per set bit");
            hash = node_hash(&left, &hash);
            level += 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// Appends a perfect subtree of `2^height` leaves given by its root. The range must end
    /// on a multiple of the subtree's width (the subtree is aligned), as the subtrees of
    /// [`aligned_subtrees`] are; otherwise the result would not be a tree this log makes.
    pub fn push_subtree(&mut self, root: Hash, height: u32) -> Result<(), ProofError> {
        let width = 1u64.checked_shl(height).ok_or(ProofError::Misaligned)?;
        if !self.size.is_multiple_of(width) {
            return Err(ProofError::Misaligned);
        }
        let mut hash = root;
        let mut level = height;
        while (self.size >> level) & 1 == 1 {
            let left = self.hashes.pop().expect("one hash per set bit");
            hash = node_hash(&left, &hash);
            level += 1;
        }
        self.hashes.push(hash);
        self.size += width;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Subtree roots, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The Merkle tree hash of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The aligned perfect subtrees that cover leaves `begin..end`, left to right, as
/// `(first leaf, height)`: each starts on a multiple of its width and is as wide as that
/// allows. With the compact range of `0..begin`, their roots are what it takes to prove a
/// run of leaves `begin..end'` against the root of a tree of size `end`.
pub fn aligned_subtrees(begin: u64, end: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut at = begin;
    while at < end {
        let mut height = if at == 0 { 63 } else { at.trailing_zeros() };
        while height > 0 && (1u64 << height) > end - at {
            height -= 1;
        }
        out.push((at, height));
        at += 1u64 << height;
    }
    out
}

/// MTH(D[n]) of RFC 6962 §2.1.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    subtree_root(leaves)
}

/// The root of a non-empty run of leaves (RFC 6962's recursive split at the largest power
/// of two below n).
pub fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// PATH(m, D[n]) of RFC 6962 §2.1.1: the audit path of leaf `index`, leaf to root.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::new();
    build_path(leaves, index as usize, &mut path);
    Ok(path)
}

fn build_path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        build_path(&leaves[..k], m, out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        build_path(&leaves[k..], m - k, out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// PROOF(m, D[n]) of RFC 6962 §2.1.2: proves the tree of `old_size` leaves is a prefix of
/// the tree of all `leaves`. Empty when `old_size` is 0 or equals the new size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new = leaves.len() as u64;
    if old_size > new {
        return Err(ProofError::SizeOrder { old: old_size, new });
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < new {
        subproof(leaves, old_size as usize, true, &mut out);
    }
    Ok(out)
}

fn subproof(leaves: &[Hash], m: usize, whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(subtree_root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(&leaves[..k], m, whole, out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        subproof(&leaves[k..], m - k, false, out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// Verifies an audit path (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
///
/// Sizes equal: the proof must be empty and the roots equal. Old size 0: the empty tree
/// is a prefix of every tree, so only an empty proof is accepted.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // When the old tree is a perfect subtree, its root is the proof's implicit first hash.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn compact_range_matches_the_recursive_root_and_round_trips() {
        let all = leaves(70);
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            range.push(*leaf);
            assert_eq!(range.root(), root_from_leaves(&all[..=i]), "size {}", i + 1);
            let back = CompactRange::from_parts(range.size(), range.hashes().to_vec()).unwrap();
            assert_eq!(back, range);
        }
        assert!(CompactRange::from_parts(3, vec![[0; 32]]).is_err());
    }

    #[test]
    fn a_run_of_leaves_with_its_left_range_and_right_subtrees_gives_the_root() {
        let all = leaves(37);
        for size in 0..=all.len() {
            let root = root_from_leaves(&all[..size]);
            for begin in 0..=size {
                for end in begin..=size {
                    let mut range = CompactRange::new();
                    all[..begin].iter().for_each(|l| range.push(*l));
                    all[begin..end].iter().for_each(|l| range.push(*l));
                    for (first, height) in aligned_subtrees(end as u64, size as u64) {
                        let width = 1usize << height;
                        let first = first as usize;
                        let sub = subtree_root(&all[first..first + width]);
                        range.push_subtree(sub, height).unwrap();
                    }
                    assert_eq!(range.size(), size as u64);
                    assert_eq!(range.root(), root, "size {size}, run {begin}..{end}");
                }
            }
        }
        let mut odd = CompactRange::new();
        odd.push(all[0]);
        assert_eq!(odd.push_subtree(all[1], 1), Err(ProofError::Misaligned));
    }

    #[test]
    fn small_proofs_round_trip() {
        let all = leaves(9);
        for size in 1..=all.len() {
            let root = root_from_leaves(&all[..size]);
            for index in 0..size {
                let path = inclusion_proof(&all[..size], index as u64).unwrap();
                verify_inclusion(&all[index], index as u64, size as u64, &path, &root).unwrap();
            }
            for old in 0..=size {
                let proof = consistency_proof(&all[..size], old as u64).unwrap();
                let old_root = root_from_leaves(&all[..old]);
                verify_consistency(old as u64, size as u64, &old_root, &root, &proof).unwrap();
            }
        }
    }
}
