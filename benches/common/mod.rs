//! What the benches share: reproducible data.

/// Values uniform in [−1, 1), the same sequence every run (xorshift64).
pub fn uniform() -> impl FnMut() -> f32 {
    let mut s = 0x1234_5678_9abc_def1u64;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}
