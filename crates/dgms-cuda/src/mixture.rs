//! Launches `kernels/mixture.cu`: the soft weights of N weights and their
//! backward, with the per-component sums of the backward reduced on the
//! device in a fixed order (the same bits on every run) and returned to
//! the host, K values each, to finish the pi gradient there.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, Result};

use crate::ptx::MIXTURE;

/// Threads per block: `THREADS` in mixture.cu.
const THREADS: u32 = 128;
/// Warps per block, for the shared-memory size.
const WARPS: u32 = THREADS / 32;
/// Most blocks of the backward: each writes 3K + 1 partial sums.
const MAX_BACKWARD_BLOCKS: u32 = 1024;
/// Most blocks of the forward (a grid-stride loop covers the rest).
const MAX_FORWARD_BLOCKS: u32 = 65_535;
/// The largest K whose shared memory (constants and per-warp sums, f64)
/// fits the 48 KiB every CUDA device gives a block.
pub const MAX_K: usize = 256;

/// The tensor types the kernels are instantiated for.
pub trait MixtureDType: DeviceRepr + ValidAsZeroBits + Copy + 'static {
    /// The kernels' name suffix.
    const SUFFIX: &'static str;
}

impl MixtureDType for f32 {
    const SUFFIX: &'static str = "f32";
}

impl MixtureDType for f64 {
    const SUFFIX: &'static str = "f64";
}

/// The backward's sums over every weight, as the CPU kernel's
/// `Partial`: sum e_k, the mu terms, the sigma terms (k = 0..K-1) and
/// the tau term.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub e: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub tau: f64,
}

fn check(n: usize, k: usize, packed_len: usize) -> Result<u32> {
    if !(2..=MAX_K).contains(&k) {
        bail!("dgms mixture op (cuda): K = {k}, expected 2..={MAX_K}");
    }
    if packed_len != 3 * k {
        bail!(
            "dgms mixture op (cuda): {packed_len} packed parameters, expected 3K = {}",
            3 * k
        );
    }
    match u32::try_from(n) {
        Ok(n) => Ok(n),
        Err(_) => bail!(
            "dgms mixture op (cuda): {n} weights in one layer, at most {}",
            u32::MAX
        ),
    }
}

/// Dynamic shared memory of one block, bytes.
fn shared_bytes(k: usize, rows: u32) -> u32 {
    ((3 * k + 1) * rows as usize * std::mem::size_of::<f64>()) as u32
}

fn blocks(n: u32, cap: u32) -> u32 {
    n.div_ceil(THREADS).clamp(1, cap)
}

/// Soft weights of `w` (N values) under the packed parameters (3K).
pub fn soft_forward<T: MixtureDType>(
    dev: &CudaDevice,
    w: &CudaView<'_, T>,
    packed: &CudaView<'_, T>,
    k: usize,
) -> Result<CudaSlice<T>> {
    let n = check(w.len(), k, packed.len())?;
    let func = dev.get_or_load_custom_func(
        &format!("dgms_mixture_forward_{}", T::SUFFIX),
        "dgms_mixture",
        MIXTURE,
    )?;
    let out = dev.alloc_zeros::<T>(w.len())?;
    if n == 0 {
        return Ok(out);
    }
    let cfg = LaunchConfig {
        grid_dim: (blocks(n, MAX_FORWARD_BLOCKS), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: shared_bytes(k, 1),
    };
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
    let n = check(w.len(), k, packed.len())?;
    if grad_out.len() != w.len() {
        bail!(
            "dgms mixture op (cuda): {} upstream gradients for {} weights",
            grad_out.len(),
            w.len()
        );
    }
    let width = 3 * k + 1;
    let grad_w = dev.alloc_zeros::<T>(w.len())?;
    if n == 0 {
        let zeros = vec![0.0; k];
        let totals = Totals {
            e: zeros.clone(),
            mu: zeros.clone(),
            sigma: zeros,
            tau: 0.0,
        };
        return Ok((grad_w, totals));
    }
    let grid = blocks(n, MAX_BACKWARD_BLOCKS);
    let partials = dev.alloc_zeros::<f64>(grid as usize * width)?;
    let sums = dev.alloc_zeros::<f64>(width)?;
    let k_arg = k as i32;
    let width_arg = width as i32;

    let func = dev.get_or_load_custom_func(
        &format!("dgms_mixture_backward_{}", T::SUFFIX),
        "dgms_mixture",
        MIXTURE,
    )?;
    let cfg = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: shared_bytes(k, 1 + WARPS),
    };
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
    let cfg = LaunchConfig {
        grid_dim: ((width as u32).div_ceil(THREADS), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = sum.builder();
    builder.arg(&partials);
    builder.arg(&grid);
    builder.arg(&width_arg);
    builder.arg(&sums);
    // SAFETY: dgms_mixture_sum_partials(partials, blocks, width, out):
    // `partials` holds `grid` rows of `width` f64 and `sums` `width`; the
    // kernel reads rows below `grid` and writes columns below `width`.
    unsafe { builder.launch(cfg) }.w()?;

    let host = dev.clone_dtoh(&sums)?;
    Ok((
        grad_w,
        Totals {
            e: host[..k].to_vec(),
            mu: host[k..2 * k].to_vec(),
            sigma: host[2 * k..3 * k].to_vec(),
            tau: host[3 * k],
        },
    ))
}
