//! The supported architectures, layer by layer, with the parameter names of
//! `dgms-models` (the DGMS authors' for the CIFAR models, torchvision's for
//! ResNet-18, ResNet-50 and MobileNetV2).

use crate::error::{QsimdError, Result};

use super::build::{Act, Builder, ConvSpec};
use super::ops::Pool;

/// Architectures [`super::Engine`] runs (`meta.arch`).
pub const SUPPORTED_ARCHS: [&str; 7] = [
    "resnet20",
    "resnet32",
    "resnet56",
    "vggsmall",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
];

/// Adds the ops of `arch` after the input `x`; returns the logits
/// (`classes` x 1 x 1 per image).
pub(crate) fn build(b: &mut Builder, arch: &str, x: Act, classes: usize) -> Result<Act> {
    match arch {
        "resnet20" => resnet_cifar(b, x, 3, classes),
        "resnet32" => resnet_cifar(b, x, 5, classes),
        "resnet56" => resnet_cifar(b, x, 9, classes),
        "vggsmall" => vgg_small(b, x, classes),
        "resnet18" => resnet_imagenet(b, x, false, [2, 2, 2, 2], classes),
        "resnet50" => resnet_imagenet(b, x, true, [3, 4, 6, 3], classes),
        "mobilenet_v2" => mobilenet_v2(b, x, classes),
        _ => Err(QsimdError::UnknownArch {
            arch: arch.to_string(),
            supported: SUPPORTED_ARCHS.join(", "),
        }),
    }
}

/// A basic block: conv1-bn1-relu, conv2-bn2, + shortcut, relu; the
/// shortcut is `x` itself or made by `shortcut` from `x` (live: `x`, the
/// conv1 output).
fn basic_block(
    b: &mut Builder,
    x: Act,
    prefix: &str,
    planes: usize,
    stride: usize,
    shortcut: impl FnOnce(&mut Builder, Act, &[usize]) -> Result<Act>,
) -> Result<Act> {
    let (c1, bn1) = (format!("{prefix}.conv1"), format!("{prefix}.bn1"));
    let (c2, bn2) = (format!("{prefix}.conv2"), format!("{prefix}.bn2"));
    let h = b.conv(
        x,
        ConvSpec::bn(&c1, planes, 3, stride, &bn1).relu(),
        None,
        &[],
    )?;
    let short = shortcut(b, x, &[h.slot])?;
    let spec = ConvSpec::bn(&c2, planes, 3, 1, &bn2).relu();
    b.conv(h, spec, Some(short), &[])
}

/// CIFAR ResNet-(6n+2): 3x3 stem with 16 channels, stages of 16/32/64
/// planes with option-A shortcuts, global average pool, `linear`.
fn resnet_cifar(b: &mut Builder, x: Act, n: usize, classes: usize) -> Result<Act> {
    let mut x = b.conv(x, ConvSpec::bn("conv1", 16, 3, 1, "bn1").relu(), None, &[])?;
    for (s, planes) in [16, 32, 64].into_iter().enumerate() {
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{i}", s + 1);
            let name = format!("{prefix}.shortcut");
            x = basic_block(b, x, &prefix, planes, stride, |b, x, live| {
                if stride != 1 || x.c != planes {
                    b.shortcut_a(x, &name, planes, stride, live)
                } else {
                    Ok(x)
                }
            })?;
        }
    }
    let pooled = b.global_avg_pool(x);
    b.linear(pooled, "linear", classes)
}

/// VGG-Small: `features.{0,3,7,10,14,17}` 3x3 convs with bias, each
/// followed by batch norm and ReLU, with a 2x2 max-pool between conv and
/// batch norm after every second conv; flatten; `classifier`.
fn vgg_small(b: &mut Builder, mut x: Act, classes: usize) -> Result<Act> {
    const STAGES: [(usize, bool); 6] = [
        (128, false),
        (128, true),
        (256, false),
        (256, true),
        (512, false),
        (512, true),
    ];
    let mut index = 0;
    for (channels, pool) in STAGES {
        let conv = format!("features.{index}");
        let bn_index = index + if pool { 2 } else { 1 };
        let bn = format!("features.{bn_index}");
        let mut spec = ConvSpec {
            bias: true,
            ..ConvSpec::bn(&conv, channels, 3, 1, &bn).relu()
        };
        if pool {
            // Pool before the batch norm, as the model does (they commute
            // only for positive scales).
            spec.bn = None;
            spec.relu = false;
            x = b.conv(x, spec, None, &[])?;
            let p = Pool {
                k: 2,
                stride: 2,
                pad: 0,
            };
            x = b.max_pool(x, &format!("features.{}", index + 1), p, Some(&bn), &[])?;
        } else {
            x = b.conv(x, spec, None, &[])?;
        }
        index = bn_index + 2;
    }
    let flat = b.flatten(x);
    b.linear(flat, "classifier", classes)
}

