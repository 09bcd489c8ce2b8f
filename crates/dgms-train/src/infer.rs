//! `dgms infer`: logits of a packed model, from the Q-SIMD engine or from
//! the candle model rebuilt with the packed file's hard weights (the
//! oracle the engine is tested against).
//!
//! The candle rebuild is exact: every quantized conv gets its decoded hard
//! weights, every other tensor is used as stored, and each folded batch
//! norm `(scale, shift)` becomes weight = scale, bias = shift,
//! running_mean = 0 and running_var = v, where v is the f32 with
//! `v + 1e-5 == 1.0` in f32 arithmetic (see [`unit_running_var`]). The eval
//! batch norm computes `(x - 0) / sqrt(v + eps) * scale + shift`, and as
//! `v + eps` rounds to exactly 1 this is `x * scale + shift` to the bit.
//!
//! CPU only (no `--device`): the Q-SIMD engine is a CPU engine, and the
//! candle rebuild is its oracle on the same host.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dgms_models::{build_model, DgmsModel, ModelConfig};
use dgms_qsimd::engine::Precision;
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;
use dgms_qsimd::Engine;

use crate::config::InvalidSetting;
use crate::error::{Result, TrainError};
use crate::export::BN_EPS;
use dgms_io::write_atomic;

/// The f32 `v` with `v + eps == 1.0` (eps = 1e-5 rounded to f32, as candle
/// adds it), so that a batch norm with running_var = v divides by exactly 1.
pub fn unit_running_var() -> f32 {
    let eps = BN_EPS as f32;
    let mut v = 1.0f32 - eps;
    // 1 - eps is within an ulp or two of the answer; step towards it.
    for _ in 0..8 {
        let s = v + eps;
        if s == 1.0 {
            break;
        }
        let bits = v.to_bits();
        v = f32::from_bits(if s > 1.0 { bits - 1 } else { bits + 1 });
    }
    v
}

/// The `dgms-models` model of a packed file, with its hard weights, for
/// evaluation (`forward_t(x, false)`).
pub fn candle_model(packed: &PackedModel) -> Result<Box<dyn DgmsModel>> {
    let dev = Device::Cpu;
    let meta = &packed.meta;
    let [c, h, w]: [usize; 3] =
        meta.input_shape
            .as_slice()
            .try_into()
            .map_err(|_| TrainError::InputShapeRank {
                found: meta.input_shape.clone(),
            })?;
    if h != w {
        return Err(TrainError::NotSquare {
            c,
            h,
            w,
            who: "candle models",
        });
    }
    let cfg = ModelConfig {
        in_channels: c,
        num_classes: meta.num_classes,
        image_size: h,
    };
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for layer in &packed.layers {
        let t = Tensor::from_vec(layer.decode(), layer.shape.as_slice(), &dev)?;
        tensors.insert(format!("{}.weight", layer.name), t);
    }
    let var = unit_running_var();
    for (name, t) in &packed.tensors {
        let value = Tensor::from_vec(t.data.clone(), t.shape.as_slice(), &dev)?;
        if let Some(bn) = name.strip_suffix(".scale") {
            let n = t.data.len();
            tensors.insert(format!("{bn}.weight"), value);
            tensors.insert(
                format!("{bn}.running_mean"),
                Tensor::zeros(n, DType::F32, &dev)?,
            );
            tensors.insert(
                format!("{bn}.running_var"),
                Tensor::from_vec(vec![var; n], n, &dev)?,
            );
        } else if let Some(bn) = name.strip_suffix(".shift") {
            tensors.insert(format!("{bn}.bias"), value);
        } else {
            tensors.insert(name.clone(), value);
        }
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    build_model(&meta.arch, &cfg, vb).map_err(|source| TrainError::CandleFromPacked {
        arch: meta.arch.clone(),
        source: Box::new(source),
    })
}

/// Which implementation runs a packed model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// dgms_qsimd's engine on the bit-packed kernels.
    Qsimd,
    /// The dgms-models candle model with the hard weights.
    Candle,
}

