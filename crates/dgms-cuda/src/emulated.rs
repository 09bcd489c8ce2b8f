//! `kernels/mixture.cu` run on CPU threads (`kernels/host_emulation.cpp`,
//! built by `cc` with the `emulation` feature): the kernels' own source,
//! launched with [`crate::launch`]'s configurations, one thread per CUDA
//! thread, barriers for `__syncthreads` and the warp shuffles. It lets
//! `cargo test` check the kernels' arithmetic, indexing and reductions
//! against the CPU op on machines without a GPU; it is far too slow for
//! anything else.

use std::os::raw::c_int;

use crate::launch::{self, Launch, Totals};

mod ffi {
    use std::os::raw::c_int;

    extern "C" {
        pub fn dgms_emu_mixture_forward_f32(
            w: *const f32,
            packed: *const f32,
            out: *mut f32,
            n: u32,
            k: c_int,
            grid: u32,
            block: u32,
            shared: usize,
        );
        pub fn dgms_emu_mixture_forward_f64(
            w: *const f64,
            packed: *const f64,
            out: *mut f64,
            n: u32,
            k: c_int,
            grid: u32,
            block: u32,
            shared: usize,
        );
        pub fn dgms_emu_mixture_backward_f32(
            w: *const f32,
            packed: *const f32,
            grad_out: *const f32,
            grad_w: *mut f32,
            partials: *mut f64,
            n: u32,
            k: c_int,
            grid: u32,
            block: u32,
            shared: usize,
        );
        pub fn dgms_emu_mixture_backward_f64(
            w: *const f64,
            packed: *const f64,
            grad_out: *const f64,
            grad_w: *mut f64,
            partials: *mut f64,
            n: u32,
            k: c_int,
            grid: u32,
            block: u32,
            shared: usize,
        );
        pub fn dgms_emu_mixture_sum_partials(
            partials: *const f64,
            blocks: u32,
            width: c_int,
            out: *mut f64,
            grid: u32,
            block: u32,
        );
    }
}

/// The types the kernels are instantiated for. Callers pass slices whose
/// lengths [`soft_forward`] and [`backward`] have checked.
pub trait Emulated: Copy + Default {
    #[doc(hidden)]
    fn forward(w: &[Self], packed: &[Self], out: &mut [Self], n: u32, k: c_int, l: Launch);
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    fn backward(
        w: &[Self],
        packed: &[Self],
        grad_out: &[Self],
        grad_w: &mut [Self],
        partials: &mut [f64],
        n: u32,
        k: c_int,
        l: Launch,
    );
}

macro_rules! emulated {
    ($t:ty, $forward:ident, $backward:ident) => {
        impl Emulated for $t {
            fn forward(w: &[Self], packed: &[Self], out: &mut [Self], n: u32, k: c_int, l: Launch) {
                assert!(
                    w.len() == n as usize
                        && out.len() == n as usize
                        && packed.len() == 3 * k as usize
                );
                // SAFETY: `w` and `out` hold n values and `packed` 3K
                // (asserted), the lengths the kernel indexes below; the
                // emulation joins every thread before returning, so no
                // pointer outlives the borrow.
                unsafe {
                    ffi::$forward(
                        w.as_ptr(),
                        packed.as_ptr(),
                        out.as_mut_ptr(),
                        n,
                        k,
                        l.grid,
                        l.block,
                        l.shared_bytes as usize,
                    )
                }
            }

            fn backward(
                w: &[Self],
                packed: &[Self],
                grad_out: &[Self],
                grad_w: &mut [Self],
                partials: &mut [f64],
                n: u32,
                k: c_int,
                l: Launch,
            ) {
                let width = launch::width(k as usize);
                assert!(w.len() == n as usize && grad_out.len() == n as usize);
                assert!(grad_w.len() == n as usize && packed.len() == 3 * k as usize);
                assert!(partials.len() == l.grid as usize * width);
                // SAFETY: the weights, gradients and packed parameters
                // have the lengths the kernel indexes (asserted), and
                // `partials` one row of 3K + 1 per block of the grid
                // launched; every emulated thread is joined before this
                // returns.
                unsafe {
                    ffi::$backward(
                        w.as_ptr(),
                        packed.as_ptr(),
                        grad_out.as_ptr(),
                        grad_w.as_mut_ptr(),
                        partials.as_mut_ptr(),
                        n,
                        k,
                        l.grid,
                        l.block,
                        l.shared_bytes as usize,
                    )
                }
            }
        }
    };
}

emulated!(
    f32,
    dgms_emu_mixture_forward_f32,
    dgms_emu_mixture_backward_f32
);
emulated!(
    f64,
    dgms_emu_mixture_forward_f64,
    dgms_emu_mixture_backward_f64
);

/// The soft weights of `w` under the packed parameters (3K), as the CUDA
/// forward computes them.
pub fn soft_forward<T: Emulated>(w: &[T], packed: &[T], k: usize) -> Result<Vec<T>, String> {
    soft_forward_capped(w, packed, k, launch::MAX_FORWARD_BLOCKS)
}

/// [`soft_forward`] on at most `max_blocks` blocks.
pub fn soft_forward_capped<T: Emulated>(
    w: &[T],
    packed: &[T],
    k: usize,
    max_blocks: u32,
) -> Result<Vec<T>, String> {
    let n = launch::check(w.len(), k, packed.len())?;
    let mut out = vec![T::default(); w.len()];
    if n > 0 {
        let l = launch::forward_capped(n, k, max_blocks);
        T::forward(w, packed, &mut out, n, k as c_int, l);
    }
    Ok(out)
}

/// dL/dw and the parameter sums for the upstream gradient `grad_out`, as
/// the CUDA backward computes them (the same grid, so the same order of
/// summation).
pub fn backward<T: Emulated>(
    w: &[T],
    packed: &[T],
    grad_out: &[T],
    k: usize,
) -> Result<(Vec<T>, Totals), String> {
    backward_capped(w, packed, grad_out, k, launch::MAX_BACKWARD_BLOCKS)
}

/// [`backward`] on at most `max_blocks` blocks.
pub fn backward_capped<T: Emulated>(
    w: &[T],
    packed: &[T],
    grad_out: &[T],
    k: usize,
    max_blocks: u32,
) -> Result<(Vec<T>, Totals), String> {
    let n = launch::check(w.len(), k, packed.len())?;
    if grad_out.len() != w.len() {
        return Err(format!(
            "dgms mixture op (cuda): {} upstream gradients for {} weights",
            grad_out.len(),
            w.len()
        ));
    }
    let mut grad_w = vec![T::default(); w.len()];
    if n == 0 {
        return Ok((grad_w, Totals::zeros(k)));
    }
    let width = launch::width(k);
    let l = launch::backward_capped(n, k, max_blocks);
    let mut partials = vec![0.0; l.grid as usize * width];
    T::backward(
        w,
        packed,
        grad_out,
        &mut grad_w,
        &mut partials,
        n,
        k as c_int,
        l,
    );
    let s = launch::sum_partials(k);
    let mut columns = vec![0.0; width];
    // SAFETY: `partials` holds l.grid rows of `width` f64 and `columns`
    // `width`, what dgms_mixture_sum_partials reads and writes; the
    // emulation joins its threads before returning.
    unsafe {
        ffi::dgms_emu_mixture_sum_partials(
            partials.as_ptr(),
            l.grid,
            width as c_int,
            columns.as_mut_ptr(),
            s.grid,
            s.block,
        )
    };
    Ok((grad_w, Totals::from_columns(&columns, k)))
}
