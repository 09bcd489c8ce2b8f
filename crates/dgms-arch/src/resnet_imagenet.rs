//! torchvision's ImageNet ResNets (`torchvision.models.resnet18`, ...,
//! `resnet152`), with its parameter names, so its state dicts load as they
//! are.
//!
//! A 7x7 stride-2 stem conv with 64 channels, batch norm, ReLU and a 3x3
//! stride-2 max-pool; four stages (`layer1` to `layer4`) of basic blocks
//! (ResNet-18/34) or bottlenecks (ResNet-50/101/152) with 64/128/256/512
//! planes; a projection shortcut (`downsample.0` conv 1x1, `downsample.1`
//! batch norm) where the shape changes; global average pooling and a linear
//! classifier `fc`. Bottlenecks put the stride on their 3x3 conv (`conv2`),
//! as torchvision does ("ResNet v1.5").

use crate::architecture::{ArchConfig, Architecture, Dataset};
use crate::error::ArchError;
use crate::layer::{
    conv_bn, conv_bn_act, Activation, Block, Conv, Layer, Linear, MaxPool, Shortcut,
};

/// Planes of the four stages.
const STAGE_PLANES: [usize; 4] = [64, 128, 256, 512];

/// Block type and blocks per stage for each supported depth.
fn layout(depth: usize) -> Option<(bool, [usize; 4])> {
    // (bottleneck?, blocks per stage), as in torchvision.
    match depth {
        18 => Some((false, [2, 2, 2, 2])),
        34 => Some((false, [3, 4, 6, 3])),
        50 => Some((true, [3, 4, 6, 3])),
        101 => Some((true, [3, 4, 23, 3])),
        152 => Some((true, [3, 8, 36, 3])),
        _ => None,
    }
}

/// torchvision's ResNet of depth 18, 34, 50, 101 or 152, named
/// `resnet{depth}`. It pools globally and takes any input size (32x32 gives
/// a 1x1 map before the pooling).
pub fn resnet(depth: usize, cfg: &ArchConfig) -> Result<Architecture, ArchError> {
    let name = format!("resnet{depth}");
    cfg.validate(&name)?;
    let (bottleneck, counts) = layout(depth).ok_or_else(|| ArchError::Config {
        model: name.clone(),
        what: format!("depth {depth}, expected 18, 34, 50, 101 or 152"),
    })?;
    let stem = Conv::new("conv1", cfg.in_channels, 64, 7).stride(2);
    let mut layers = conv_bn_act(stem, "bn1", Activation::Relu);
    layers.push(Layer::MaxPool(MaxPool::new("maxpool", 3, 2, 1)));
    let mut in_planes = 64;
    for (s, (&planes, &n)) in STAGE_PLANES.iter().zip(&counts).enumerate() {
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{i}", s + 1);
            let block = Block::new_resnet(&prefix, bottleneck, in_planes, planes, stride);
            in_planes = block_out(&block);
            layers.push(Layer::Block(block));
            layers.push(Layer::Act(Activation::Relu));
        }
    }
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Linear(Linear::new("fc", in_planes, cfg.num_classes)));
    Architecture::new(name, cfg, Dataset::ImageNet, "fc", layers)
}

/// Output channels of a block: those of its last conv.
fn block_out(block: &Block) -> usize {
    block
        .body
        .iter()
        .rev()
        .find_map(|l| match l {
            Layer::Conv(c) => Some(c.out_channels),
            _ => None,
        })
        .unwrap_or(0)
}

impl Block {
    /// A basic block (`conv1`/`bn1`, `conv2`/`bn2`: two 3x3 convs, the
    /// first strided) or a bottleneck (1x1, strided 3x3, 1x1 to 4 x
    /// `planes`: `conv1` to `conv3`), a ReLU after every conv-bn but the
    /// last; the projection `downsample` where the shape changes.
    fn new_resnet(
        prefix: &str,
        bottleneck: bool,
        in_planes: usize,
        planes: usize,
        stride: usize,
    ) -> Block {
        let p = |s: &str| format!("{prefix}.{s}");
        let relu = Activation::Relu;
        let (body, out) = if bottleneck {
            let out = 4 * planes;
            let mut body = conv_bn_act(Conv::new(p("conv1"), in_planes, planes, 1), p("bn1"), relu);
            let conv2 = Conv::new(p("conv2"), planes, planes, 3).stride(stride);
            body.extend(conv_bn_act(conv2, p("bn2"), relu));
            body.extend(conv_bn(Conv::new(p("conv3"), planes, out, 1), p("bn3")));
            (body, out)
        } else {
            let conv1 = Conv::new(p("conv1"), in_planes, planes, 3).stride(stride);
            let mut body = conv_bn_act(conv1, p("bn1"), relu);
            body.extend(conv_bn(Conv::new(p("conv2"), planes, planes, 3), p("bn2")));
            (body, planes)
        };
        let shortcut = if stride != 1 || in_planes != out {
            let conv = Conv::new(p("downsample.0"), in_planes, out, 1).stride(stride);
            Shortcut::Projection(conv_bn(conv, p("downsample.1")))
        } else {
            Shortcut::Identity
        };
        Block {
            name: prefix.to_string(),
            body,
            shortcut: Some(shortcut),
        }
    }
}
