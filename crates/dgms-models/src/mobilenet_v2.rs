//! torchvision's MobileNetV2 (`torchvision.models.mobilenet_v2`, width
//! multiplier 1), with its parameter names, so its state dicts load as they
//! are.
//!
//! `features.0`: 3x3 stride-2 conv to 32 channels, batch norm, ReLU6;
//! `features.1` to `features.17`: inverted residual blocks; `features.18`:
//! 1x1 conv to 1280 channels, batch norm, ReLU6; global average pooling;
//! `classifier`: dropout (p = 0.2, training only) and a linear layer
//! (`classifier.1`).
//!
//! A block with expansion t > 1 is `conv.0` (1x1 expansion: `conv.0.0` conv,
//! `conv.0.1` batch norm, ReLU6), `conv.1` (3x3 depthwise, groups = channels,
//! carrying the block's stride), `conv.2` (1x1 projection conv, no
//! activation) and `conv.3` (its batch norm); with t = 1 (`features.1`) the
//! expansion is absent and the indices shift down by one. A block adds its
//! input when it keeps stride 1 and the channel count.
//!
//! The depthwise convolutions are ordinary [`QConv2d`]s with `groups` set:
//! they get mixtures like every other conv (SPEC section 3), and the
//! project's im2col op computes grouped convolutions natively.
//!
//! Dropout draws from candle's CPU generator, which cannot be seeded, so
//! training forward passes of this model are not reproducible run to run.

use candle_core::Tensor;
use candle_nn::{Linear, ModuleT, VarBuilder};

use crate::batch_norm::{batch_norm, BatchNorm};
use crate::error::{ModelError, Result};
use crate::model::{DgmsModel, ModelConfig};
use crate::qconv::{ConvSpec, QConv2d};

/// Inverted residual settings (expansion t, output channels c, repeats n,
/// stride s of the first repeat), as in torchvision.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Channels after the stem and before the classifier.
const STEM_CHANNELS: usize = 32;
const LAST_CHANNELS: usize = 1280;

/// Dropout probability before the classifier (torchvision's default).
const DROPOUT: f32 = 0.2;

/// A convolution, its batch norm and an optional ReLU6.
#[derive(Debug)]
struct ConvBn {
    conv: QConv2d,
    bn: BatchNorm,
    relu6: bool,
}

impl ConvBn {
    /// The conv at `conv` and the batch norm at `bn` (names relative to `vb`).
    fn new(spec: ConvSpec, vb: &VarBuilder, conv: &str, bn: &str, relu6: bool) -> Result<Self> {
        Ok(Self {
            conv: QConv2d::new(spec, vb.pp(conv))?,
            bn: batch_norm(spec.out_channels, vb.pp(bn))?,
            relu6,
        })
    }

    /// torchvision's `Conv2dNormActivation`: conv `.0`, batch norm `.1`, ReLU6.
    fn with_relu6(spec: ConvSpec, vb: &VarBuilder) -> Result<Self> {
        Self::new(spec, vb, "0", "1", true)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.conv.forward_t(x, train)?;
        let out = self.bn.forward_t(&out, train)?;
        if self.relu6 {
            out.clamp(0f32, 6f32)
        } else {
            Ok(out)
        }
    }
}

/// An inverted residual block (see the module docs for its layers).
#[derive(Debug)]
struct InvertedResidual {
    layers: Vec<ConvBn>,
    residual: bool,
}

impl InvertedResidual {
    fn new(inp: usize, oup: usize, stride: usize, t: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = inp * t;
        let vb = vb.pp("conv");
        let mut layers = Vec::with_capacity(3);
        if t != 1 {
            let spec = ConvSpec::new(inp, hidden, 1);
            layers.push(ConvBn::with_relu6(spec, &vb.pp(layers.len()))?);
        }
        let depthwise = ConvSpec {
            groups: hidden,
            ..ConvSpec::new(hidden, hidden, 3).stride(stride)
        };
        layers.push(ConvBn::with_relu6(depthwise, &vb.pp(layers.len()))?);
        // The projection's conv and batch norm are siblings, not a sub-module.
        let i = layers.len();
        let project = ConvSpec::new(hidden, oup, 1);
        layers.push(ConvBn::new(
            project,
            &vb,
            &i.to_string(),
            &(i + 1).to_string(),
            false,
        )?);
        Ok(Self {
            layers,
            residual: stride == 1 && inp == oup,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut out = x.clone();
        for layer in &self.layers {
            out = layer.forward_t(&out, train)?;
        }
        if self.residual {
            out + x
        } else {
            Ok(out)
        }
    }
}

/// torchvision MobileNetV2; parameter names `features.{0,18}.{0,1}`,
/// `features.{1..17}.conv.*` and `classifier.1`.
#[derive(Debug)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    classifier: Linear,
}

impl MobileNetV2 {
    /// Builds the model. `cfg.image_size` is not used: the network pools
    /// globally and takes any input size.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate("mobilenet_v2")?;
        let features = vb.pp("features");
        let stem = ConvBn::with_relu6(
            ConvSpec::new(cfg.in_channels, STEM_CHANNELS, 3).stride(2),
            &features.pp(0),
        )?;
        let mut blocks = Vec::with_capacity(17);
        let mut inp = STEM_CHANNELS;
        for &(t, c, n, s) in &SETTINGS {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let vb = features.pp(blocks.len() + 1);
                blocks.push(InvertedResidual::new(inp, c, stride, t, vb)?);
                inp = c;
            }
        }
        let last = ConvBn::with_relu6(
            ConvSpec::new(inp, LAST_CHANNELS, 1),
            &features.pp(blocks.len() + 1),
        )?;
        let classifier = candle_nn::linear(LAST_CHANNELS, cfg.num_classes, vb.pp("classifier.1"))
            .map_err(|e| ModelError::load("classifier.1", e))?;
        Ok(Self {
            stem,
            blocks,
            last,
            classifier,
        })
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut out = self.stem.forward_t(x, train)?;
        for block in &self.blocks {
            out = block.forward_t(&out, train)?;
        }
        out = self.last.forward_t(&out, train)?;
        // AdaptiveAvgPool2d((1, 1)) and flatten.
        let mut pooled = out.mean((2, 3))?;
        if train {
            pooled = candle_nn::ops::dropout(&pooled, DROPOUT)?;
        }
        self.classifier.forward_t(&pooled, train)
    }
}

impl DgmsModel for MobileNetV2 {
    fn model_name(&self) -> &str {
        "mobilenet_v2"
    }

    fn convs(&self) -> Vec<&QConv2d> {
        std::iter::once(&self.stem.conv)
            .chain(
                self.blocks
                    .iter()
                    .flat_map(|b| b.layers.iter().map(|l| &l.conv)),
            )
            .chain(std::iter::once(&self.last.conv))
            .collect()
    }

    fn classifier_name(&self) -> &str {
        "classifier.1"
    }
}
