//! Deterministic secret-shaped strings for tests, here and in other crates (behind the
//! `test-util` feature, so they never ship).

/// A deterministic pseudo-random string of `n` bytes from `alphabet`.
pub fn rnd(seed: u64, n: usize, alphabet: &[u8]) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}