/// A packed model ready to run on one of the engines.
pub enum Runner {
    Qsimd(Box<Engine>),
    Candle(Box<dyn DgmsModel>),
}

impl Runner {
    /// Builds the runner; `isa` and `precision` are the Q-SIMD engine's
    /// (the candle model always computes in f32: asking it for int8 is an
    /// error rather than silently exact).
    pub fn new(
        packed: &PackedModel,
        kind: EngineKind,
        isa: Isa,
        precision: Precision,
    ) -> Result<Self> {
        Ok(match kind {
            EngineKind::Qsimd => {
                Runner::Qsimd(Box::new(Engine::with_precision(packed, isa, precision)?))
            }
            EngineKind::Candle => {
                if precision != Precision::Exact {
                    return Err(TrainError::CandleIsExact {
                        precision: precision.to_string(),
                    });
                }
                Runner::Candle(candle_model(packed)?)
            }
        })
    }

    /// Logits (N x classes) of `n` images `input` of `shape` [C, H, W].
    pub fn run(&mut self, input: &[f32], n: usize, shape: [usize; 3]) -> Result<Vec<f32>> {
        match self {
            Runner::Qsimd(engine) => Ok(engine.run(input, n)?),
            Runner::Candle(model) => {
                let [c, h, w] = shape;
                let x = Tensor::from_slice(input, (n, c, h, w), &Device::Cpu)?;
                let y = model.forward_t(&x, false)?;
                Ok(y.flatten_all()?.to_vec1()?)
            }
        }
    }
}

