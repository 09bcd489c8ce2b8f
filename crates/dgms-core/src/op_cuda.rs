//! The fused mixture op's CUDA side (feature `cuda`): the forward and
//! backward of [`crate::op::SoftWeightOp`] on CUDA tensors run
//! dgms-cuda's kernels, which keep no K x N intermediate either; only the
//! 3K + 1 parameter sums of the backward come to the host, where the pi
//! gradient is finished as on the CPU (`Prepared::param_grads`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::op::BackpropOp;
use candle_core::{bail, CudaStorage, Layout, Shape, Storage, Tensor, WithDType};
use dgms_cuda::mixture::{self, MixtureDType};

use crate::kernel::Real;
use crate::op::prepared;
use crate::params::PackedLayout;

/// The contiguous values of `storage` under `layout`, as `T`.
fn view<'a, T: MixtureDType + WithDType>(
    storage: &'a CudaStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(storage.as_cuda_slice::<T>()?.slice(start..end)),
        None => bail!("dgms mixture op: {what} must be contiguous"),
    }
}

/// The forward on CUDA storages of `T`.
pub(crate) fn forward<T: MixtureDType + WithDType>(
    layout: PackedLayout,
    w: (&CudaStorage, &Layout),
    packed: (&CudaStorage, &Layout),
) -> candle_core::Result<(CudaStorage, Shape)> {
    let dev = w.0.device();
    let out = mixture::soft_forward::<T>(
        dev,
        &view::<T>(w.0, w.1, "weights")?,
        &view::<T>(packed.0, packed.1, "packed parameters")?,
        layout.k,
    )?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        w.1.shape().clone(),
    ))
}

/// The backward on CUDA tensors of `T`: (dL/dw, dL/dpacked).
pub(crate) fn backward<T: Real + MixtureDType + WithDType>(
    layout: PackedLayout,
    w: &Tensor,
    packed: &Tensor,
    grad_res: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let prep = prepared::<T>(packed, layout)?;
    let (w, packed, grad_res) = (
        w.contiguous()?,
        packed.contiguous()?,
        grad_res.contiguous()?,
    );
    let (ws, wl) = w.storage_and_layout();
    let (ps, pl) = packed.storage_and_layout();
    let (gs, gl) = grad_res.storage_and_layout();
    let (Storage::Cuda(ws), Storage::Cuda(ps), Storage::Cuda(gs)) = (&*ws, &*ps, &*gs) else {
        bail!(
            "dgms mixture op: weights, parameters and gradient must all be on the same CUDA device"
        );
    };
    let dev = ws.device();
    let (grad_w, totals) = mixture::backward::<T>(
        dev,
        &view::<T>(ws, wl, "weights")?,
        &view::<T>(ps, pl, "packed parameters")?,
        &view::<T>(gs, gl, "upstream gradient")?,
        layout.k,
    )?;
    let grad_w = Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(grad_w, dev.clone())),
        w.shape().clone(),
        BackpropOp::none(),
        false,
    );
    let grads = prep.param_grads(totals.e, totals.mu, totals.sigma, totals.tau);
    let grad_packed = Tensor::from_vec(grads.to_packed::<T>(), layout.len(), w.device())?;
    Ok((grad_w, grad_packed))
}