/// A torchvision bottleneck: conv1 1x1-bn1-relu, conv2 3x3 (the block's
/// stride)-bn2-relu, conv3 1x1 to 4 x `planes`-bn3, + shortcut, relu (live
/// while the shortcut is made: `x`, the conv1 and conv2 outputs).
fn bottleneck(
    b: &mut Builder,
    x: Act,
    prefix: &str,
    planes: usize,
    stride: usize,
    shortcut: impl FnOnce(&mut Builder, Act, &[usize]) -> Result<Act>,
) -> Result<Act> {
    let name = |s: &str| format!("{prefix}.{s}");
    let (c1, bn1, c2, bn2) = (name("conv1"), name("bn1"), name("conv2"), name("bn2"));
    let (c3, bn3) = (name("conv3"), name("bn3"));
    let h1 = b.conv(
        x,
        ConvSpec::bn(&c1, planes, 1, 1, &bn1).relu(),
        None,
        &[x.slot],
    )?;
    let h2 = b.conv(
        h1,
        ConvSpec::bn(&c2, planes, 3, stride, &bn2).relu(),
        None,
        &[x.slot],
    )?;
    let short = shortcut(b, x, &[h2.slot])?;
    let spec = ConvSpec::bn(&c3, 4 * planes, 1, 1, &bn3).relu();
    b.conv(h2, spec, Some(short), &[])
}

/// torchvision ResNet-18/34 (basic blocks) and 50/101/152 (bottlenecks,
/// stride on the 3x3): 7x7/2 stem, 3x3/2 max-pool, four stages of
/// `blocks` blocks (64/128/256/512 planes, projection shortcut
/// `downsample` where the shape changes), global average pool, `fc`.
fn resnet_imagenet(
    b: &mut Builder,
    x: Act,
    bottlenecks: bool,
    blocks: [usize; 4],
    classes: usize,
) -> Result<Act> {
    let x = b.conv(x, ConvSpec::bn("conv1", 64, 7, 2, "bn1").relu(), None, &[])?;
    let p = Pool {
        k: 3,
        stride: 2,
        pad: 1,
    };
    let mut x = b.max_pool(x, "maxpool", p, None, &[])?;
    for (s, (planes, n)) in [64, 128, 256, 512].into_iter().zip(blocks).enumerate() {
        let out_c = if bottlenecks { 4 * planes } else { planes };
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{i}", s + 1);
            let (conv, bn) = (
                format!("{prefix}.downsample.0"),
                format!("{prefix}.downsample.1"),
            );
            let shortcut = |b: &mut Builder, x: Act, live: &[usize]| {
                if stride != 1 || x.c != out_c {
                    b.conv(x, ConvSpec::bn(&conv, out_c, 1, stride, &bn), None, live)
                } else {
                    Ok(x)
                }
            };
            x = if bottlenecks {
                bottleneck(b, x, &prefix, planes, stride, shortcut)?
            } else {
                basic_block(b, x, &prefix, planes, stride, shortcut)?
            };
        }
    }
    let pooled = b.global_avg_pool(x);
    b.linear(pooled, "fc", classes)
}

/// torchvision MobileNetV2's inverted-residual settings: expansion t,
/// output channels c, blocks n, first stride s.
const MOBILENET_V2_SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// torchvision MobileNetV2: `features.0` 3x3/2 conv to 32 + batch norm +
/// ReLU6; inverted residual blocks `features.1` to `features.17`
/// (`conv.0` 1x1 expansion + ReLU6 unless t = 1, a 3x3 depthwise + ReLU6,
/// a linear 1x1 projection, + the input when the stride is 1 and the
/// channels match); `features.18` 1x1 to 1280 + ReLU6; global average
/// pool; `classifier.1`.
fn mobilenet_v2(b: &mut Builder, x: Act, classes: usize) -> Result<Act> {
    let mut x = b.conv(
        x,
        ConvSpec::bn("features.0.0", 32, 3, 2, "features.0.1").relu6(),
        None,
        &[],
    )?;
    let mut index = 1;
    for (t, c, n, s) in MOBILENET_V2_SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let p = format!("features.{index}.conv");
            let input = x;
            let mut j = 0;
            let mut h = x;
            if t != 1 {
                let (conv, bn) = (format!("{p}.0.0"), format!("{p}.0.1"));
                let spec = ConvSpec::bn(&conv, x.c * t, 1, 1, &bn).relu6();
                h = b.conv(h, spec, None, &[input.slot])?;
                j = 1;
            }
            let (dw, dw_bn) = (format!("{p}.{j}.0"), format!("{p}.{j}.1"));
            h = b.depthwise(h, &dw, stride, &dw_bn, &[input.slot])?;
            let (proj, proj_bn) = (format!("{p}.{}", j + 1), format!("{p}.{}", j + 2));
            let residual = (stride == 1 && input.c == c).then_some(input);
            x = b.conv(h, ConvSpec::bn(&proj, c, 1, 1, &proj_bn), residual, &[])?;
            index += 1;
        }
    }
    let last = format!("features.{index}");
    let (conv, bn) = (format!("{last}.0"), format!("{last}.1"));
    let x = b.conv(x, ConvSpec::bn(&conv, 1280, 1, 1, &bn).relu6(), None, &[])?;
    let pooled = b.global_avg_pool(x);
    b.linear(pooled, "classifier.1", classes)
}
