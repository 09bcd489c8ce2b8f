//! The report: sparsity, bits and compression, per layer and for the whole
//! model (`docs/METHOD.md#report`).
//!
//! - `bits` is the reference's b = floor(log2 K); `index_bits` is
//!   ceil(log2 K), what a packed index really takes (they differ only when K
//!   is not a power of two);
//! - `compression_ratio` is the reference formula 1 / ((1 - sparsity) b / 32);
//!   for a model whose layers have different K it generalises to
//!   32 N / sum_l (nonzero_l b_l), which equals the formula when b is uniform;
//! - `packed_bytes` is the dense size of the indices (`index_bits` per
//!   weight, every weight stored, zeros included) plus the f32 table, and
//!   `fp32_bytes` the same weights in f32: their ratio is the size gain a
//!   packed file really shows for these layers.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// floor(log2 K), the reference's bit count.
pub fn bits_floor(k: usize) -> u32 {
    usize::BITS - 1 - k.max(1).leading_zeros()
}

/// ceil(log2 K), the bits a packed index needs.
pub fn bits_ceil(k: usize) -> u32 {
    if k <= 1 {
        0
    } else {
        usize::BITS - (k - 1).leading_zeros()
    }
}

/// Figures of one mixture layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub k: usize,
    pub weights: usize,
    pub zeros: usize,
    pub sparsity: f64,
    pub bits: u32,
    pub index_bits: u32,
    pub compression_ratio: f64,
    pub fp32_bytes: u64,
    pub packed_bytes: u64,
    /// Weights whose densities all underflow in the reference's float32
    /// arithmetic (it sends them to 0), when known.
    #[serde(default)]
    pub reference_underflow: Option<usize>,
}

impl LayerReport {
    /// Figures for a layer of `weights` weights of which `zeros` are pruned.
    pub fn new(name: &str, shape: &[usize], k: usize, weights: usize, zeros: usize) -> Self {
        let bits = bits_floor(k);
        let index_bits = bits_ceil(k);
        let sparsity = if weights == 0 {
            0.0
        } else {
            zeros as f64 / weights as f64
        };
        Self {
            name: name.to_string(),
            shape: shape.to_vec(),
            k,
            weights,
            zeros,
            sparsity,
            bits,
            index_bits,
            compression_ratio: compression(weights, weights - zeros, bits),
            fp32_bytes: 4 * weights as u64,
            packed_bytes: packed_bytes(weights, index_bits, k),
            reference_underflow: None,
        }
    }
}

fn compression(weights: usize, nonzero: usize, bits: u32) -> f64 {
    32.0 * weights as f64 / (nonzero as f64 * bits as f64)
}

fn packed_bytes(weights: usize, index_bits: u32, k: usize) -> u64 {
    (weights as u64 * index_bits as u64).div_ceil(8) + 4 * k as u64
}

/// Figures of all mixture layers of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub layers: Vec<LayerReport>,
    pub weights: usize,
    pub zeros: usize,
    pub sparsity: f64,
    /// b if every layer has the same K, else `None`.
    pub bits: Option<u32>,
    pub compression_ratio: f64,
    pub fp32_bytes: u64,
    pub packed_bytes: u64,
    /// fp32_bytes / packed_bytes.
    pub packed_ratio: f64,
    /// Weights of all layers whose densities all underflow in the
    /// reference's float32 arithmetic, when known for every layer.
    #[serde(default)]
    pub reference_underflow: Option<usize>,
}

impl ModelReport {
    /// Totals over `layers`.
    pub fn from_layers(layers: Vec<LayerReport>) -> Self {
        let weights: usize = layers.iter().map(|l| l.weights).sum();
        let zeros: usize = layers.iter().map(|l| l.zeros).sum();
        let weighted_bits: f64 = layers
            .iter()
            .map(|l| (l.weights - l.zeros) as f64 * l.bits as f64)
            .sum();
        let bits = match layers.first() {
            Some(first) if layers.iter().all(|l| l.bits == first.bits) => Some(first.bits),
            _ => None,
        };
        let fp32_bytes = layers.iter().map(|l| l.fp32_bytes).sum();
        let packed_bytes: u64 = layers.iter().map(|l| l.packed_bytes).sum();
        let reference_underflow = layers.iter().map(|l| l.reference_underflow).sum();
        Self {
            reference_underflow,
            sparsity: if weights == 0 {
                0.0
            } else {
                zeros as f64 / weights as f64
            },
            compression_ratio: 32.0 * weights as f64 / weighted_bits,
            packed_ratio: fp32_bytes as f64 / packed_bytes.max(1) as f64,
            layers,
            weights,
            zeros,
            bits,
            fp32_bytes,
            packed_bytes,
        }
    }

    /// A plain-text table: one row per layer, then the total.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let underflow = |n: Option<usize>| match (self.reference_underflow, n) {
            (Some(_), Some(n)) => format!(" {n:>10}"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<28} {:>18} {:>4} {:>10} {:>9} {:>4} {:>8}{}",
            "layer",
            "shape",
            "K",
            "weights",
            "sparsity",
            "bits",
            "CR",
            if self.reference_underflow.is_some() {
                " ref-underflow"
            } else {
                ""
            }
        );
        for l in &self.layers {
            let shape = l
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            let _ = writeln!(
                s,
                "{:<28} {:>18} {:>4} {:>10} {:>8.2}% {:>4} {:>7.2}x{}",
                l.name,
                shape,
                l.k,
                l.weights,
                100.0 * l.sparsity,
                l.bits,
                l.compression_ratio,
                underflow(l.reference_underflow)
            );
        }
        let bits = self
            .bits
            .map(|b| b.to_string())
            .unwrap_or_else(|| "mixed".into());
        let _ = writeln!(
            s,
            "{:<28} {:>18} {:>4} {:>10} {:>8.2}% {:>4} {:>7.2}x{}",
            "total",
            "",
            "",
            self.weights,
            100.0 * self.sparsity,
            bits,
            self.compression_ratio,
            underflow(self.reference_underflow)
        );
        if let Some(n) = self.reference_underflow.filter(|&n| n > 0) {
            let _ = writeln!(
                s,
                "ref-underflow: {n} weights whose float32 densities all underflow in the authors' \
                 arithmetic, which sends them to 0 (as --hardening reference does; the default \
                 log-space rule gives them their most probable component)"
            );
        }
        let _ = writeln!(
            s,
            "packed size of these layers: {} bytes vs {} bytes in f32 ({:.2}x smaller)",
            self.packed_bytes, self.fp32_bytes, self.packed_ratio
        );
        s
    }
}
