//! A tiny deterministic generator for the data split and the per-epoch shuffle.
//! Keeping these out of libtorch's global generator means the order of samples
//! depends only on (seed, epoch), so a resumed run sees the same batches as one
//! that never stopped.

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough to
/// shuffle indices.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Derives an independent seed for one purpose of one epoch from the run seed.
pub fn derive_seed(run_seed: u64, stream: u64, epoch: u32) -> u64 {
    let mut g =
        SplitMix64::new(run_seed ^ stream.rotate_left(17) ^ u64::from(epoch).rotate_left(41));
    g.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        SplitMix64::new(7).shuffle(&mut a);
        SplitMix64::new(7).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let mut c: Vec<u32> = (0..100).collect();
        SplitMix64::new(8).shuffle(&mut c);
        assert_ne!(a, c);
    }
}
