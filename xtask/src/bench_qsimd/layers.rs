//! Per-layer measurements: every distinct conv shape of torchvision's
//! ResNet-18 at 224 x 224 and a 4096 x 4096 linear layer, as bit-packed
//! qsimd kernels (per ISA) against candle's f32 conv and the `gemm` crate's
//! f32 GEMM (reached through candle's CPU matmul, which is that crate) on
//! the same shapes.

use anyhow::Result;
use candle_core::{Device, Tensor};
use dgms_qsimd::kernels::{
    self, ConvGeometry, DenseMatrix, Epilogue, Isa, QMatrix, QMatrix2, QMatrixI8,
};

use super::{time_ms, Row};

/// One conv layer of ResNet-18 at 224 x 224 input.
pub struct ConvCase {
    pub name: &'static str,
    pub c_in: usize,
    pub c_out: usize,
    pub size: usize,
    pub k: usize,
    pub stride: usize,
}

impl ConvCase {
    fn geometry(&self) -> ConvGeometry {
        ConvGeometry {
            c: self.c_in,
            h: self.size,
            w: self.size,
            kh: self.k,
            kw: self.k,
            stride: self.stride,
            pad: self.k / 2,
        }
    }
}

/// The distinct conv shapes of ResNet-18 (the first conv stays f32 in a
/// DGMS model, but is listed for completeness).
pub const RESNET18_CONVS: [ConvCase; 11] = [
    conv("conv1", 3, 64, 224, 7, 2),
    conv("layer1.*.conv*", 64, 64, 56, 3, 1),
    conv("layer2.0.conv1", 64, 128, 56, 3, 2),
    conv("layer2.0.downsample", 64, 128, 56, 1, 2),
    conv("layer2.*.conv*", 128, 128, 28, 3, 1),
    conv("layer3.0.conv1", 128, 256, 28, 3, 2),
    conv("layer3.0.downsample", 128, 256, 28, 1, 2),
    conv("layer3.*.conv*", 256, 256, 14, 3, 1),
    conv("layer4.0.conv1", 256, 512, 14, 3, 2),
    conv("layer4.0.downsample", 256, 512, 14, 1, 2),
    conv("layer4.*.conv*", 512, 512, 7, 3, 1),
];

const fn conv(
    name: &'static str,
    c_in: usize,
    c_out: usize,
    size: usize,
    k: usize,
    stride: usize,
) -> ConvCase {
    ConvCase {
        name,
        c_in,
        c_out,
        size,
        k,
        stride,
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// K = 16 indices with index 0 (the pruned component) on about 10 % of
/// the weights, and a codebook with entry 0 = 0.
pub fn quantized(rows: usize, cols: usize, k: usize, seed: u64) -> Result<(QMatrix, Vec<f32>)> {
    let raw = values(rows * cols, seed);
    let indices: Vec<u8> = raw
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * k as f32).min(k as f32 - 1.0) as u8)
        .collect();
    let mut codebook: Vec<f32> = (0..k).map(|i| (i as f32 - k as f32 / 2.0) * 0.01).collect();
    codebook[0] = 0.0;
    let q = QMatrix::new(rows, cols, &indices, &codebook)?;
    let dense = q.to_dense();
    Ok((q, dense))
}

/// The ISAs this CPU runs, scalar only when asked for (it is slow).
pub fn isas(with_scalar: bool) -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|&i| with_scalar || i != Isa::Scalar)
        .collect()
}