/// Reads and validates a packed model file.
pub fn read_packed(path: &Path) -> Result<PackedModel> {
    // Read here rather than with PackedModel::read, whose I/O error already
    // quotes its source (anyhow's chain would print it twice).
    let bytes = std::fs::read(path).map_err(TrainError::io("reading", path))?;
    PackedModel::from_bytes(&bytes).map_err(|source| TrainError::PackedFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads tensor `input` (N, C, H, W) f32 of a safetensors file.
pub fn read_input(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let bytes = std::fs::read(path).map_err(TrainError::io("reading", path))?;
    let bad = |problem: String| TrainError::BadInput {
        path: path.to_path_buf(),
        problem,
    };
    crate::train::checkpoint::check_structure(path, &bytes)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|source| {
        TrainError::NotSafetensors {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let t = st
        .tensor("input")
        .map_err(|_| bad("no tensor `input`".to_string()))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(bad(format!("`input` is {:?}, expected F32", t.dtype())));
    }
    let dims: [usize; 4] = t.shape().try_into().map_err(|_| {
        bad(format!(
            "`input` has shape {:?}, expected (N, C, H, W)",
            t.shape()
        ))
    })?;
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((data, dims))
}

/// Writes `logits` (n x classes) as tensor `logits`, atomically.
pub fn write_logits(path: &Path, logits: &[f32], n: usize, classes: usize) -> Result<()> {
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let serialise = |source| TrainError::Serialise {
        what: "logits".to_string(),
        source,
    };
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, classes], &bytes)
            .map_err(serialise)?;
    let out = safetensors::serialize([("logits", view)], None).map_err(serialise)?;
    Ok(write_atomic(path, &out)?)
}

/// What `dgms infer` did.
pub struct InferOutcome {
    pub images: usize,
    pub classes: usize,
    /// Wall time of each run of the batch.
    pub times: Vec<Duration>,
}

/// Most runs of one batch `dgms infer --repeat` takes (a timing loop, not a
/// load generator).
pub const MAX_REPEAT: usize = 100_000;

/// How `dgms infer` runs a packed model.
#[derive(Clone, Copy, Debug)]
pub struct InferSettings {
    pub engine: EngineKind,
    /// The Q-SIMD engine's instruction set (ignored by candle).
    pub isa: Isa,
    pub precision: Precision,
    /// Runs of the batch, 1..=[`MAX_REPEAT`] (timing).
    pub repeat: usize,
    /// Run on an input holding NaN or infinite values instead of refusing
    /// it.
    pub allow_nonfinite: bool,
}

/// The first non-finite value of `input` (N, C, H, W): its value, its
/// index and its flat index.
fn first_non_finite(input: &[f32], [_, c, h, w]: [usize; 4]) -> Option<(f32, [usize; 4], usize)> {
    let flat = input.iter().position(|v| !v.is_finite())?;
    let index = [
        flat / (c * h * w),
        flat / (h * w) % c,
        flat / w % h,
        flat % w,
    ];
    Some((input[flat], index, flat))
}

/// `dgms infer`: runs the packed model on the `input` of `input_path`
/// `settings.repeat` times and writes the logits of the last run to `out`
/// (never over one of the inputs). An input with a NaN or infinite value
/// is refused, naming its first index, unless `settings.allow_nonfinite`.
pub fn infer(
    packed_path: &Path,
    input_path: &Path,
    out: &Path,
    settings: InferSettings,
) -> Result<InferOutcome> {
    let InferSettings {
        engine: kind,
        isa,
        precision,
        repeat,
        allow_nonfinite,
    } = settings;
    dgms_io::ensure_not_input(
        "--out",
        out,
        &[("--packed", packed_path), ("--input", input_path)],
    )?;
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(TrainError::from(InvalidSetting {
            flag: "--repeat",
            value: repeat.to_string(),
            expected: format!("expected 1..={MAX_REPEAT} runs"),
        }));
    }
    let packed = read_packed(packed_path)?;
    let (input, [n, c, h, w]) = read_input(input_path)?;
    if !allow_nonfinite {
        if let Some((value, index, flat)) = first_non_finite(&input, [n, c, h, w]) {
            return Err(TrainError::NonFiniteInput {
                path: input_path.to_path_buf(),
                value,
                index,
                flat,
            });
        }
    }
    let shape = packed.meta.input_shape.as_slice();
    if shape != [c, h, w] {
        let takes = shape.iter().map(usize::to_string).collect::<Vec<_>>();
        return Err(TrainError::BadInput {
            path: input_path.to_path_buf(),
            problem: format!(
                "`input` is ({n}, {c}, {h}, {w}), the model takes (N, {})",
                takes.join(", ")
            ),
        });
    }
    let mut runner = Runner::new(&packed, kind, isa, precision)?;
    let mut times = Vec::with_capacity(repeat);
    let mut logits = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        logits = runner.run(&input, n, [c, h, w])?;
        times.push(start.elapsed());
    }
    let classes = packed.meta.num_classes;
    write_logits(out, &logits, n, classes)?;
    Ok(InferOutcome {
        images: n,
        classes,
        times,
    })
}

#[cfg(test)]
mod tests {
    use super::{first_non_finite, unit_running_var};

    #[test]
    fn first_non_finite_names_the_nchw_index() {
        let shape = [2, 3, 4, 5];
        let mut x = vec![0.5f32; 2 * 3 * 4 * 5];
        assert_eq!(first_non_finite(&x, shape), None);
        // n = 1, c = 2, h = 3, w = 3 (and a NaN after it).
        let flat = 60 + 2 * 20 + 3 * 5 + 3;
        x[flat] = f32::NEG_INFINITY;
        x[flat + 1] = f32::NAN;
        let (v, index, at) = first_non_finite(&x, shape).unwrap();
        assert_eq!((v, index, at), (f32::NEG_INFINITY, [1, 2, 3, 3], flat));
    }

    #[test]
    fn unit_running_var_divides_by_one() {
        let v = unit_running_var();
        assert_eq!(v + 1e-5f32, 1.0);
        assert_eq!((v + 1e-5f32).sqrt(), 1.0);
    }
}
