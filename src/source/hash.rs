//! Signed feature hashing: FNV-1a (64-bit) of the feature key, finished with MurmurHash3's
//! `fmix64` avalanche (plain FNV-1a's high bits are biased on short keys); bucket = hash mod D,
//! sign from bit 63 so that colliding features cancel in expectation (Weinberger et al. 2009).
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
    fn signs_balance() {
        let pos = (0..10_000).filter(|i| bucket(b"ns", format!("f{i}").as_bytes(), 64).1 > 0.0).count();
        assert!((4_500..5_500).contains(&pos), "{pos}");
    }
}
