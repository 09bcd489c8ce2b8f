//! One data-parallel optimizer step: every rank runs forward and backward
//! on its part of the global batch, the gradients of the optimizer's
//! parameters (weights and mixture parameters alike) are all-reduced into
//! the gradient of the global batch's mean loss, and every rank applies the
//! same SGD update to its copy of the parameters, which therefore stay
//! equal bit for bit on every rank.
//!
//! The reduction is weighted by the ranks' image counts: rank `r` with
//! `n_r` images and mean-loss gradient `g_r` contributes `n_r * g_r`, and
//! the sum is divided by `n = sum n_r`. That is the gradient of the mean
//! loss over the union (the single process's loss), also when the shares
//! differ (a short last batch; a batch smaller than the group, where some
//! ranks have no image and contribute zeros). Everything goes through one
//! all-reduce of one flat buffer per step: `[n_r, n_r * loss_r, one flag per
//! parameter (1 if the rank has its gradient), n_r * g_r of every
//! parameter...]`; a parameter no rank has a gradient for is left alone,
//! as the single process's SGD leaves it.
//!
//! What this reproduces, up to f32 rounding (the test
//! `tests/data_parallel.rs` checks 1e-6 on the final weights): one process
//! training on the union, when each image's loss depends on that image
//! alone. Batch norm in training mode breaks that: each rank normalises
//! with the statistics of its own part of the batch, and updates its own
//! running statistics from them (PyTorch's DataParallel/DDP behaviour
//! without SyncBatchNorm). The trained parameters still stay identical on
//! every rank (they see the same reduced gradients); the running
//! statistics differ by rank until [`sync_batch_norm_stats`] averages
//! them, and the run is a valid data-parallel run but not the single
//! process's bits. Dropout is drawn per position in a batch, so it also
//! differs from the single process.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use dgms_data::Batch;
use dgms_models::{is_batch_norm_stat, DgmsModel};

use crate::error::Result;
use crate::parallel::all_reduce::{AllReduce, ReduceOp};
use crate::train::metrics::Tally;
use crate::train::optim::{Param, Sgd};
use crate::train::session::Model;

/// What the group saw in one step (the same on every rank).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupStep {
    /// Mean loss over the global batch (NaN or infinite if any rank's was:
    /// then no update was made; 0 for a batch without images).
    pub loss: f64,
    /// Images in the global batch.
    pub samples: usize,
    /// Whether the parameters were updated (a finite loss and at least one
    /// image).
    pub updated: bool,
}

/// The gradients of the group's global batch, and its size and loss.
#[derive(Debug)]
pub struct ReducedGradients {
    /// Gradient of the global batch's mean loss for every parameter some
    /// rank had a gradient for.
    pub grads: GradStore,
    pub samples: usize,
    /// Mean loss over the global batch (0 without images).
    pub loss: f64,
}

/// Number of header values before the per-parameter flags.
const HEADER: usize = 2;

/// All-reduces this rank's gradients of `params` (`grads`, `None` when the
/// rank has no image or a non-finite loss), from `samples` images with
/// mean loss `loss`, into the gradients of the global batch's mean loss.
/// Every rank must call it with the same parameters in the same order.
pub fn reduce_gradients(
    params: &[Param],
    grads: Option<&GradStore>,
    samples: usize,
    loss: f64,
    comm: &dyn AllReduce,
) -> Result<ReducedGradients> {
    let Some(first) = params.first() else {
        let header = Tensor::new(&[samples as f32, (loss * samples as f64) as f32], &cpu())?;
        let header: Vec<f32> = comm.all_reduce(&header, ReduceOp::Sum)?.to_vec1()?;
        return Ok(ReducedGradients {
            grads: GradStore::default(),
            samples: header[0] as usize,
            loss: mean_loss(header[1], header[0] as usize),
        });
    };
    let device = first.var.device().clone();
    let n = samples as f64;
    let weighted_loss = if samples == 0 { 0.0 } else { loss * n };
    let mut header = vec![samples as f32, weighted_loss as f32];
    let mut parts = Vec::with_capacity(params.len() + 1);
    for param in params {
        let g = grads.and_then(|g| g.get(param.var.as_tensor()));
        header.push(if g.is_some() { 1.0 } else { 0.0 });
        let part = match g {
            Some(g) => (g.to_dtype(DType::F32)?.flatten_all()? * n)?,
            None => Tensor::zeros(param.var.elem_count(), DType::F32, &device)?,
        };
        parts.push(part);
    }
    let header_len = header.len();
    parts.insert(0, Tensor::from_vec(header, header_len, &device)?);
    let bucket = Tensor::cat(&parts, 0)?;
    let reduced = comm.all_reduce(&bucket, ReduceOp::Sum)?;
    let head: Vec<f32> = reduced.narrow(0, 0, header_len)?.to_vec1()?;
    let total = head[0] as usize;
    let mut out = ReducedGradients {
        grads: GradStore::default(),
        samples: total,
        loss: mean_loss(head[1], total),
    };
    if total == 0 {
        return Ok(out);
    }
    let mut offset = header_len;
    for (i, param) in params.iter().enumerate() {
        let len = param.var.elem_count();
        if head[HEADER + i] > 0.0 {
            let g = (reduced.narrow(0, offset, len)? / total as f64)?
                .reshape(param.var.shape())?
                .to_dtype(param.var.dtype())?;
            out.grads.insert(param.var.as_tensor(), g);
        }
        offset += len;
    }
    Ok(out)
}

