//! VGG-Small for CIFAR as in the DGMS authors' code (the "VGG7" of LQ-Nets):
//! six 3x3 convolutions with bias (128, 128, 256, 256, 512, 512 channels) in
//! an `nn.Sequential` named `features`, then a linear `classifier` on the
//! flattened 512 x 4 x 4 map.
//!
//! The layer sequence, reconstructed from the parameter names (only convs
//! and batch norms have parameters; the gaps in the indices are a ReLU, or a
//! max-pool and a ReLU) and checked by logit parity. Indices 4 and 6 must be
//! the max-pool and a ReLU: ReLU-then-BN (the other way round) fails parity.
//! The pool comes before the batch norm, as its index says; in evaluation
//! the two commute when the BN scale is positive, but in training the batch
//! statistics are taken over the pooled map.
//!
//! ```text
//! 0 conv  1 bn  2 relu
//! 3 conv  4 maxpool  5 bn  6 relu
//! 7 conv  8 bn  9 relu
//! 10 conv  11 maxpool  12 bn  13 relu
//! 14 conv  15 bn  16 relu
//! 17 conv  18 maxpool  19 bn  20 relu
//! ```

use crate::architecture::{ArchConfig, Architecture, Dataset};
use crate::error::ArchError;
use crate::layer::{Activation, BatchNorm, Conv, Layer, Linear, MaxPool};

/// One conv stage: (output channels, max-pool after the conv?).
const STAGES: [(usize, bool); 6] = [
    (128, false),
    (128, true),
    (256, false),
    (256, true),
    (512, false),
    (512, true),
];

/// VGG-Small, named `vggsmall`. The classifier's input size follows from
/// `cfg.image_size` (three 2x2 max-pools, rounding down; 32 -> 4); an
/// image under 8x8 is a shape error at the last pool.
pub fn vgg_small(cfg: &ArchConfig) -> Result<Architecture, ArchError> {
    let mut layers = Vec::new();
    let mut index = 0;
    let mut in_channels = cfg.in_channels;
    for (channels, pool) in STAGES {
        let conv = Conv::new(format!("features.{index}"), in_channels, channels, 3).with_bias();
        layers.push(Layer::Conv(conv));
        if pool {
            let name = format!("features.{}", index + 1);
            layers.push(Layer::MaxPool(MaxPool::new(name, 2, 2, 0)));
        }
        let bn_index = index + if pool { 2 } else { 1 };
        let bn = BatchNorm::new(format!("features.{bn_index}"), channels);
        layers.push(Layer::BatchNorm(bn));
        // The ReLU follows the batch norm; the next conv comes after it.
        layers.push(Layer::Act(Activation::Relu));
        index = bn_index + 2;
        in_channels = channels;
    }
    layers.push(Layer::Flatten);
    let final_size = cfg.image_size / 8;
    let in_features = in_channels * final_size * final_size;
    let classifier = Linear::new("classifier", in_features, cfg.num_classes);
    layers.push(Layer::Linear(classifier));
    Architecture::new("vggsmall", cfg, Dataset::Cifar10, "classifier", layers)
}
