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

use candle_core::Tensor;
use candle_nn::{Linear, ModuleT, VarBuilder};

use crate::batch_norm::{batch_norm, BatchNorm};
use crate::error::{ModelError, Result};
use crate::model::{DgmsModel, ModelConfig};
use crate::qconv::{ConvSpec, QConv2d};

/// One conv stage: (output channels, max-pool after the conv?).
const STAGES: [(usize, bool); 6] = [
    (128, false),
    (128, true),
    (256, false),
    (256, true),
    (512, false),
    (512, true),
];

/// One `features` entry group: conv, optional 2x2 max-pool, batch norm, ReLU.
#[derive(Debug)]
struct Stage {
    conv: QConv2d,
    pool: bool,
    bn: BatchNorm,
}

/// VGG-Small; parameter names `features.{0,3,7,10,14,17}` (convs),
/// `features.{1,5,8,12,15,19}` (batch norms) and `classifier`.
#[derive(Debug)]
pub struct VggSmall {
    stages: Vec<Stage>,
    classifier: Linear,
}

impl VggSmall {
    /// Builds the model; the classifier's input size follows from
    /// `cfg.image_size` (three 2x2 max-pools, rounding down; 32 -> 4).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate("vggsmall")?;
        let final_size = cfg.image_size / 8;
        if final_size == 0 {
            return Err(ModelError::Config {
                model: "vggsmall".into(),
                what: format!(
                    "image_size {}, expected at least 8 (three 2x2 max-pools)",
                    cfg.image_size
                ),
            });
        }
        let features = vb.pp("features");
        let mut stages = Vec::with_capacity(STAGES.len());
        let mut index = 0;
        let mut in_channels = cfg.in_channels;
        for &(channels, pool) in &STAGES {
            let conv = QConv2d::new(
                ConvSpec::new(in_channels, channels, 3).with_bias(),
                features.pp(index),
            )?;
            let bn_index = index + if pool { 2 } else { 1 };
            let bn = batch_norm(channels, features.pp(bn_index))?;
            stages.push(Stage { conv, pool, bn });
            // The ReLU follows the batch norm; the next conv comes after it.
            index = bn_index + 2;
            in_channels = channels;
        }
        let in_features = in_channels * final_size * final_size;
        let classifier = candle_nn::linear(in_features, cfg.num_classes, vb.pp("classifier"))
            .map_err(|e| ModelError::load("classifier", e))?;
        Ok(Self { stages, classifier })
    }
}

impl ModuleT for VggSmall {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut out = x.clone();
        for stage in &self.stages {
            out = stage.conv.forward_t(&out, train)?;
            if stage.pool {
                out = out.max_pool2d(2)?;
            }
            out = stage.bn.forward_t(&out, train)?.relu()?;
        }
        // PyTorch's `x.view(N, -1)`: channel-major flattening.
        let out = out.flatten_from(1)?;
        self.classifier.forward_t(&out, train)
    }
}

impl DgmsModel for VggSmall {
    fn model_name(&self) -> &str {
        "vggsmall"
    }

    fn convs(&self) -> Vec<&QConv2d> {
        self.stages.iter().map(|s| &s.conv).collect()
    }

    fn classifier_name(&self) -> &str {
        "classifier"
    }
}
