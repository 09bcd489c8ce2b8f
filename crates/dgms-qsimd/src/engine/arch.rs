//! The engine's graph of a network, translated from its `dgms-arch`
//! description (the one `dgms-models` builds the candle model from, so the
//! parameter names are the same: the DGMS authors' for the CIFAR models,
//! torchvision's for ResNet-18, ResNet-50, MobileNetV2 and MNASNet 1.0).
//!
//! The translation fuses what the engine runs in one op: a conv with its
//! batch norm (and bias), the residual join of its block and the
//! activation after it; a max-pool with a following batch norm and ReLU
//! (VGG-Small). A block's shortcut is made just before the block's last
//! conv, which adds it in its epilogue; the block's input stays live until
//! then. Dropout is a training-only layer and has no op. A description the
//! engine's ops cannot express is an error naming the layer.

use dgms_arch::{
    Activation, ArchConfig, ArchError, BatchNorm, Block, Conv, Layer, MaxPool, Shortcut,
};

use crate::error::{QsimdError, Result};
use crate::kernels::Activation as EpilogueActivation;

use super::build::{Act, Builder, ConvSpec, DepthwiseSpec};
use super::ops::Pool;

/// Architectures [`super::Engine`] runs (`meta.arch`): every network
/// `dgms-arch` describes.
pub const SUPPORTED_ARCHS: [&str; 8] = dgms_arch::MODEL_NAMES;

/// Adds the ops of `arch` after the input `x`; returns the logits
/// (`classes` x 1 x 1 per image).
pub(crate) fn build(b: &mut Builder, arch: &str, x: Act, classes: usize) -> Result<Act> {
    // The description's own shape check runs on a square input; the
    // builder checks every tensor and map against the real one.
    let cfg = ArchConfig {
        in_channels: x.c,
        num_classes: classes,
        image_size: x.h.min(x.w),
    };
    let description = dgms_arch::architecture(arch, &cfg).map_err(|e| match e {
        ArchError::UnknownModel { name, .. } => QsimdError::UnknownArch {
            arch: name,
            supported: SUPPORTED_ARCHS.join(", "),
        },
        ArchError::Config { what, .. } => b.err("input", what),
        ArchError::Shape { layer, what, .. } => b.err(&layer, what),
    })?;
    sequence(b, &description.layers, x, &[])
}

fn unsupported(b: &Builder, layer: &str, what: &str) -> QsimdError {
    b.err(layer, format!("the engine has no op for {what}"))
}

/// The batch norm and activation that directly follow a conv (fused into
/// it), and how many layers they are.
fn fused_tail(rest: &[Layer]) -> (Option<&BatchNorm>, Option<Activation>, usize) {
    let bn = match rest.first() {
        Some(Layer::BatchNorm(bn)) => Some(bn),
        _ => None,
    };
    let used = usize::from(bn.is_some());
    match rest.get(used) {
        Some(Layer::Act(a)) => (bn, Some(*a), used + 1),
        _ => (bn, None, used),
    }
}

/// The ops of `layers` from `x`; `live` are the slots still needed after
/// them.
fn sequence(b: &mut Builder, layers: &[Layer], mut x: Act, live: &[usize]) -> Result<Act> {
    let mut i = 0;
    while i < layers.len() {
        let (out, used) = match &layers[i] {
            Layer::Conv(c) => {
                let (bn, act, n) = fused_tail(&layers[i + 1..]);
                (conv(b, x, c, bn, act, None, live)?, 1 + n)
            }
            Layer::MaxPool(p) => max_pool(b, x, p, &layers[i + 1..], live)?,
            Layer::Block(block) => {
                let after = match layers.get(i + 1) {
                    Some(Layer::Act(a)) => Some(*a),
                    _ => None,
                };
                residual_block(b, x, block, after, live)?
            }
            Layer::GlobalAvgPool => (b.global_avg_pool(x), 1),
            Layer::Flatten => (b.flatten(x), 1),
            // Active in training only.
            Layer::Dropout(_) => (x, 1),
            Layer::Linear(l) => (b.linear(x, &l.name, l.out_features)?, 1),
            Layer::BatchNorm(bn) => {
                return Err(unsupported(
                    b,
                    &bn.name,
                    "a batch norm not after a conv or max-pool",
                ))
            }
            Layer::Act(a) => {
                let what = format!("{a:?} not after a conv, block or max-pool");
                return Err(unsupported(b, "activation", &what));
            }
        };
        x = out;
        i += used;
    }
    Ok(x)
}

