//! The fused soft-weight op: a candle `CustomOp2` over `(weights, packed
//! parameters)` whose forward and backward run [`crate::kernel`] on the CPU
//! (and dgms-cuda's kernels on CUDA with the `cuda` feature, see
//! `op_cuda.rs`), in f32 or f64, without any K x N intermediate tensor.
//!
//! The second input is the packed parameter vector of [`PackedLayout`]; the
//! mixture builds it with `Tensor::cat` of its `Var`s, so candle's own `cat`
//! backward hands each `Var` its slice of the packed gradient.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Shape, Storage, Tensor, WithDType};

use crate::kernel::{self, Prepared, Real};
use crate::params::PackedLayout;

/// The fused mixture op. Build it through
/// [`crate::GaussianMixture::soft_weights`], which validates the inputs.
#[derive(Clone, Copy, Debug)]
pub struct SoftWeightOp {
    /// Packed parameter layout (K).
    pub layout: PackedLayout,
}

fn contiguous_slice<'a, T: WithDType>(
    all: &'a [T],
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("dgms mixture op: {what} must be contiguous"),
    }
}

fn forward<T: Real + WithDType>(
    w: &[T],
    packed: &[T],
    layout: PackedLayout,
) -> candle_core::Result<Vec<T>> {
    if packed.len() != layout.len() {
        bail!(
            "dgms mixture op: packed parameters have {} values, expected 3K = {}",
            packed.len(),
            layout.len()
        );
    }
    let prep = Prepared::from_packed(packed, layout);
    let mut out = vec![T::zero(); w.len()];
    kernel::soft_forward(&prep, w, &mut out);
    Ok(out)
}

/// Runs `f` on the contiguous CPU data of `t` without copying when `t` is
/// already contiguous.
pub(crate) fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let cpu = match &*storage {
        Storage::Cpu(cpu) => cpu,
        _ => bail!("dgms mixture op: only the CPU device is supported"),
    };
    let all = cpu.as_slice::<T>()?;
    let slice = contiguous_slice(all, layout, "tensor")?;
    Ok(f(slice))
}

/// The per-component constants of the packed parameters (3K values,
/// copied to the host from any device).
pub(crate) fn prepared<T: Real + WithDType>(
    packed: &Tensor,
    layout: PackedLayout,
) -> candle_core::Result<Prepared> {
    let packed_host: Vec<T> = packed.to_vec1()?;
    Ok(Prepared::from_packed(&packed_host, layout))
}

fn backward_typed<T: Real + WithDType>(
    layout: PackedLayout,
    w: &Tensor,
    packed: &Tensor,
    grad_res: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let prep = prepared::<T>(packed, layout)?;
    let mut grad_w = vec![T::zero(); w.elem_count()];
    let grads = with_cpu_slice::<T, _>(w, |ws| {
        with_cpu_slice::<T, _>(grad_res, |gs| kernel::backward(&prep, ws, gs, &mut grad_w))
    })??;
    let grad_w = Tensor::from_vec(grad_w, w.shape(), w.device())?;
    let grad_packed = Tensor::from_vec(grads.to_packed::<T>(), layout.len(), w.device())?;
    Ok((grad_w, grad_packed))
}

impl CustomOp2 for SoftWeightOp {
    fn name(&self) -> &'static str {
        "dgms-mixture-soft-weights"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(w), CpuStorage::F32(p)) => CpuStorage::F32(forward(
                contiguous_slice(w, l1, "weights")?,
                contiguous_slice(p, l2, "packed parameters")?,
                self.layout,
            )?),
            (CpuStorage::F64(w), CpuStorage::F64(p)) => CpuStorage::F64(forward(
                contiguous_slice(w, l1, "weights")?,
                contiguous_slice(p, l2, "packed parameters")?,
                self.layout,
            )?),
            _ => bail!(
                "dgms mixture op: weights and parameters must both be f32 or both f64, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::op_cuda::forward;
        match (s1.dtype(), s2.dtype()) {
            (DType::F32, DType::F32) => forward::<f32>(self.layout, (s1, l1), (s2, l2)),
            (DType::F64, DType::F64) => forward::<f64>(self.layout, (s1, l1), (s2, l2)),
            (a, b) => bail!(
                "dgms mixture op: weights and parameters must both be f32 or both f64, got {a:?} and {b:?}"
            ),
        }
    }

    fn bwd(
        &self,
        w: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if w.device().is_cuda() {
            use crate::op_cuda::backward;
            let (gw, gp) = match w.dtype() {
                DType::F32 => backward::<f32>(self.layout, w, packed, grad_res)?,
                DType::F64 => backward::<f64>(self.layout, w, packed, grad_res)?,
                other => bail!("dgms mixture op: unsupported dtype {other:?}"),
            };
            return Ok((Some(gw), Some(gp)));
        }
        let (gw, gp) = match w.dtype() {
            DType::F32 => backward_typed::<f32>(self.layout, w, packed, grad_res)?,
            DType::F64 => backward_typed::<f64>(self.layout, w, packed, grad_res)?,
            other => bail!("dgms mixture op: unsupported dtype {other:?}"),
        };
        Ok((Some(gw), Some(gp)))
    }
}
