//! The int8 fast path: int8 weights x dynamically quantized int8
//! activations, accumulated exactly in i32.
//!
//! - Weights: [`QMatrixI8`], one scale per layer, s_w = max|c_k| / 127.
//! - Activations: symmetric, s_x = max|x| / 127 over the whole vector
//!   ([`gemv_i8`]) or over each column of X, i.e. each output pixel
//!   ([`gemm_i8`], [`conv2d_i8`]); q_x = round-half-even(x / s_x) in
//!   [-127, 127]. A column whose max is not finite gives NaN outputs; one
//!   whose max is below `f32::MIN_POSITIVE` (including all-zero) quantizes
//!   to 0.
//! - y = epilogue(acc * s_w * s_x) with acc = sum of q_w q_x, exact in i32.
//!
//! Every ISA computes the same acc, bit for bit, from the same quantized
//! values (the quantization and the float stages are shared code), so the
//! SIMD results equal the scalar reference's exactly. Both operands use the
//! full 8 bits, nothing saturates:
//! - AVX2 / AVX-512BW `vpmaddubsw` multiplies u8 by i8 and saturates the
//!   i16 sum of two products. The kernels feed it |a| and b * sign(a):
//!   two products of at most 127 * 127 sum to 32258 < 32767. When no
//!   activation is negative (e.g. after a ReLU) q_x is a valid u8 as it is
//!   and the sign step is skipped.
//! - AVX-512 VNNI `vpdpbusd` sums into i32 without saturation: activations
//!   go in as q_x + 128 (u8) and 128 * rowsum(q_w) is subtracted after.
//! - NEON `smull` + `sadalp` widen to i16 / i32; `sdot` (when the CPU has
//!   the dot-product extension) sums into i32.
//!
//! Error against the f32 kernels on the same codebook, per output (before
//! the epilogue), from |w - s_w q_w| <= s_w / 2 and likewise for x:
//!
//! |y_i8 - y| <= sum over k of (|w_k| s_x + |x_k| s_w + s_w s_x / 2) / 2
//!
//! (s_x is the cost of 8-bit activations, s_w that of an 8-bit codebook).
//!
//! `DGMS_QSIMD_NO_DOT=1` (read once) makes the AVX-512 and NEON kernels skip
//! `vpdpbusd` / `sdot` (to test the other path on CPUs that have them).

use super::conv::{check_conv_args, check_len, im2col_unchecked, ConvGeometry};
use super::epilogue::Epilogue;
use super::int8_gemm as driver;
use super::int8_matrix::QMatrixI8;
use super::isa::Isa;
use crate::error::Result;

/// Largest quantized magnitude: symmetric, so -128 never occurs and |q|
/// and -q fit an i8 (the sign tricks of the SIMD kernels rely on it).
pub(crate) const QMAX: f32 = 127.0;

/// Environment variable that disables the dot-product instructions.
const NO_DOT_ENV_VAR: &str = "DGMS_QSIMD_NO_DOT";

/// round-half-even(v * inv), clamped to [-QMAX, QMAX]. Plain f32 ops (no
/// `round`, a libm call on baseline x86-64): the loops using it vectorise,
/// and every ISA gets the same values.
#[inline(always)]
pub(crate) fn quant(v: f32, inv: f32) -> i8 {
    // Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // NaN (only in a non-finite column, whose outputs are NaN) gives 0.
    let t = (v * inv).clamp(-QMAX, QMAX);
    ((t + MAGIC).to_bits() as i32 - 0x4B40_0000) as i8
}

/// (1 / s, s_w * s) for a tensor or column whose max magnitude is `m`,
/// with s = m / QMAX; `bad` if it holds a non-finite value.
pub(crate) fn scales(m: f32, bad: bool, s_w: f32) -> (f32, f32) {
    if bad || !m.is_finite() {
        (0.0, f32::NAN)
    } else if m < f32::MIN_POSITIVE {
        // Also keeps QMAX / m finite.
        (0.0, 0.0)
    } else {
        (QMAX / m, s_w * (m / QMAX))
    }
}

/// `scales` of a whole vector, and whether no value is negative (then
/// every finite value quantizes to 0..=127: a valid u8 operand).
pub(crate) fn vec_scales(x: &[f32], s_w: f32) -> (f32, f32, bool) {
    let (mut m, mut z, mut lo) = (0.0f32, 0.0f32, 0.0f32);
    for &v in x {
        m = m.max(v.abs());
        // NaN exactly when some value is NaN or infinite.
        z += v * 0.0;
        lo = lo.min(v);
    }
    let (inv, deq) = scales(m, z.is_nan(), s_w);
    (inv, deq, lo >= 0.0)
}

/// The kernel family an ISA runs for int8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kern {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 with VNNI `vpdpbusd` (activations offset to u8).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX-512BW `vpmaddubsw` + `vpmaddwd`.
    #[cfg(target_arch = "x86_64")]
    Avx512Bw,
    /// NEON with `sdot`.
    #[cfg(target_arch = "aarch64")]
    NeonDot,
    /// NEON `smull` + `sadalp`.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// The portable kernels with the VNNI activation offset: runs the
    /// offset path (row sums, padding) on any CPU in the unit tests.
    #[cfg(test)]
    PortableOffset,
}

