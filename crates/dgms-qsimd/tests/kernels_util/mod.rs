//! Shared helpers of the kernel tests: a seeded generator, random
//! matrices and epilogues, the ISAs to test, and the tolerance check.
#![allow(dead_code)]

use dgms_qsimd::kernels::{Activation, Epilogue, Isa, QMatrix};
use dgms_test_support::rng::SplitMix64;

/// Codebook sizes the property tests draw from (4-bit and 8-bit layouts,
/// 2- and 3-bit tables, and the boundaries 16/17 and 256).
pub const KS: [usize; 9] = [2, 3, 4, 5, 8, 16, 17, 200, 256];

/// The SIMD ISAs this CPU runs (Scalar is the oracle); prints a note for
/// each one skipped.
pub fn simd_isas() -> Vec<Isa> {
    let mut out = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        if isa.is_available() {
            out.push(isa);
        } else {
            eprintln!("note: skipping {isa}: not available on this CPU");
        }
    }
    out
}

/// A K-entry codebook with entry 0 = 0.0 (as DGMS has it) and distinct
/// other values.
pub fn codebook(rng: &mut SplitMix64, k: usize) -> Vec<f32> {
    (0..k)
        .map(|i| if i == 0 { 0.0 } else { rng.unit() * 2.0 })
        .collect()
}

/// A random rows x cols matrix over a K-entry codebook, with the indices.
pub fn qmatrix(
    rng: &mut SplitMix64,
    rows: usize,
    cols: usize,
    k: usize,
) -> (QMatrix, Vec<u8>, Vec<f32>) {
    let cb = codebook(rng, k);
    let idx: Vec<u8> = (0..rows * cols).map(|_| rng.below(k) as u8).collect();
    let w = QMatrix::new(rows, cols, &idx, &cb).expect("valid matrix");
    (w, idx, cb)
}

/// Owned epilogue parts; `mask` bits pick scale, shift, residual, relu.
pub struct EpiParts {
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
    pub residual: Option<Vec<f32>>,
    pub activation: Activation,
}

impl EpiParts {
    pub fn new(rng: &mut SplitMix64, mask: u8, rows: usize, n: usize) -> EpiParts {
        EpiParts {
            scale: (mask & 1 != 0).then(|| rng.unit_vec(rows)),
            shift: (mask & 2 != 0).then(|| rng.unit_vec(rows)),
            residual: (mask & 4 != 0).then(|| rng.unit_vec(rows * n)),
            activation: if mask & 8 != 0 {
                Activation::Relu
            } else {
                Activation::None
            },
        }
    }

    pub fn epilogue(&self) -> Epilogue<'_> {
        Epilogue {
            scale: self.scale.as_deref(),
            shift: self.shift.as_deref(),
            residual: self.residual.as_deref(),
            activation: self.activation,
        }
    }

    /// Magnitude bound of output (r, j) given the bound `acc` of its sum.
    pub fn magnitude(&self, r: usize, j: usize, n: usize, acc: f32) -> f32 {
        let s = self.scale.as_ref().map_or(1.0, |s| s[r].abs());
        let b = self.shift.as_ref().map_or(0.0, |b| b[r].abs());
        let e = self.residual.as_ref().map_or(0.0, |e| e[r * n + j].abs());
        acc * s + b + e
    }
}

/// `got` matches `want` within 1e-4 relative to `mag`, the sum of the
/// absolute values of the terms (a plain relative check would fail on
/// cancellation, where both sums are tiny and the order decides).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], mag: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = 1e-4 * m.max(w.abs()) + 1e-6;
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w} (|diff| {} > tol {tol})",
            (g - w).abs()
        );
    }
}
