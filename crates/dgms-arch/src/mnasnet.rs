//! torchvision's MNASNet 1.0 (`torchvision.models.mnasnet1_0`, depth
//! multiplier alpha = 1), with its parameter names, so its state dicts load
//! as they are.
//!
//! `layers.0`..`layers.2`: 3x3 stride-2 conv to 32 channels, batch norm,
//! ReLU; `layers.3`..`layers.5`: 3x3 depthwise conv, batch norm, ReLU;
//! `layers.6`, `layers.7`: 1x1 conv to 16 channels and its batch norm (no
//! activation, no skip); `layers.8` to `layers.13`: six stacks of inverted
//! residuals; `layers.14`..`layers.16`: 1x1 conv to 1280 channels, batch
//! norm, ReLU; the mean over H and W; `classifier`: dropout (p = 0.2,
//! training only) and a linear layer (`classifier.1`).
//!
//! Every inverted residual `layers.S.R` is one flat `nn.Sequential`
//! `layers.S.R.layers`: `0` 1x1 expansion conv, `1` batch norm, ReLU, `3`
//! kxk depthwise conv (padding k / 2) carrying the block's stride, `4`
//! batch norm, ReLU, `6` 1x1 projection conv, `7` batch norm. Unlike
//! MobileNetV2 every block expands (t = 3 or 6) and the kernels are 3x3 or
//! 5x5. A block adds its input when it keeps stride 1 and the channel
//! count, which in a stack is every repeat but the first.
//!
//! The batch norms' momentum is torchvision's `1 - 0.9997` (the paper's
//! TensorFlow decay 0.9997 in PyTorch's convention), not PyTorch's 0.1.

use crate::architecture::{ArchConfig, Architecture, Dataset};
use crate::error::ArchError;
use crate::layer::{conv_bn, conv_bn_act, Activation, Block, Conv, Layer, Linear, Shortcut};

/// The stacks of inverted residuals (output channels, kernel, stride of
/// the first repeat, expansion, repeats), as `MNASNet.__init__` makes them
/// with `_get_depths(1.0)` = [32, 16, 24, 40, 80, 96, 192, 320].
const STACKS: [(usize, usize, usize, usize, usize); 6] = [
    (24, 3, 2, 3, 3),
    (40, 5, 2, 3, 3),
    (80, 5, 2, 6, 3),
    (96, 3, 1, 6, 2),
    (192, 5, 2, 6, 4),
    (320, 3, 1, 6, 1),
];

/// Channels after the stem conv, after the depthwise-separable conv, and
/// before the classifier.
const STEM_CHANNELS: usize = 32;
const SEPARABLE_CHANNELS: usize = 16;
const LAST_CHANNELS: usize = 1280;

/// Dropout probability before the classifier (torchvision's default).
const DROPOUT: f32 = 0.2;

/// torchvision's `_BN_MOMENTUM`: the paper's TensorFlow decay 0.9997 as a
/// PyTorch momentum. Only training's running averages see it.
pub const MNASNET_BATCH_NORM_MOMENTUM: f64 = 1.0 - 0.9997;

/// Index in `layers` of the first stack.
const FIRST_STACK: usize = 8;

/// torchvision's MNASNet 1.0, named `mnasnet1_0`. It pools globally and
/// takes any input size.
pub fn mnasnet1_0(cfg: &ArchConfig) -> Result<Architecture, ArchError> {
    let relu = Activation::Relu;
    let stem = Conv::new("layers.0", cfg.in_channels, STEM_CHANNELS, 3).stride(2);
    let mut layers = conv_bn_act(stem, "layers.1", relu);
    let separable = Conv::new("layers.3", STEM_CHANNELS, STEM_CHANNELS, 3).depthwise();
    layers.extend(conv_bn_act(separable, "layers.4", relu));
    let pointwise = Conv::new("layers.6", STEM_CHANNELS, SEPARABLE_CHANNELS, 1);
    layers.extend(conv_bn(pointwise, "layers.7"));
    let mut inp = SEPARABLE_CHANNELS;
    for (s, (out, kernel, stride, t, repeats)) in STACKS.into_iter().enumerate() {
        for r in 0..repeats {
            let name = format!("layers.{}.{r}", FIRST_STACK + s);
            let stride = if r == 0 { stride } else { 1 };
            layers.push(inverted_residual(name, inp, out, kernel, stride, t));
            inp = out;
        }
    }
    let head = FIRST_STACK + STACKS.len();
    let last = Conv::new(format!("layers.{head}"), inp, LAST_CHANNELS, 1);
    layers.extend(conv_bn_act(last, format!("layers.{}", head + 1), relu));
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Dropout(DROPOUT));
    let classifier = Linear::new("classifier.1", LAST_CHANNELS, cfg.num_classes);
    layers.push(Layer::Linear(classifier));
    let mut arch = Architecture::new("mnasnet1_0", cfg, Dataset::ImageNet, "classifier.1", layers)?;
    arch.batch_norm_momentum = MNASNET_BATCH_NORM_MOMENTUM;
    Ok(arch)
}

/// The inverted residual `name` (see the module docs).
fn inverted_residual(
    name: String,
    inp: usize,
    oup: usize,
    kernel: usize,
    stride: usize,
    t: usize,
) -> Layer {
    let p = format!("{name}.layers");
    let relu = Activation::Relu;
    let mid = inp * t;
    let expand = Conv::new(format!("{p}.0"), inp, mid, 1);
    let mut body = conv_bn_act(expand, format!("{p}.1"), relu);
    let depthwise = Conv::new(format!("{p}.3"), mid, mid, kernel)
        .stride(stride)
        .depthwise();
    body.extend(conv_bn_act(depthwise, format!("{p}.4"), relu));
    let project = Conv::new(format!("{p}.6"), mid, oup, 1);
    body.extend(conv_bn(project, format!("{p}.7")));
    Layer::Block(Block {
        name,
        body,
        shortcut: (stride == 1 && inp == oup).then_some(Shortcut::Identity),
    })
}
