//! Duplicate detection over a sliding window of the last N rows of the stream, in bounded
//! memory: a ring of N 64-bit fingerprints and a hash map counting each fingerprint in the ring.
//!
//! A row's fingerprint is xxh3-64 of its bytes (every feature and the label, bitwise), so rows
//! that differ in any bit — including NaN payloads — have different inputs. What a collision
//! costs: a row that is *not* a duplicate is dropped when its fingerprint equals that of one of
//! the N rows before it; for independent 64-bit hashes that is N / 2^64 per row — about
//! 5·10⁻¹⁴ for N = 10^6, or one wrongly dropped row per 2·10^13 rows. Duplicates are never
//! missed. No `unsafe` here.

use nohash_hasher::BuildNoHashHasher;
use std::collections::HashMap;
use std::collections::VecDeque;

/// The window's state.
#[derive(Debug, Clone)]
pub struct Dedup {
    window: usize,
    ring: VecDeque<u64>,
    /// Fingerprints are already uniform 64-bit hashes: the map uses them as they are.
    counts: HashMap<u64, u32, BuildNoHashHasher<u64>>,
    /// Rows dropped as duplicates.
    pub dropped: u64,
}

/// The fingerprint of a row: xxh3-64 over the feature bits then the label bits (little-endian
/// u32 each). `scratch` is reused between calls.
pub fn fingerprint(features: impl Iterator<Item = f32>, label: f32, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    for x in features {
        scratch.extend_from_slice(&x.to_bits().to_le_bytes());
    }
    scratch.extend_from_slice(&label.to_bits().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(scratch)
}

impl Dedup {
    /// A window over the last `window` rows (≥ 1).
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        Dedup {
            window,
            ring: VecDeque::with_capacity(window),
            counts: HashMap::with_capacity_and_hasher(window, BuildNoHashHasher::default()),
            dropped: 0,
        }
    }

    /// True when `fp` equals a fingerprint among the last `window` rows kept or seen; the row is
    /// then counted as dropped. Every row enters the window either way.
    pub fn is_duplicate(&mut self, fp: u64) -> bool {
        let dup = self.counts.contains_key(&fp);
        if self.ring.len() == self.window {
            let old = self.ring.pop_front().expect("full ring");
            if let Some(c) = self.counts.get_mut(&old) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&old);
                }
            }
        }
        self.ring.push_back(fp);
        *self.counts.entry(fp).or_insert(0) += 1;
        if dup {
            self.dropped += 1;
        }
        dup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_semantics() {
        let mut d = Dedup::new(2);
        assert!(!d.is_duplicate(1));
        assert!(!d.is_duplicate(2));
        assert!(d.is_duplicate(1)); // within the last 2
        assert!(!d.is_duplicate(3));
        assert!(!d.is_duplicate(2)); // 2 left the window (last two: 1, 3)
        assert_eq!(d.dropped, 1);
        let mut b = Vec::new();
        assert_ne!(fingerprint([1.0f32, 2.0].into_iter(), 0.0, &mut b), fingerprint([1.0f32, 2.0].into_iter(), 1.0, &mut b));
        assert_ne!(fingerprint([0.0f32].into_iter(), 0.0, &mut b), fingerprint([-0.0f32].into_iter(), 0.0, &mut b));
    }

    proptest! {
        #[test]
        fn drops_exactly_the_duplicates_within_the_window(xs in proptest::collection::vec(0u64..20, 0..300), w in 1usize..12) {
            let mut d = Dedup::new(w);
            for (i, &x) in xs.iter().enumerate() {
                let want = xs[i.saturating_sub(w)..i].contains(&x);
                prop_assert_eq!(d.is_duplicate(x), want, "row {}", i);
            }
        }
    }
}
