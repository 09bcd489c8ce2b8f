//! Each generator against a verbatim copy of the test code it replaces, so
//! that switching a test to this crate cannot change its numbers.

use dgms_test_support::rng::{chacha, Lcg64, SplitMix64};
use rand::{Rng, SeedableRng};

const SEEDS: [u64; 5] = [0, 1, 5, 42, u64::MAX];
const N: usize = 1000;

/// The SplitMix64 of dgms-qsimd's `tests/engine_util` and `tests/kernels_util`.
struct CopiedSplitMix(u64);

impl CopiedSplitMix {
    fn new(seed: u64) -> Self {
        CopiedSplitMix(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[test]
fn splitmix_matches_the_qsimd_copies() {
    for seed in SEEDS {
        let (mut ours, mut theirs) = (SplitMix64::new(seed), CopiedSplitMix::new(seed));
        for i in 0..N {
            match i % 4 {
                0 => assert_eq!(ours.next_u64(), theirs.next_u64()),
                1 => assert_eq!(ours.below(17), theirs.below(17)),
                2 => assert_eq!(ours.unit().to_bits(), theirs.unit().to_bits()),
                _ => assert_eq!(
                    ours.uniform(-0.5, 2.0).to_bits(),
                    theirs.uniform(-0.5, 2.0).to_bits()
                ),
            }
        }
        let mut copy = CopiedSplitMix::new(seed);
        let units: Vec<f32> = (0..N).map(|_| copy.unit()).collect();
        assert_eq!(SplitMix64::new(seed).unit_vec(N), units);
        let mut copy = CopiedSplitMix::new(seed);
        let uniforms: Vec<f32> = (0..N).map(|_| copy.uniform(-1.0, 1.0)).collect();
        assert_eq!(SplitMix64::new(seed).uniform_vec(N, -1.0, 1.0), uniforms);
    }
}

/// dgms-models `tests/conv_op.rs` `data` (and, with `>> 33 % k`,
/// dgms-qsimd `tests/format_support` `indices`).
fn copied_conv_op_data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn copied_format_indices(n: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % k as u64) as u8
        })
        .collect()
}

/// dgms-models `tests/batch_norm_op.rs` `data`.
fn copied_batch_norm_data(len: usize, seed: u64, offset: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) ^ 0x9E3779B97F4A7C15;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + offset
        })
        .collect()
}

/// dgms-qsimd `benches/kernels.rs` `lcg` (the raw state is the seed).
fn copied_bench_lcg(seed: u64, n: usize) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        })
        .collect()
}

#[test]
fn lcg_matches_every_starting_rule_of_the_copies() {
    for seed in SEEDS {
        assert_eq!(
            Lcg64::seeded(seed).unit_vec(N),
            copied_conv_op_data(N, seed)
        );
        let mut g = Lcg64::seeded(seed);
        let ours: Vec<u8> = (0..N).map(|_| g.below(16) as u8).collect();
        assert_eq!(ours, copied_format_indices(N, 16, seed));
        let mut g = Lcg64::scrambled(seed);
        let ours: Vec<f32> = (0..N).map(|_| g.unit() + 0.25).collect();
        assert_eq!(ours, copied_batch_norm_data(N, seed, 0.25));
        let mut g = Lcg64::from_state(seed);
        let ours: Vec<u64> = (0..N).map(|_| g.next_u31()).collect();
        assert_eq!(ours, copied_bench_lcg(seed, N));
    }
    // dgms-cli `tests/qsimd_engine.rs`: the raw state 5, then unit values.
    let mut seed = 5u64;
    let copied: Vec<f32> = (0..N)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    assert_eq!(Lcg64::from_state(5).unit_vec(N), copied);
}

#[test]
fn chacha_is_rands_seeded_chacha8() {
    for seed in SEEDS {
        let (mut ours, mut theirs) = (chacha(seed), rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        for _ in 0..N {
            assert_eq!(ours.random::<u64>(), theirs.random::<u64>());
        }
    }
}

#[test]
fn ranges_hold() {
    let mut g = SplitMix64::new(3);
    for _ in 0..10_000 {
        assert!((-1.0..1.0).contains(&g.unit()));
        assert!((2.0..3.0).contains(&g.uniform(2.0, 3.0)));
        assert!(g.below(7) < 7);
    }
    let mut g = Lcg64::seeded(3);
    for _ in 0..10_000 {
        assert!((-1.0..1.0).contains(&g.unit()));
        assert!(g.below(5) < 5);
        assert!(g.next_u31() < 1 << 31);
    }
}
