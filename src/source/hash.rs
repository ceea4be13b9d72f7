//! Feature hashing, the one definition used by every source, `convert` and `predict`.
//!
//! The hash of a key is FNV-1a (64-bit) finished with MurmurHash3's `fmix64` avalanche (plain
//! FNV-1a's high bits are biased on short keys).
//! - Dense columns ([`bucket`]): bucket = hash mod D, sign from bit 63, so that colliding
//!   features cancel in expectation (Weinberger et al. 2009).
//! - Sparse feature ids ([`feature_id`]): the low 32 bits of the hash of the namespace's hash
//!   (8 bytes, little-endian) followed by the name; the namespace's hash is that of the seed
//!   (8 bytes) followed by the namespace's name. A table of 2^b weights uses id mod 2^b, so
//!   files keep full 32-bit ids and any `--bits` up to 32 can learn from them.
//! - A cross of two features ([`cross`]): `a · 16777619 ^ b` (mod 2^32), in the spirit of
//!   Vowpal Wabbit's quadratic features; a cubic cross is `cross(cross(a, b), c)`.
//!
//! No `unsafe` here.

/// FNV-1a, 64-bit, over `parts` concatenated with a `^` between them.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'^');
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Column and sign (±1) of feature `name` in namespace `ns`, hashed into `d` columns.
pub fn bucket(ns: &[u8], name: &[u8], d: usize) -> (usize, f32) {
    let h = fmix64(if ns.is_empty() { fnv1a(&[name]) } else { fnv1a(&[ns, name]) });
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    ((h % d as u64) as usize, sign)
}

/// The hash of namespace `ns` under `seed`: the first half of every feature id in it.
pub fn namespace_hash(ns: &[u8], seed: u64) -> u64 {
    Seeded::new(seed).namespace_hash(ns)
}

/// FNV-1a's state after a seed's 8 bytes, where every [`namespace_hash`] under that seed starts
/// (a caller hashing many names under one seed hashes the seed once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeded(u64);

impl Seeded {
    /// The state of `seed`.
    pub fn new(seed: u64) -> Self {
        Seeded(fnv1a_from(FNV_BASIS, &seed.to_le_bytes()))
    }

    /// [`namespace_hash`]`(ns, seed)`.
    #[inline]
    pub fn namespace_hash(self, ns: &[u8]) -> u64 {
        fmix64(fnv1a_from(self.0, ns))
    }
}

/// FNV-1a's offset basis: the state before any byte.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a from state `h` over `bytes`.
#[inline]
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A namespace ready to hash its features' names: FNV-1a's state after the 8 bytes of its
/// [`namespace_hash`], which every id in it starts from (parsers keep one per namespace, so a
/// feature costs the hash of its name only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceKey(u64);

impl NamespaceKey {
    /// The key of the namespace whose [`namespace_hash`] is `ns`.
    pub fn new(ns: u64) -> Self {
        NamespaceKey(fnv1a_from(FNV_BASIS, &ns.to_le_bytes()))
    }

    /// The id of feature `name` in this namespace: [`feature_id`]`(ns, name)`.
    #[inline]
    pub fn feature_id(self, name: &[u8]) -> u32 {
        fmix64(fnv1a_from(self.0, name)) as u32
    }
}

/// The 32-bit id of feature `name` in the namespace whose [`namespace_hash`] is `ns`.
#[inline]
pub fn feature_id(ns: u64, name: &[u8]) -> u32 {
    NamespaceKey::new(ns).feature_id(name)
}

/// The id of the cross of features `a` and `b` (learned, never stored).
#[inline]
pub fn cross(a: u32, b: u32) -> u32 {
    a.wrapping_mul(16_777_619) ^ b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"a", b"b"]), fnv1a(&[b"a^b"]));
    }

    #[test]
    fn feature_ids_are_the_documented_hash() {
        let ns = namespace_hash(b"user", 0);
        assert_eq!(ns, fmix64(fnv1a(&[b"\0\0\0\0\0\0\0\0user"])));
        let mut key = ns.to_le_bytes().to_vec();
        key.extend_from_slice(b"id=42");
        assert_eq!(feature_id(ns, b"id=42"), fmix64(fnv1a(&[&key])) as u32);
        assert_ne!(feature_id(ns, b"id=42"), feature_id(namespace_hash(b"user", 1), b"id=42"));
        assert_eq!(NamespaceKey::new(ns).feature_id(b"id=42"), feature_id(ns, b"id=42"));
        assert_ne!(cross(1, 2), cross(2, 1));
    }

    #[test]
    fn signs_balance() {
        let pos = (0..10_000).filter(|i| bucket(b"ns", format!("f{i}").as_bytes(), 64).1 > 0.0).count();
        assert!((4_500..5_500).contains(&pos), "{pos}");
    }
}
