//! Launches `kernels/mixture.cu`: the soft weights of N weights and their
//! backward, with the per-component sums of the backward reduced on the
//! device in a fixed order (the same bits on every run) and returned to
//! the host, K values each, to finish the pi gradient there.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, Result};

use crate::launch::{self, Launch, Totals};
use crate::ptx::MIXTURE;

/// The tensor types the kernels are instantiated for.
pub trait MixtureDType: DeviceRepr + ValidAsZeroBits + CudaDType + Copy + 'static {
    /// The kernels' name suffix.
    const SUFFIX: &'static str;
}

impl MixtureDType for f32 {
    const SUFFIX: &'static str = "f32";
}

impl MixtureDType for f64 {
    const SUFFIX: &'static str = "f64";
}

fn to_candle(e: String) -> candle_core::Error {
    candle_core::Error::Msg(e)
}

/// Soft weights of `w` (N values) under the packed parameters (3K).
pub fn soft_forward<T: MixtureDType>(
    dev: &CudaDevice,
    w: &CudaView<'_, T>,
    packed: &CudaView<'_, T>,
    k: usize,
) -> Result<CudaSlice<T>> {
    let n = launch::check(w.len(), k, packed.len()).map_err(to_candle)?;
    let func = dev.get_or_load_custom_func(
        &format!("dgms_mixture_forward_{}", T::SUFFIX),
        "dgms_mixture",
        MIXTURE,
    )?;
    let out = dev.alloc_zeros::<T>(w.len())?;
    if n == 0 {
        return Ok(out);
    }
    let cfg = config(launch::forward(n, k));
    let k_arg = k as i32;
    let mut builder = func.builder();
    builder.arg(w);
    builder.arg(packed);
    builder.arg(&out);
    builder.arg(&n);
    builder.arg(&k_arg);
    // SAFETY: the arguments match dgms_mixture_forward_<T>'s signature
    // (w, packed, out of T, n as u32, k as i32); `w` and `out` hold n
    // values and `packed` 3K (checked above); the kernel reads and writes
    // only below those lengths and uses (3K + 1) f64 of dynamic shared
    // memory, the amount configured.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(out)
}

/// dL/dw (N values, on the device) and the parameter sums (on the host)
/// for an upstream gradient `grad_out` of the soft weights.
pub fn backward<T: MixtureDType>(
    dev: &CudaDevice,
    w: &CudaView<'_, T>,
    packed: &CudaView<'_, T>,
    grad_out: &CudaView<'_, T>,
    k: usize,
) -> Result<(CudaSlice<T>, Totals)> {
    let n = launch::check(w.len(), k, packed.len()).map_err(to_candle)?;
    if grad_out.len() != w.len() {
        bail!(
            "dgms mixture op (cuda): {} upstream gradients for {} weights",
            grad_out.len(),
            w.len()
        );
    }
    let width = launch::width(k);
    let grad_w = dev.alloc_zeros::<T>(w.len())?;
    if n == 0 {
        return Ok((grad_w, Totals::zeros(k)));
    }
    let backward = launch::backward(n, k);
    let grid = backward.grid;
    let partials = dev.alloc_zeros::<f64>(grid as usize * width)?;
    let sums = dev.alloc_zeros::<f64>(width)?;
    let k_arg = k as i32;
    let width_arg = width as i32;

    let func = dev.get_or_load_custom_func(
        &format!("dgms_mixture_backward_{}", T::SUFFIX),
        "dgms_mixture",
        MIXTURE,
    )?;
    let cfg = config(backward);
    let mut builder = func.builder();
    builder.arg(w);
    builder.arg(packed);
    builder.arg(grad_out);
    builder.arg(&grad_w);
    builder.arg(&partials);
    builder.arg(&n);
    builder.arg(&k_arg);
    // SAFETY: the arguments match dgms_mixture_backward_<T>'s signature;
    // `w`, `grad_out` and `grad_w` hold n values, `packed` 3K, `partials`
    // grid x (3K + 1) f64 (one row per block, the grid launched); the
    // shared memory configured is the (1 + WARPS) x (3K + 1) f64 the
    // kernel indexes.
    unsafe { builder.launch(cfg) }.w()?;

    let sum = dev.get_or_load_custom_func("dgms_mixture_sum_partials", "dgms_mixture", MIXTURE)?;
    let cfg = config(launch::sum_partials(k));
    let mut builder = sum.builder();
    builder.arg(&partials);
    builder.arg(&grid);
    builder.arg(&width_arg);
    builder.arg(&sums);
    // SAFETY: dgms_mixture_sum_partials(partials, blocks, width, out):
    // `partials` holds `grid` rows of `width` f64 and `sums` `width`; the
    // kernel reads rows below `grid` and writes columns below `width`.
    unsafe { builder.launch(cfg) }.w()?;

    let columns = dev.clone_dtoh(&sums)?;
    Ok((grad_w, Totals::from_columns(&columns, k)))
}

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (l.grid, 1, 1),
        block_dim: (l.block, 1, 1),
        shared_mem_bytes: l.shared_bytes,
    }
}