impl Kern {
    /// The kernels for `isa`, which the caller checked is available.
    pub(crate) fn select(isa: Isa) -> Kern {
        static NO_DOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let no_dot = *NO_DOT.get_or_init(|| {
            std::env::var_os(NO_DOT_ENV_VAR).is_some_and(|v| !v.is_empty() && v != "0")
        });
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kern::Avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if !no_dot && std::arch::is_x86_feature_detected!("avx512vnni") => {
                Kern::Avx512Vnni
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Kern::Avx512Bw,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon if !no_dot && std::arch::is_aarch64_feature_detected!("dotprod") => {
                Kern::NeonDot
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Kern::Neon,
            _ => Kern::Portable,
        }
    }

    /// Whether activations go in as q + 128 (u8), corrected by row sums.
    pub(crate) fn offset(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kern::Avx512Vnni {
            return true;
        }
        #[cfg(test)]
        if self == Kern::PortableOffset {
            return true;
        }
        false
    }
}

/// y = W x with int8 weights and int8 activations (`x`: cols, `y`: rows):
/// x is quantized with one scale s_x = max|x| / 127, the products summed
/// exactly in i32, the sums scaled by s_w s_x. Against [`super::gemv`] on
/// the same codebook, output r is off by at most
/// sum over c of (|w_rc| s_x + |x_c| s_w + s_w s_x / 2) / 2. Every ISA gives
/// the same result, bit for bit.
///
/// ```
/// use dgms_qsimd::kernels::{gemv_i8, Isa, QMatrixI8};
/// let w = QMatrixI8::new(2, 3, &[0, 1, 2, 2, 1, 0], &[0.0, 0.5, -1.0])?;
/// let mut y = [0.0; 2];
/// gemv_i8(Isa::detect(), &w, &[1.0, 2.0, 3.0], &mut y)?;
/// // Exact: [-2, 0].
/// assert!((y[0] + 2.0).abs() < 0.05 && y[1].abs() < 0.05);
/// # Ok::<(), dgms_qsimd::QsimdError>(())
/// ```
pub fn gemv_i8(isa: Isa, w: &QMatrixI8, x: &[f32], y: &mut [f32]) -> Result<()> {
    isa.ensure_available()?;
    check_len("gemv_i8", "x (cols)", x.len(), w.cols())?;
    check_len("gemv_i8", "y (rows)", y.len(), w.rows())?;
    if isa == Isa::Scalar {
        gemv_ref(w, x, y);
    } else {
        super::int8_gemv::gemv(Kern::select(isa), w, x, y);
    }
    Ok(())
}

/// Y = epilogue(W X) with int8 weights and activations quantized per
/// column of X: `w` rows x cols, `x` cols x n and `y` rows x n, row-major.
pub fn gemm_i8(
    isa: Isa,
    w: &QMatrixI8,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    isa.ensure_available()?;
    super::check_gemm("gemm_i8", w.rows(), w.cols(), x, n, y, epilogue)?;
    if isa == Isa::Scalar {
        gemm_ref(w, x, n, y, epilogue);
    } else {
        driver::gemm(Kern::select(isa), w, x, n, y, epilogue);
    }
    Ok(())
}

/// [`super::conv2d`] on the int8 path: activations quantized per output
/// pixel (per im2col column), as [`gemm_i8`] on the im2col matrix gives
/// them. 1x1, stride 1, unpadded convolutions use the input as it is;
/// the SIMD ISAs quantize the others straight from the image.
pub fn conv2d_i8(
    isa: Isa,
    w: &QMatrixI8,
    input: &[f32],
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    const OP: &str = "conv2d_i8";
    let n = check_conv_args(OP, isa, (w.rows(), w.cols()), input, geom, out, epilogue)?;
    if geom.kh == 1 && geom.kw == 1 && geom.stride == 1 && geom.pad == 0 {
        return gemm_i8(isa, w, input, n, out, epilogue);
    }
    if isa == Isa::Scalar {
        let mut cols = vec![0.0f32; geom.patch_len() * n];
        im2col_unchecked(input, geom, &mut cols);
        gemm_ref(w, &cols, n, out, epilogue);
    } else if n > 0 {
        // Quantized straight from the image: no f32 im2col matrix.
        let kern = Kern::select(isa);
        let qx = super::int8_quant::conv_quads(kern, w, input, geom, 1);
        driver::gemm_quads(kern, w, &qx, n, out, epilogue);
    }
    Ok(())
}

impl ConvGeometry {
    /// [`conv2d_i8`] of `images` images stored C x N x H x W (the engine's
    /// layout) into O x N x out_h x out_w: one GEMM whose columns are
    /// (image, pixel), each column quantized on its own as in
    /// [`conv2d_i8`].
    pub(crate) fn conv_batched_i8(
        &self,
        isa: Isa,
        w: &QMatrixI8,
        input: &[f32],
        images: usize,
        out: &mut [f32],
        epilogue: &Epilogue,
    ) -> Result<()> {
        const OP: &str = "conv_batched_i8";
        isa.ensure_available()?;
        self.validate(OP)?;
        check_len(OP, "weight columns (C*kh*kw)", w.cols(), self.patch_len())?;
        check_len(
            OP,
            "input (C*N*H*W)",
            input.len(),
            images * self.input_len(),
        )?;
        let n = images * self.out_pixels();
        check_len(OP, "output (O*N*out_h*out_w)", out.len(), w.rows() * n)?;
        epilogue.validate(OP, w.rows(), n)?;
        if self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0 {
            return gemm_i8(isa, w, input, n, out, epilogue);
        }
        if n == 0 {
            return Ok(());
        }
        // Scalar gets the portable kernels (bit-identical by design).
        let kern = Kern::select(isa);
        let qx = super::int8_quant::conv_quads(kern, w, input, self, images);
        driver::gemm_quads(kern, w, &qx, n, out, epilogue);
        Ok(())
    }
}

/// Per-column (1 / s_x, s_w * s_x) of X (`cols` x `n`), and whether no
/// value is negative. X is read in row order (streaming), in parallel row
/// chunks for large X.
pub(crate) fn col_scales(x: &[f32], n: usize, s_w: f32) -> (Vec<f32>, Vec<f32>, bool) {
    use rayon::prelude::*;
    // Per column: max |x|, sum of x * 0 (NaN iff a value is not finite)
    // and min(0, min x).
    let scan = |rows: &[f32]| {
        let (mut m, mut z, mut lo) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        for row in rows.chunks_exact(n) {
            let it = m.iter_mut().zip(z.iter_mut()).zip(lo.iter_mut());
            for (((m, z), lo), &v) in it.zip(row) {
                *m = m.max(v.abs());
                *z += v * 0.0;
                *lo = lo.min(v);
            }
        }
        (m, z, lo)
    };
    let (m, z, lo) = if x.len() >= 1 << 16 {
        let per = (x.len() / n).div_ceil(rayon::current_num_threads()).max(1) * n;
        let parts: Vec<_> = x.par_chunks(per).map(scan).collect();
        let mut it = parts.into_iter();
        let first = it.next().unwrap_or_else(|| scan(&[]));
        it.fold(first, |(mut m, mut z, mut lo), (pm, pz, pl)| {
            m.iter_mut().zip(pm).for_each(|(a, b)| *a = a.max(b));
            z.iter_mut().zip(pz).for_each(|(a, b)| *a += b);
            lo.iter_mut().zip(pl).for_each(|(a, b)| *a = a.min(b));
            (m, z, lo)
        })
    } else {
        scan(x)
    };
    let (inv, deq) = m
        .iter()
        .zip(&z)
        .map(|(&m, z)| scales(m, z.is_nan(), s_w))
        .unzip();
    (inv, deq, lo.iter().all(|&v| v >= 0.0))
}

/// Scalar reference GEMV: plain loops over the int8 weights.
pub(crate) fn gemv_ref(w: &QMatrixI8, x: &[f32], y: &mut [f32]) {
    let (inv, deq, _) = vec_scales(x, w.weight_scale());
    let q: Vec<i32> = x.iter().map(|&v| i32::from(quant(v, inv))).collect();
    let wq = w.to_i8();
    for (yr, wr) in y.iter_mut().zip(wq.chunks_exact(w.cols())) {
        let acc: i32 = wr.iter().zip(&q).map(|(&a, &b)| i32::from(a) * b).sum();
        *yr = acc as f32 * deq;
    }
}

/// Scalar reference GEMM: plain loops over the int8 weights, then the
/// epilogue. Shapes already checked.
pub(crate) fn gemm_ref(w: &QMatrixI8, x: &[f32], n: usize, y: &mut [f32], epi: &Epilogue) {
    if n == 0 {
        return;
    }
    let (inv, deq, _) = col_scales(x, n, w.weight_scale());
    let q: Vec<i32> = x
        .chunks_exact(n)
        .flat_map(|row| row.iter().zip(&inv).map(|(&v, &i)| i32::from(quant(v, i))))
        .collect();
    let wq = w.to_i8();
    let mut acc = vec![0i32; n];
    for (yr, wr) in y.chunks_exact_mut(n).zip(wq.chunks_exact(w.cols())) {
        acc.fill(0);
        for (&wk, qk) in wr.iter().zip(q.chunks_exact(n)) {
            for (a, &v) in acc.iter_mut().zip(qk) {
                *a += i32::from(wk) * v;
            }
        }
        for ((o, &a), &d) in yr.iter_mut().zip(&acc).zip(&deq) {
            *o = a as f32 * d;
        }
    }
    epi.apply(y, n, 0..w.rows(), 0..n, n);
}
