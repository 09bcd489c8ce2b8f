//! Batch norm with PyTorch's parameter names and defaults, and the test for
//! which parameters are running statistics rather than trained values.

use candle_core::{Tensor, Var};
use candle_nn::{Init, ModuleT, VarBuilder};

use crate::affine_relu_op::affine_relu;
use crate::batch_norm_op::{batch_norm_train, BatchStats};
use crate::batch_norm_relu_op::batch_norm_relu_train;
use crate::conv::ConvBackend;

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

/// A batch norm over dimension 1 (channels) with PyTorch's semantics:
/// training mode normalises with the batch's statistics and updates the
/// running averages in place (with its momentum, unbiased variance); eval mode
/// uses the running averages.
///
/// Training mode runs the fused op of [`crate::batch_norm_op`] (one custom
/// op with its own backward) unless its backend is
/// [`crate::conv::ConvBackend::Candle`], which keeps candle-nn's composed
/// batch norm as the baseline for comparisons.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
    backend: ConvBackend,
}

/// A 2-D batch norm over `channels` under the builder's prefix: `weight`,
/// `bias`, `running_mean`, `running_var`, with PyTorch's eps 1e-5 and
/// momentum 0.1. With a `VarMap` backend the running statistics are `Var`s
/// of the map, updated in place by train-mode forward passes. Runs on the
/// default [`ConvBackend`].
pub fn batch_norm(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    batch_norm_with(
        channels,
        (dgms_arch::BATCH_NORM_EPS, dgms_arch::BATCH_NORM_MOMENTUM),
        ConvBackend::default(),
        vb,
    )
}

/// [`batch_norm`] with another eps and momentum (the weight of a batch's
/// statistics in the running averages: PyTorch's 0.1, MNASNet's
/// 1 - 0.9997), running on `backend`.
pub fn batch_norm_with(
    channels: usize,
    (eps, momentum): (f64, f64),
    backend: ConvBackend,
    vb: VarBuilder,
) -> Result<BatchNorm> {
    let name = vb.prefix();
    let load = |e| ModelError::load(name.clone(), e);
    let running_mean = vb
        .get_with_hints(channels, "running_mean", Init::Const(0.))
        .and_then(|t| Var::from_tensor(&t))
        .map_err(load)?;
    let running_var = vb
        .get_with_hints(channels, "running_var", Init::Const(1.))
        .and_then(|t| Var::from_tensor(&t))
        .map_err(load)?;
    let weight = vb
        .get_with_hints(channels, "weight", Init::Const(1.))
        .map_err(load)?;
    let bias = vb
        .get_with_hints(channels, "bias", Init::Const(0.))
        .map_err(load)?;
    // Built on the same Vars, so both paths read and update one set of
    // running statistics.
    let inner = candle_nn::BatchNorm::new_with_momentum(
        channels,
        running_mean.as_tensor().clone(),
        running_var.as_tensor().clone(),
        weight.clone(),
        bias.clone(),
        eps,
        momentum,
    )
    .map_err(load)?;
    Ok(BatchNorm {
        inner,
        weight,
        bias,
        running_mean,
        running_var,
        eps,
        momentum,
        backend,
    })
}

impl BatchNorm {
    /// Training forward through the fused op, then the running averages.
    fn forward_train_fused(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (y, stats) = batch_norm_train(x, &self.weight, &self.bias, self.eps)?;
        self.update_running(stats, x.device())?;
        Ok(y)
    }

    /// Moves the running averages towards a batch's statistics (unbiased
    /// variance, as PyTorch).
    fn update_running(
        &self,
        stats: BatchStats,
        dev: &candle_core::Device,
    ) -> candle_core::Result<()> {
        let c = stats.mean.len();
        let count = stats.m as f64;
        let unbiased = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let mean = Tensor::from_vec(stats.mean, c, dev)?;
        let var = Tensor::from_vec(stats.var, c, dev)?;
        let m = self.momentum;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (var * (m * unbiased))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(())
    }

    /// `relu(self(x) + residual)`: on the im2col backend one fused op
    /// ([`crate::batch_norm_relu_op`] in training,
    /// [`crate::affine_relu_op`] in evaluation), composed on the candle
    /// backend (the baseline).
    pub fn forward_relu_t(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if train && self.backend == ConvBackend::Im2col {
            let (y, stats) =
                batch_norm_relu_train(x, &self.weight, &self.bias, residual, self.eps)?;
            self.update_running(stats, x.device())?;
            return Ok(y);
        }
        if self.backend == ConvBackend::Im2col {
            let (scale, shift) = self.eval_scale_shift()?;
            return affine_relu(x, &scale, &shift, residual);
        }
        let y = self.forward_t(x, train)?;
        match residual {
            Some(r) => (y + r)?.relu(),
            None => y.relu(),
        }
    }

    /// Evaluation's per-channel scale and shift from the running averages.
    fn eval_scale_shift(&self) -> candle_core::Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Eval forward as one per-channel scale and shift (two passes over
    /// `x` instead of candle-nn's four).
    fn forward_eval_folded(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (scale, shift) = self.eval_scale_shift()?;
        if x.rank() < 2 {
            candle_core::bail!(
                "batch norm: input must have at least 2 dimensions, got {:?}",
                x.shape()
            );
        }
        let mut dims = vec![1; x.rank()];
        dims[1] = scale.elem_count();
        x.broadcast_mul(&scale.reshape(dims.as_slice())?)?
            .broadcast_add(&shift.reshape(dims.as_slice())?)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match (train, self.backend) {
            (_, ConvBackend::Candle) => self.inner.forward_t(x, train),
            (true, ConvBackend::Im2col) => self.forward_train_fused(x),
            (false, ConvBackend::Im2col) => self.forward_eval_folded(x),
        }
    }
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
