//! The DGMS authors' checkpoint format: the state dict of their network
//! wrapper, as their released checkpoints hold it bare and their training
//! loop saves it under `state_dict` (read by [`crate::pth::read_pth`]).
//!
//! Keys carry a prefix: `network.` (their `Model` wraps the network), or
//! `module.network.` (saved from `DataParallel`), or none. A layer with a
//! mixture (their `DGMSConv`) holds its continuous `weight` and
//! `sub_distribution.{mu, pi_k, pi_zero, sigma_zero, sigma, temperature}`;
//! the zero component's mean (0) is not stored.
//!
//! Imported as the reference uses them (`docs/METHOD.md#hardening`):
//! `pi_k` and `pi_zero` as stored (the reference takes |pi| and
//! normalises, as this project's kernel does), sigma as |sigma| (only its
//! square enters the reference's density, and negative values occur in
//! real files), tau from `temperature`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{DType, Tensor};
use dgms_arch::{ArchConfig, Architecture};
use dgms_core::MixtureParams;

use crate::error::{ModelError, Result};

/// Key prefixes accepted, tried in this order.
pub const PREFIXES: [&str; 3] = ["module.network.", "network.", ""];

/// The module holding a layer's mixture in the reference (`DGMSConv`).
const SUB_DISTRIBUTION: &str = "sub_distribution";

/// The reference's mixture parameters, as its state dicts name them.
pub const REFERENCE_PARAMS: [&str; 6] = [
    "mu",
    "pi_k",
    "pi_zero",
    "sigma_zero",
    "sigma",
    "temperature",
];

/// Whether a state dict is in the DGMS authors' format: some layer carries
/// a `sub_distribution` (a mixture). Decided by content, not file name.
pub fn is_reference_state_dict(tensors: &HashMap<String, Tensor>) -> bool {
    tensors
        .keys()
        .any(|k| k.contains(&format!(".{SUB_DISTRIBUTION}.")))
}

/// A state dict in the authors' format, split into model tensors and
/// mixtures, names without the prefix.
#[derive(Debug)]
pub struct ReferenceStateDict {
    /// The prefix every key of the file had.
    pub prefix: &'static str,
    /// Model parameters and batch-norm statistics (`num_batches_tracked`
    /// is dropped on reading), by the model's names.
    pub tensors: HashMap<String, Tensor>,
    /// The mixture of every layer that has one, by layer name.
    pub mixtures: BTreeMap<String, MixtureParams>,
}

/// The values of one tensor as f32, flattened.
fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