/// One conv op with its fused batch norm, residual and activation: a
/// depthwise op for a depthwise conv (odd square kernel, "same" padding,
/// with its batch norm and no residual: MobileNetV2's and MNASNet's), else
/// the dense conv op.
fn conv(
    b: &mut Builder,
    x: Act,
    c: &Conv,
    bn: Option<&BatchNorm>,
    act: Option<Activation>,
    residual: Option<Act>,
    live: &[usize],
) -> Result<Act> {
    let activation = match act {
        Some(Activation::Relu) => EpilogueActivation::Relu,
        Some(Activation::Relu6) => EpilogueActivation::Relu6,
        None => EpilogueActivation::None,
    };
    if c.is_depthwise() {
        let same = !c.kernel.is_multiple_of(2) && c.padding == c.kernel / 2;
        return match (bn, residual) {
            (Some(bn), None) if same => {
                let spec = DepthwiseSpec {
                    name: &c.name,
                    k: c.kernel,
                    stride: c.stride,
                    bn: &bn.name,
                    activation,
                };
                b.depthwise(x, spec, live)
            }
            _ => Err(unsupported(
                b,
                &c.name,
                "a depthwise conv other than an odd kernel k, padding k / 2, with batch norm and no residual",
            )),
        };
    }
    if c.groups != 1 {
        return Err(unsupported(b, &c.name, "a grouped conv"));
    }
    let spec = ConvSpec {
        name: &c.name,
        out_c: c.out_channels,
        k: c.kernel,
        stride: c.stride,
        pad: c.padding,
        bias: c.bias,
        bn: bn.map(|bn| bn.name.as_str()),
        activation,
    };
    b.conv(x, spec, residual, live)
}

/// A max-pool, with the batch norm and ReLU after it fused when present
/// (VGG-Small); returns the output and the layers used.
fn max_pool(
    b: &mut Builder,
    x: Act,
    p: &MaxPool,
    rest: &[Layer],
    live: &[usize],
) -> Result<(Act, usize)> {
    let pool = Pool {
        k: p.kernel,
        stride: p.stride,
        pad: p.padding,
    };
    match (rest.first(), rest.get(1)) {
        (Some(Layer::BatchNorm(bn)), Some(Layer::Act(Activation::Relu))) => {
            Ok((b.max_pool(x, &p.name, pool, Some(&bn.name), live)?, 3))
        }
        (Some(Layer::BatchNorm(bn)), _) => Err(unsupported(
            b,
            &bn.name,
            "a batch norm after a max-pool without a ReLU",
        )),
        _ => Ok((b.max_pool(x, &p.name, pool, None, live)?, 1)),
    }
}

/// A block: its body up to the last conv (the input kept live), the
/// shortcut, then the last conv with the shortcut and the activation
/// `after` the block fused. Returns the output and the layers used (the
/// block, and `after` when fused).
fn residual_block(
    b: &mut Builder,
    x: Act,
    block: &Block,
    after: Option<Activation>,
    live: &[usize],
) -> Result<(Act, usize)> {
    let body = &block.body;
    let (last, last_conv) = body
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| match l {
            Layer::Conv(c) => Some((i, c)),
            _ => None,
        })
        .ok_or_else(|| unsupported(b, &block.name, "a block without a conv"))?;
    let (bn, inner_act, n) = fused_tail(&body[last + 1..]);
    if last + 1 + n != body.len() || (inner_act.is_some() && block.shortcut.is_some()) {
        let what = "a block whose last conv is followed by more than its batch norm";
        return Err(unsupported(b, &block.name, what));
    }
    let mut inner_live = live.to_vec();
    inner_live.push(x.slot);
    let h = sequence(b, &body[..last], x, &inner_live)?;
    let mut short_live = live.to_vec();
    short_live.push(h.slot);
    let short = match &block.shortcut {
        None => None,
        Some(Shortcut::Identity) => Some(x),
        Some(Shortcut::ZeroPad { stride, pad }) => {
            let name = format!("{}.shortcut", block.name);
            Some(b.shortcut_a(x, &name, x.c + 2 * pad, *stride, &short_live)?)
        }
        Some(Shortcut::Projection(p)) => Some(sequence(b, p, x, &short_live)?),
    };
    // The activation inside a block without a join, or the one after it.
    let (act, used) = match (inner_act, after) {
        (Some(a), _) => (Some(a), 1),
        (None, Some(a)) => (Some(a), 2),
        (None, None) => (None, 1),
    };
    Ok((conv(b, h, last_conv, bn, act, short, live)?, used))
}
