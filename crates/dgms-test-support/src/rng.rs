//! Seeded generators for tests.
//!
//! Tests must reproduce: a failing case has to fail again with the same
//! numbers. The crates whose tests use these generators keep `rand` out of
//! their own dependencies, so their tests grew small hand-written
//! generators; these are those generators, written once. Every method
//! reproduces the sequence of the copy it replaces exactly (the tests of
//! this crate pin the first values), so expected values in the tests stay
//! valid.

use rand::SeedableRng;
pub use rand_chacha::ChaCha8Rng;

/// The golden-ratio increment of SplitMix64, also used to scramble seeds.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Multiplier of Knuth's MMIX linear congruential generator.
pub const MMIX_MULTIPLIER: u64 = 6_364_136_223_846_793_005;

/// Increment of Knuth's MMIX linear congruential generator.
pub const MMIX_INCREMENT: u64 = 1_442_695_040_888_963_407;

/// The `rand` generator of the `dgms-core` and `dgms-data` tests:
/// `ChaCha8Rng::seed_from_u64(seed)`, portable and stable across platforms.
pub fn chacha(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// SplitMix64 (Steele, Lea and Flood): 64 bits of state, good statistical
/// quality, no dependencies. The state starts at `seed ^ GOLDEN_GAMMA`.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ GOLDEN_GAMMA)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (modulo reduction: the bias is negligible for the
    /// small `n` tests use). Panics if `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[-1, 1)` on a grid of 2^-23, from the top 24 bits.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in `[lo, hi)`, from the top 24 bits.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// `n` values of [`Self::unit`].
    pub fn unit_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }

    /// `n` values of [`Self::uniform`].
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Knuth's MMIX linear congruential generator, `s <- s a + c (mod 2^64)`,
/// whose outputs are the high bits of the new state (its low bits are
/// weak). The tests that use it start from different states, so the
/// constructors name the starting rule.
#[derive(Clone, Debug)]
pub struct Lcg64(u64);

impl Lcg64 {
    /// Starts from the raw state `state`: the first output is one step on.
    pub fn from_state(state: u64) -> Self {
        Self(state)
    }

    /// Starts from `seed a + c`, one generator step from `seed` (so seed 0
    /// does not start from state 0).
    pub fn seeded(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(MMIX_MULTIPLIER)
                .wrapping_add(MMIX_INCREMENT),
        )
    }

    /// Starts from `(seed a) ^ GOLDEN_GAMMA`.
    pub fn scrambled(seed: u64) -> Self {
        Self(seed.wrapping_mul(MMIX_MULTIPLIER) ^ GOLDEN_GAMMA)
    }

    /// Advances the state and returns it (use the high bits).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(MMIX_MULTIPLIER)
            .wrapping_add(MMIX_INCREMENT);
        self.0
    }

    /// The top 31 bits of the next state.
    pub fn next_u31(&mut self) -> u64 {
        self.next_u64() >> 33
    }

    /// Uniform in `[0, k)` from [`Self::next_u31`]. Panics if `k == 0`.
    pub fn below(&mut self, k: usize) -> usize {
        (self.next_u31() % k as u64) as usize
    }

    /// Uniform in `[-1, 1)` on a grid of 2^-23, from the top 24 bits.
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values of [`Self::unit`].
    pub fn unit_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}
