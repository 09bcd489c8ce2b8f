//! The report as the DGMS authors' code prints it (their
//! `SparsityMeasure.check_sparsity_per_layer` and the last line of their
//! `main.py`), so figures can be compared line by line with theirs:
//! parameters before and after the mixtures, every conv and linear layer
//! with its sparsity or `fp32`, total sparsity, non-zero ratio, weights
//! left in fp32, non-zero parameter size, bits and compression rate, and
//! after an evaluation the "Best Top-1 | Top-5 | NZ | #Params | CR" line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dgms_core::report::bits_floor;
use dgms_core::HardenedLayer;
use serde::Serialize;

use crate::train::session::Model;

/// One conv or linear layer of the report.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceRow {
    pub name: String,
    pub shape: Vec<usize>,
    /// Fraction of hard weights equal to 0; `None` for a layer kept in
    /// full precision (printed `fp32`).
    pub sparsity: Option<f64>,
}

/// Accuracy figures of the final line.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReferenceAccuracy {
    pub top1: f64,
    pub top5: f64,
}

/// The authors' report of a hardened model.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceReport {
    /// Trainable parameters of the network, in millions ("Total params").
    pub total_params_m: f64,
    /// The same with every mixture's parameters ("Total params (+GMM)").
    pub total_params_with_gmm_m: f64,
    pub layers: Vec<ReferenceRow>,
    /// Hard weights equal to 0 over all mixture layers, and their weights.
    pub zeros: usize,
    pub weights: usize,
    pub total_sparsity: f64,
    pub nz_ratio: f64,
    /// Weights of the conv and linear layers kept in fp32.
    pub skipped_weights: usize,
    /// (fp32 weights + non-zero hard weights) / 1e6 ("NZ parameters size").
    pub nz_params_m: f64,
    /// floor(log2 K) when every mixture layer has the same K.
    pub bits: Option<u32>,
    /// 1 / (nz_ratio * bits / 32), the authors' formula.
    pub compression_rate: Option<f64>,
    /// Set after an evaluation.
    pub accuracy: Option<ReferenceAccuracy>,
}

impl ReferenceReport {
    /// The report of `model`, whose mixture layers were hardened into
    /// `layers` (their mixtures are already removed from the model).
    pub fn new(model: &Model, layers: &[HardenedLayer], gmm_params: usize) -> Self {
        let hardened: BTreeMap<&str, &HardenedLayer> =
            layers.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut rows = Vec::new();
        let mut skipped = 0;
        let mut push_fp32 = |name: &str, shape: &[usize], rows: &mut Vec<ReferenceRow>| {
            skipped += shape.iter().product::<usize>();
            rows.push(ReferenceRow {
                name: name.to_string(),
                shape: shape.to_vec(),
                sparsity: None,
            });
        };
        for conv in model.net.convs() {
            let shape = conv.weight().dims().to_vec();
            match hardened.get(conv.name()) {
                Some(l) => rows.push(ReferenceRow {
                    name: conv.name().to_string(),
                    shape,
                    sparsity: Some(l.zeros() as f64 / l.len().max(1) as f64),
                }),
                None => push_fp32(conv.name(), &shape, &mut rows),
            }
        }
        let classifier = format!("{}.weight", model.net.classifier_name());
        if let Some((_, w)) = model
            .named_tensors()
            .into_iter()
            .find(|(n, _)| *n == classifier)
        {
            push_fp32(model.net.classifier_name(), w.dims(), &mut rows);
        }
        let zeros: usize = layers.iter().map(|l| l.zeros()).sum();
        let weights: usize = layers.iter().map(|l| l.len()).sum();
        let total_sparsity = zeros as f64 / weights.max(1) as f64;
        let nz_ratio = 1.0 - total_sparsity;
        let bits = match layers.first() {
            Some(first) if layers.iter().all(|l| l.k() == first.k()) => Some(bits_floor(first.k())),
            _ => None,
        };
        let params: usize = model
            .trained_tensors()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum();
        Self {
            total_params_m: params as f64 / 1e6,
            total_params_with_gmm_m: (params + gmm_params) as f64 / 1e6,
            layers: rows,
            zeros,
            weights,
            total_sparsity,
            nz_ratio,
            skipped_weights: skipped,
            nz_params_m: (skipped + weights - zeros) as f64 / 1e6,
            bits,
            compression_rate: bits.map(|b| 1.0 / (nz_ratio * b as f64 / 32.0)),
            accuracy: None,
        }
    }

    /// The text, line for line as the authors' code prints it.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "    Total params: {:.2}M", self.total_params_m);
        let _ = writeln!(
            s,
            "    Total params (+GMM) : {:.2}M",
            self.total_params_with_gmm_m
        );
        for row in &self.layers {
            let shape = format!("torch.Size({:?})", row.shape);
            match row.sparsity {
                Some(sp) => {
                    let _ = writeln!(s, "{}\t{shape}:\t{sp:.3}", row.name);
                }
                None => {
                    let _ = writeln!(s, "{}\t{shape}:\tfp32", row.name);
                }
            }
        }
        let _ = writeln!(
            s,
            "Total sparsity is {} / {}:\t {:.4}",
            self.zeros, self.weights, self.total_sparsity
        );
        let _ = writeln!(s, "NZ ratio is :\t {:.4}", self.nz_ratio);
        let _ = writeln!(s, "Skipped weights number: {}", self.skipped_weights);
        let _ = writeln!(s, "NZ parameters size: {:.2}M", self.nz_params_m);
        match (self.bits, self.compression_rate) {
            (Some(b), Some(cr)) => {
                let _ = writeln!(s, "Bits: {b} | CR: {cr:.2}");
            }
            _ => {
                let _ = writeln!(s, "Bits: mixed K across layers | CR: see the table");
            }
        }
        if let Some(acc) = self.accuracy {
            let _ = writeln!(
                s,
                "Best Top-1: {} | Top-5: {} | NZ: {} | #Params: {:.2}M | CR: {}",
                acc.top1,
                acc.top5,
                self.nz_ratio,
                self.nz_params_m,
                self.compression_rate
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "mixed".into())
            );
        }
        s
    }
}
