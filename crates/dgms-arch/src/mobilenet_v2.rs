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

use crate::architecture::{ArchConfig, Architecture, Dataset};
use crate::error::ArchError;
use crate::layer::{conv_bn, conv_bn_act, Activation, Block, Conv, Layer, Linear, Shortcut};

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

/// torchvision's MobileNetV2, named `mobilenet_v2`. It pools globally and
/// takes any input size.
pub fn mobilenet_v2(cfg: &ArchConfig) -> Result<Architecture, ArchError> {
    let relu6 = Activation::Relu6;
    let stem = Conv::new("features.0.0", cfg.in_channels, STEM_CHANNELS, 3).stride(2);
    let mut layers = conv_bn_act(stem, "features.0.1", relu6);
    let mut inp = STEM_CHANNELS;
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            layers.push(inverted_residual(index, inp, c, stride, t));
            inp = c;
            index += 1;
        }
    }
    let last = Conv::new(format!("features.{index}.0"), inp, LAST_CHANNELS, 1);
    layers.extend(conv_bn_act(last, format!("features.{index}.1"), relu6));
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Dropout(DROPOUT));
    let classifier = Linear::new("classifier.1", LAST_CHANNELS, cfg.num_classes);
    layers.push(Layer::Linear(classifier));
    Architecture::new(
        "mobilenet_v2",
        cfg,
        Dataset::ImageNet,
        "classifier.1",
        layers,
    )
}

/// The inverted residual `features.{index}` (see the module docs).
fn inverted_residual(index: usize, inp: usize, oup: usize, stride: usize, t: usize) -> Layer {
    let p = format!("features.{index}.conv");
    let relu6 = Activation::Relu6;
    let hidden = inp * t;
    let mut body = Vec::new();
    let mut j = 0;
    if t != 1 {
        let expand = Conv::new(format!("{p}.0.0"), inp, hidden, 1);
        body.extend(conv_bn_act(expand, format!("{p}.0.1"), relu6));
        j = 1;
    }
    let depthwise = Conv::new(format!("{p}.{j}.0"), hidden, hidden, 3)
        .stride(stride)
        .depthwise();
    body.extend(conv_bn_act(depthwise, format!("{p}.{j}.1"), relu6));
    // The projection's conv and batch norm are siblings, not a sub-module.
    let project = Conv::new(format!("{p}.{}", j + 1), hidden, oup, 1);
    body.extend(conv_bn(project, format!("{p}.{}", j + 2)));
    Layer::Block(Block {
        name: format!("features.{index}"),
        body,
        shortcut: (stride == 1 && inp == oup).then_some(Shortcut::Identity),
    })
}