/// Conv layers at `batch`, `threads` (the process's thread count).
pub fn conv_rows(batch: usize, threads: usize, with_scalar: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, case) in RESNET18_CONVS.iter().enumerate() {
        let g = case.geometry();
        let (q, dense) = quantized(case.c_out, g.patch_len(), 16, i as u64 + 1)?;
        let input = values(batch * g.input_len(), 100 + i as u64);
        let out_len = case.c_out * g.out_pixels();
        let mut out = vec![0f32; batch * out_len];
        let mut push = |imp: String, ms: f64| {
            rows.push(Row::new("conv", case.name, batch, threads, imp, ms));
        };

        for isa in isas(with_scalar && batch == 1) {
            let ms = time_ms(|| {
                for (x, y) in input
                    .chunks_exact(g.input_len())
                    .zip(out.chunks_exact_mut(out_len))
                {
                    kernels::conv2d(isa, &q, x, &g, y, &Epilogue::NONE)?;
                }
                Ok(())
            })?;
            push(format!("qsimd-exact-{isa}"), ms);
        }
        let q8 = QMatrixI8::from_qmatrix(&q)?;
        for isa in isas(with_scalar && batch == 1) {
            let ms = time_ms(|| {
                for (x, y) in input
                    .chunks_exact(g.input_len())
                    .zip(out.chunks_exact_mut(out_len))
                {
                    kernels::conv2d_i8(isa, &q8, x, &g, y, &Epilogue::NONE)?;
                }
                Ok(())
            })?;
            push(format!("qsimd-int8-{isa}"), ms);
        }

        // candle f32 conv on the decoded weights (N images at once).
        let dev = Device::Cpu;
        let w = Tensor::from_vec(dense.clone(), (case.c_out, case.c_in, case.k, case.k), &dev)?;
        let x = Tensor::from_vec(
            input.clone(),
            (batch, case.c_in, case.size, case.size),
            &dev,
        )?;
        let ms = time_ms(|| {
            x.conv2d(&w, case.k / 2, case.stride, 1, 1)?;
            Ok(())
        })?;
        push("candle-f32".into(), ms);

        // The gemm crate's f32 GEMM on the im2col matrices (im2col not timed).
        let mut cols = vec![0f32; g.patch_len() * g.out_pixels()];
        let mut col_tensors = Vec::new();
        for x in input.chunks_exact(g.input_len()) {
            kernels::im2col(x, &g, &mut cols)?;
            col_tensors.push(Tensor::from_vec(
                cols.clone(),
                (g.patch_len(), g.out_pixels()),
                &dev,
            )?);
        }
        let w2 = w.reshape((case.c_out, g.patch_len()))?;
        let ms = time_ms(|| {
            for c in &col_tensors {
                w2.matmul(c)?;
            }
            Ok(())
        })?;
        push("gemm-f32".into(), ms);
    }
    Ok(rows)
}

/// The 4096 x 4096 linear layer (and ResNet-18's 512 -> 1000 classifier)
/// at batch 1: qsimd exact (K = 16, 4-bit layout), int8 and 2-bit
/// table-lookup (K = 4) GEMV per ISA, the project's own f32 GEMV on the
/// best ISA, and candle's f32 matmul.
pub fn gemv_rows(threads: usize, with_scalar: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (name, r, c) in [("linear 4096x4096", 4096, 4096), ("fc 1000x512", 1000, 512)] {
        let (q, dense) = quantized(r, c, 16, 7)?;
        let x = values(c, 8);
        let mut y = vec![0f32; r];
        let mut push = |imp: String, ms: f64| {
            rows.push(Row::new("gemv", name, 1, threads, imp, ms));
        };
        for isa in isas(with_scalar) {
            let ms = time_ms(|| Ok(kernels::gemv(isa, &q, &x, &mut y)?))?;
            push(format!("qsimd-exact-{isa}"), ms);
        }
        let q8 = QMatrixI8::from_qmatrix(&q)?;
        for isa in isas(with_scalar) {
            let ms = time_ms(|| Ok(kernels::gemv_i8(isa, &q8, &x, &mut y)?))?;
            push(format!("qsimd-int8-{isa}"), ms);
        }
        // The 2-bit table-lookup layout, on a K = 4 matrix of the same shape.
        let (q4, _) = quantized(r, c, 4, 7)?;
        let q2 = QMatrix2::new(r, c, &q4.to_indices(), q4.codebook())?;
        for isa in isas(with_scalar) {
            let ms = time_ms(|| Ok(kernels::gemv_2bit(isa, &q2, &x, &mut y)?))?;
            push(format!("qsimd-2bit-{isa}"), ms);
        }
        let best = Isa::detect();
        let dm = DenseMatrix::new(&dense, r, c)?;
        let ms = time_ms(|| Ok(kernels::gemv_f32(best, &dm, &x, &mut y)?))?;
        push(format!("f32-gemv-{best}"), ms);
        let dev = Device::Cpu;
        let wt = Tensor::from_vec(dense.clone(), (r, c), &dev)?;
        let xt = Tensor::from_vec(x.clone(), (c, 1), &dev)?;
        let ms = time_ms(|| {
            wt.matmul(&xt)?;
            Ok(())
        })?;
        push("gemm-f32".into(), ms);
    }
    Ok(rows)
}
