//! CIFAR ResNet-20/32/56 (He et al. 2016, section 4.2), as in the DGMS
//! authors' code: a 3x3 stem conv with 16 channels, three stages of n basic
//! blocks with 16/32/64 channels (depth = 6n + 2), option-A shortcuts, global
//! average pooling and a linear classifier named `linear`.
//!
//! Parameter names: `conv1`, `bn1`, `layer{1,2,3}.{i}.{conv,bn}{1,2}`,
//! `linear`.

use crate::architecture::{ArchConfig, Architecture, Dataset};
use crate::error::ArchError;
use crate::layer::{conv_bn, conv_bn_act, Activation, Block, Conv, Layer, Linear, Shortcut};

/// Channels of the three stages.
const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];

/// A CIFAR ResNet of the given depth (6n + 2 with n >= 1: 20, 32, 44, 56,
/// 110), named `resnet{depth}`.
pub fn resnet_cifar(depth: usize, cfg: &ArchConfig) -> Result<Architecture, ArchError> {
    let name = format!("resnet{depth}");
    cfg.validate(&name)?;
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(ArchError::Config {
            model: name,
            what: format!("depth {depth}, expected 6n + 2 with n >= 1 (20, 32, 56, ...)"),
        });
    }
    let n = (depth - 2) / 6;
    let stem = Conv::new("conv1", cfg.in_channels, STAGE_CHANNELS[0], 3);
    let mut layers = conv_bn_act(stem, "bn1", Activation::Relu);
    let mut in_planes = STAGE_CHANNELS[0];
    for (s, &planes) in STAGE_CHANNELS.iter().enumerate() {
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            layers.push(basic_block(
                &format!("layer{}.{i}", s + 1),
                in_planes,
                planes,
                stride,
            ));
            layers.push(Layer::Act(Activation::Relu));
            in_planes = planes;
        }
    }
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Linear(Linear::new(
        "linear",
        in_planes,
        cfg.num_classes,
    )));
    Architecture::new(name, cfg, Dataset::Cifar10, "linear", layers)
}

/// conv-bn-relu-conv-bn plus the shortcut: the input itself, or (where the
/// stride or the channels change) option A, subsampled with `planes / 4`
/// zero channels on each side, as the authors' `F.pad` does.
fn basic_block(prefix: &str, in_planes: usize, planes: usize, stride: usize) -> Layer {
    let p = |s: &str| format!("{prefix}.{s}");
    let conv1 = Conv::new(p("conv1"), in_planes, planes, 3).stride(stride);
    let mut body = conv_bn_act(conv1, p("bn1"), Activation::Relu);
    body.extend(conv_bn(Conv::new(p("conv2"), planes, planes, 3), p("bn2")));
    let shortcut = if stride != 1 || in_planes != planes {
        Shortcut::ZeroPad {
            stride,
            pad: planes / 4,
        }
    } else {
        Shortcut::Identity
    };
    Layer::Block(Block {
        name: prefix.to_string(),
        body,
        shortcut: Some(shortcut),
    })
}