/// One optimizer step of a rank on `batch`, its part of the global batch
/// (possibly empty), at `(lr, momentum if the schedule cycles it)`:
/// forward and cross-entropy (mean over the rank's images), backward,
/// [`reduce_gradients`], then `sgd`'s update with the reduced gradients.
/// Adds the rank's images to `tally` (reduce tallies with
/// [`reduce_tally`]). Every rank of the group must call it at every step.
pub fn data_parallel_step(
    net: &dyn DgmsModel,
    sgd: &mut Sgd,
    batch: &Batch,
    (lr, momentum): (f64, Option<f64>),
    comm: &dyn AllReduce,
    tally: &mut Tally,
) -> Result<GroupStep> {
    sgd.set_lr(lr);
    if let Some(m) = momentum {
        sgd.set_momentum(m);
    }
    let mut local = None;
    let (mut loss_value, mut grads) = (0.0, None);
    if !batch.is_empty() {
        let logits = net.forward_t(&batch.images, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        loss_value = f64::from(loss.to_scalar::<f32>()?);
        if loss_value.is_finite() {
            grads = Some(loss.backward()?);
        }
        local = Some(logits.detach());
    }
    let reduced = reduce_gradients(sgd.params(), grads.as_ref(), batch.len(), loss_value, comm)?;
    let updated = reduced.samples > 0 && reduced.loss.is_finite();
    if updated {
        sgd.step(&reduced.grads)?;
        if let Some(logits) = local {
            tally.add(loss_value, &logits, &batch.labels)?;
        }
    }
    Ok(GroupStep {
        loss: reduced.loss,
        samples: reduced.samples,
        updated,
    })
}

/// The group's tally: the sums of every rank's `tally`.
pub fn reduce_tally(tally: &Tally, comm: &dyn AllReduce) -> Result<Tally> {
    let values = [
        tally.loss_sum as f32,
        tally.top1 as f32,
        tally.top5 as f32,
        tally.seen as f32,
        tally.non_finite_rows as f32,
    ];
    let t = comm.all_reduce(&Tensor::new(&values, &cpu())?, ReduceOp::Sum)?;
    let v: Vec<f32> = t.to_vec1()?;
    Ok(Tally {
        loss_sum: f64::from(v[0]),
        top1: v[1] as usize,
        top5: v[2] as usize,
        seen: v[3] as usize,
        non_finite_rows: v[4] as usize,
    })
}

/// Replaces every rank's batch-norm running statistics (f32 ones:
/// `running_mean`, `running_var`) with their mean over the ranks, so that
/// every rank holds the same model (e.g. before rank 0 writes a
/// checkpoint, or before evaluating). Not the statistics one process would
/// have gathered on the union: the mean of per-rank running averages.
pub fn sync_batch_norm_stats(model: &Model, comm: &dyn AllReduce) -> Result<()> {
    for (name, var) in model.named_tensors() {
        if !is_batch_norm_stat(&name) || var.dtype() != DType::F32 {
            continue;
        }
        let mean = comm.all_reduce(var.as_tensor(), ReduceOp::Mean)?;
        var.set(&mean)?;
    }
    Ok(())
}

/// The mean loss from the reduced `n * loss` sum (0 for no image).
fn mean_loss(weighted: f32, samples: usize) -> f64 {
    if samples == 0 {
        0.0
    } else {
        f64::from(weighted) / samples as f64
    }
}

fn cpu() -> candle_core::Device {
    candle_core::Device::Cpu
}