impl ReferenceStateDict {
    /// Splits `tensors` (read from `path`, named in errors). Every problem
    /// with the mixtures (a missing or unknown parameter, a wrong length,
    /// a non-finite value, a zero sigma, K out of range) is reported, each
    /// naming its key as the file has it.
    pub fn from_tensors(path: &str, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let prefix = PREFIXES
            .into_iter()
            .find(|p| tensors.keys().all(|k| k.starts_with(p)))
            .unwrap_or("");
        let mut model = HashMap::new();
        let mut raw: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
        let mut problems = Vec::new();
        let marker = format!(".{SUB_DISTRIBUTION}.");
        for (key, t) in tensors {
            let name = key[prefix.len()..].to_string();
            match name.split_once(&marker) {
                Some((layer, param)) if REFERENCE_PARAMS.contains(&param) => {
                    raw.entry(layer.to_string())
                        .or_default()
                        .insert(param.to_string(), t);
                }
                Some(_) => {
                    problems.push(format!("unexpected key `{key}`: not a mixture parameter"))
                }
                None => {
                    model.insert(name, t);
                }
            }
        }
        let mut mixtures = BTreeMap::new();
        for (layer, params) in raw {
            match mixture_of(prefix, &layer, &params) {
                Ok(m) => {
                    mixtures.insert(layer, m);
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        if !problems.is_empty() {
            return Err(ModelError::ReferenceCheckpoint {
                path: path.to_string(),
                problems,
            });
        }
        Ok(Self {
            prefix,
            tensors: model,
            mixtures,
        })
    }

    /// The network settings the file was trained for: input channels from
    /// the first convolution's weight, classes from the classifier's rows,
    /// `image_size` as given (else the network's designed input).
    pub fn arch_config(&self, model: &str, image_size: Option<usize>) -> Result<ArchConfig> {
        let dataset = dgms_arch::designed_for(model)?;
        let default = dataset.config();
        let arch = dgms_arch::architecture(model, &default)?;
        let dim = |name: String, axis: usize, fallback: usize| {
            self.tensors
                .get(&name)
                .and_then(|t| t.dims().get(axis).copied())
                .unwrap_or(fallback)
        };
        let stem = arch
            .convs()
            .first()
            .map(|c| format!("{}.weight", c.name))
            .unwrap_or_default();
        Ok(ArchConfig {
            in_channels: dim(stem, 1, default.in_channels),
            num_classes: dim(arch.classifier_weight(), 0, default.num_classes),
            image_size: image_size.unwrap_or(default.image_size),
        })
    }

    /// Checks the file against the network `arch`: every parameter and
    /// statistic present with its shape, nothing else, and every mixture on
    /// a convolution of the network (any convolution: a mixture on a layer
    /// this project would leave in full precision is kept). All problems
    /// are reported at once, each naming its key as the file has it.
    pub fn check_against(&self, path: &str, arch: &Architecture) -> Result<()> {
        let mut problems = Vec::new();
        let key = |name: &str| format!("{}{name}", self.prefix);
        let expected = arch.parameters();
        let known: BTreeSet<&str> = expected.iter().map(|p| p.name.as_str()).collect();
        for p in &expected {
            match self.tensors.get(&p.name) {
                None => problems.push(format!(
                    "missing key `{}` (shape {:?})",
                    key(&p.name),
                    p.shape
                )),
                Some(t) if t.dims() != p.shape.as_slice() => problems.push(format!(
                    "key `{}` has shape {:?}, `{}` expects {:?}",
                    key(&p.name),
                    t.dims(),
                    arch.name,
                    p.shape
                )),
                Some(_) => {}
            }
        }
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .collect();
        extra.sort();
        for name in extra {
            problems.push(format!(
                "unexpected key `{}`: `{}` has no such parameter",
                key(name),
                arch.name
            ));
        }
        let convs: BTreeSet<&str> = arch.convs().iter().map(|c| c.name.as_str()).collect();
        for layer in self.mixtures.keys() {
            if !convs.contains(layer.as_str()) {
                problems.push(format!(
                    "unexpected mixture `{}`: `{layer}` is not a convolution of `{}`",
                    key(&format!("{layer}.{SUB_DISTRIBUTION}")),
                    arch.name
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::ReferenceCheckpoint {
                path: path.to_string(),
                problems,
            })
        }
    }
}

/// The mixture of `layer` from its reference parameters, or every problem
/// found (keys named with `prefix`).
fn mixture_of(
    prefix: &str,
    layer: &str,
    params: &BTreeMap<String, Tensor>,
) -> std::result::Result<MixtureParams, Vec<String>> {
    let key = |p: &str| format!("{prefix}{layer}.{SUB_DISTRIBUTION}.{p}");
    let mut problems = Vec::new();
    let mut got: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for param in REFERENCE_PARAMS {
        match params.get(param).map(values) {
            None => problems.push(format!("missing key `{}`", key(param))),
            Some(Err(e)) => problems.push(format!("key `{}`: unreadable: {e}", key(param))),
            Some(Ok(v)) => {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    problems.push(format!(
                        "key `{}`: value {} at index {i} is not finite",
                        key(param),
                        v[i]
                    ));
                }
                got.insert(param, v);
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let n = got["mu"].len();
    if n == 0 || n + 1 > dgms_core::params::MAX_COMPONENTS {
        problems.push(format!(
            "key `{}` has {n} means: K = {} is outside 2..={}",
            key("mu"),
            n + 1,
            dgms_core::params::MAX_COMPONENTS
        ));
    }
    for param in ["pi_k", "sigma"] {
        if got[param].len() != n {
            problems.push(format!(
                "key `{}` has {} values, `{}` has {n}: expected one per non-zero component",
                key(param),
                got[param].len(),
                key("mu")
            ));
        }
    }
    for param in ["pi_zero", "sigma_zero", "temperature"] {
        if got[param].len() != 1 {
            problems.push(format!(
                "key `{}` has {} values, expected 1",
                key(param),
                got[param].len()
            ));
        }
    }
    for param in ["sigma", "sigma_zero"] {
        if let Some(i) = got[param].iter().position(|&s| s == 0.0) {
            problems.push(format!(
                "key `{}`: sigma is 0 at index {i} (a component of zero width)",
                key(param)
            ));
        }
    }
    if let Some(&t) = got["temperature"].first() {
        if t <= 0.0 {
            problems.push(format!(
                "key `{}`: temperature {t} is not positive",
                key("temperature")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let params = MixtureParams {
        mu: got["mu"].clone(),
        sigma: got["sigma"].iter().map(|s| s.abs()).collect(),
        pi: got["pi_k"].clone(),
        pi_zero: got["pi_zero"][0],
        sigma_zero: got["sigma_zero"][0].abs(),
        tau: got["temperature"][0],
    };
    params
        .validate(layer)
        .map_err(|e| vec![format!("layer `{prefix}{layer}`: {e}")])?;
    Ok(params)
}
