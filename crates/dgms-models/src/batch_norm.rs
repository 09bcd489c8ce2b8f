//! Batch norm with PyTorch's parameter names and defaults, and the test for
//! which parameters are running statistics rather than trained values.

use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder};

use crate::error::{ModelError, Result};

/// Name suffixes of batch-norm buffers: updated by forward passes in train
/// mode (or, for `num_batches_tracked`, only stored by PyTorch), never by the
/// optimizer.
pub const BATCH_NORM_STAT_SUFFIXES: [&str; 3] =
    ["running_mean", "running_var", "num_batches_tracked"];

/// Whether a parameter name (e.g. `layer1.0.bn1.running_var`) is a
/// batch-norm running statistic or `num_batches_tracked`. A trainer excludes
/// these from the optimizer and from weight decay.
pub fn is_batch_norm_stat(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    BATCH_NORM_STAT_SUFFIXES.contains(&last)
}

/// A 2-D batch norm over `channels` under the builder's prefix: `weight`,
/// `bias`, `running_mean`, `running_var`, with PyTorch's eps 1e-5 and
/// momentum 0.1. With a `VarMap` backend the running statistics are `Var`s
/// of the map, updated in place by train-mode forward passes.
pub fn batch_norm(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    let name = vb.prefix();
    let cfg = BatchNormConfig {
        eps: 1e-5,
        remove_mean: true,
        affine: true,
        momentum: 0.1,
    };
    candle_nn::batch_norm(channels, cfg, vb).map_err(|e| ModelError::load(name, e))
}

#[cfg(test)]
mod tests {
    use super::is_batch_norm_stat;

    #[test]
    fn stat_names() {
        assert!(is_batch_norm_stat("bn1.running_mean"));
        assert!(is_batch_norm_stat("layer1.0.bn2.running_var"));
        assert!(is_batch_norm_stat("features.1.num_batches_tracked"));
        assert!(!is_batch_norm_stat("bn1.weight"));
        assert!(!is_batch_norm_stat("bn1.bias"));
        assert!(!is_batch_norm_stat("layer1.0.conv1.weight"));
        assert!(!is_batch_norm_stat("my_running_mean"));
    }
}
