//! The engine's graph as plain data, for running the same function on
//! another runtime (the ONNX Runtime peer of `cargo xtask bench-qsimd`).
//!
//! [`export`] builds the reference engine of a [`PackedModel`] (every
//! quantized layer decoded to the f32 values of its codebook, see
//! [`super::reference`]) and lists its ops in order, with every activation
//! named after the op that produced it (the engine's reused slots become
//! distinct names) and every weight as an f32 tensor. It is derived from the
//! same `dgms-arch` translation the engine runs, so no second description
//! of any network exists: batch norm and bias are already folded into each
//! conv's per-channel `scale` and `shift`, and the residual add and the
//! activation are the conv's fused output stage, exactly as the engine
//! computes them.

use serde::Serialize;

use super::build::WeightMode;
use super::graph::{Kind, Weights};
use super::Engine;
use crate::error::{QsimdError, Result};
use crate::format::PackedModel;
use crate::kernels::{Activation, Isa};

/// One op of an [`ExportedGraph`]. Activations are N x C x H x W (NCHW);
/// `input`, `residual` and `output` name them; weight fields name
/// [`ExportedGraph::tensors`].
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ExportedOp {
    /// `output = act(conv(input, weight) * scale + shift + residual)`, with
    /// weight O x C x k x k (`groups` = C for a depthwise conv, whose
    /// weight is C x 1 x k x k). Missing `scale` means 1, missing `shift` 0.
    Conv {
        name: String,
        input: String,
        output: String,
        weight: String,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        scale: Option<String>,
        shift: Option<String>,
        residual: Option<String>,
        /// "none", "relu" or "relu6".
        activation: &'static str,
    },
    /// Max-pool (floor mode, padding never wins).
    MaxPool {
        name: String,
        input: String,
        output: String,
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    /// Mean of every plane.
    GlobalAvgPool {
        name: String,
        input: String,
        output: String,
    },
    /// N x C x H x W to N x (C*H*W).
    Flatten {
        name: String,
        input: String,
        output: String,
    },
    /// `output = input weight^T + bias`, weight classes x features.
    Linear {
        name: String,
        input: String,
        output: String,
        weight: String,
        bias: String,
    },
}

/// A weight tensor: row-major f32 `data` of `shape`.
#[derive(Clone, Debug)]
pub struct ExportedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model's graph in the engine's op order.
#[derive(Clone, Debug)]
pub struct ExportedGraph {
    pub arch: String,
    /// One image, [C, H, W]; the input activation is named `"input"`.
    pub input_shape: [usize; 3],
    /// The activation holding the logits (N x classes).
    pub output: String,
    pub ops: Vec<ExportedOp>,
    pub tensors: Vec<ExportedTensor>,
}

/// The graph of `model` with decoded weights.
///
/// Errors: those of building the engine, and [`QsimdError::Graph`] for an
/// op with no export (the CIFAR models' option-A shortcut, VGG-Small's
/// pool with batch norm).
pub fn export(model: &PackedModel) -> Result<ExportedGraph> {
    let engine = Engine::build(model, Isa::Scalar, WeightMode::Decoded)?;
    let mut slot_names = vec!["input".to_string(); engine.slot_lens.len()];
    let mut ops = Vec::new();
    let mut tensors = Vec::new();
    let unsupported = |name: &str, what: &str| QsimdError::Graph {
        arch: engine.arch.clone(),
        layer: name.to_string(),
        reason: format!("no export for {what}"),
    };
    for (i, op) in engine.ops.iter().enumerate() {
        let input = slot_names[op.src].clone();
        let output = format!("{}:{i}", op.name);
        let mut tensor = |suffix: &str, shape: Vec<usize>, data: &[f32]| {
            let name = format!("{}.{suffix}", op.name);
            tensors.push(ExportedTensor {
                name: name.clone(),
                shape,
                data: data.to_vec(),
            });
            name
        };
        let dense = |w: &Weights| match w {
            Weights::Dense { data, .. } => Ok(data.clone()),
            _ => Err(unsupported(&op.name, "packed weights")),
        };
        let exported = match &op.kind {
            Kind::Conv(c) => {
                let g = &c.geom;
                let out_c = op.out_len / g.out_pixels();
                let weight = tensor("weight", vec![out_c, g.c, g.kh, g.kw], &dense(&c.w)?);
                ExportedOp::Conv {
                    name: op.name.clone(),
                    input,
                    output: output.clone(),
                    weight,
                    kernel: g.kh,
                    stride: g.stride,
                    pad: g.pad,
                    groups: 1,
                    scale: c.scale.as_ref().map(|s| tensor("scale", vec![out_c], s)),
                    shift: c.shift.as_ref().map(|s| tensor("shift", vec![out_c], s)),
                    residual: c.residual.map(|r| slot_names[r].clone()),
                    activation: activation_name(c.activation),
                }
            }
            Kind::Depthwise(d) => {
                let g = &d.geom;
                let weight = tensor("weight", vec![g.c, 1, g.kh, g.kw], &dense(&d.w)?);
                ExportedOp::Conv {
                    name: op.name.clone(),
                    input,
                    output: output.clone(),
                    weight,
                    kernel: g.kh,
                    stride: g.stride,
                    pad: g.pad,
                    groups: g.c,
                    scale: Some(tensor("scale", vec![g.c], &d.scale)),
                    shift: Some(tensor("shift", vec![g.c], &d.shift)),
                    residual: None,
                    activation: activation_name(d.activation),
                }
            }
            Kind::MaxPool {
                pool, post: None, ..
            } => ExportedOp::MaxPool {
                name: op.name.clone(),
                input,
                output: output.clone(),
                kernel: pool.k,
                stride: pool.stride,
                pad: pool.pad,
            },
            Kind::GlobalAvgPool { .. } => ExportedOp::GlobalAvgPool {
                name: op.name.clone(),
                input,
                output: output.clone(),
            },
            Kind::Flatten { .. } => ExportedOp::Flatten {
                name: op.name.clone(),
                input,
                output: output.clone(),
            },
            Kind::Linear { w, bias } => {
                let classes = op.out_len;
                let weight = tensor("weight", vec![classes, op.in_len], &dense(w)?);
                let bias = tensor("bias", vec![classes], bias);
                ExportedOp::Linear {
                    name: op.name.clone(),
                    input,
                    output: output.clone(),
                    weight,
                    bias,
                }
            }
            Kind::MaxPool { .. } => return Err(unsupported(&op.name, "a pool with batch norm")),
            Kind::ShortcutA { .. } => return Err(unsupported(&op.name, "option-A shortcuts")),
        };
        ops.push(exported);
        slot_names[op.dst] = output;
    }
    Ok(ExportedGraph {
        arch: engine.arch.clone(),
        input_shape: engine.input_shape,
        output: slot_names[engine.output_slot].clone(),
        ops,
        tensors,
    })
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::None => "none",
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
    }
}
