//! The engine's program: a straight list of ops over numbered activation
//! slots, and its interpreter. Each op reads one or two slots and writes a
//! different one; the builder picks the slots so that nothing still needed
//! is overwritten, and sizes every slot for the largest value it holds.

use crate::error::{QsimdError, Result};
use crate::kernels::{
    depthwise_conv, gemm, gemm_f32, gemm_i8, Activation, ConvGeometry, DenseMatrix, Epilogue, Isa,
    QMatrix, QMatrixI8,
};

use super::ops::{self, Pool};

/// A layer's weight matrix (O x C*kh*kw, or classes x features).
#[derive(Debug)]
pub(crate) enum Weights {
    /// Codebook indices in the kernels' layout.
    Quant(QMatrix),
    /// The int8 fast path: int8 codebook, activations quantized per column.
    QuantI8(QMatrixI8),
    /// Full precision (first conv, classifier; every layer in reference mode).
    Dense {
        data: Vec<f32>,
        rows: usize,
        cols: usize,
    },
}

impl Weights {
    /// Y = epilogue(W X) with X cols x n.
    fn gemm(&self, isa: Isa, x: &[f32], n: usize, y: &mut [f32], epi: &Epilogue) -> Result<()> {
        match self {
            Weights::Quant(q) => gemm(isa, q, x, n, y, epi),
            Weights::QuantI8(q) => gemm_i8(isa, q, x, n, y, epi),
            Weights::Dense { data, rows, cols } => {
                gemm_f32(isa, &DenseMatrix::new(data, *rows, *cols)?, x, n, y, epi)
            }
        }
    }

    /// The convolution of `n` images (C x N x H x W) with the im2col
    /// matrix packed straight from them.
    fn conv(
        &self,
        isa: Isa,
        geom: &ConvGeometry,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        epi: &Epilogue,
    ) -> Result<()> {
        match self {
            Weights::Quant(q) => geom.conv_batched(isa, q, x, n, y, epi),
            Weights::QuantI8(q) => geom.conv_batched_i8(isa, q, x, n, y, epi),
            Weights::Dense { data, rows, cols } => {
                let w = DenseMatrix::new(data, *rows, *cols)?;
                geom.conv_batched_f32(isa, &w, x, n, y, epi)
            }
        }
    }

    /// Bytes the weights take in memory (indices in the kernel layout, or f32).
    pub fn bytes(&self) -> usize {
        match self {
            Weights::Quant(q) => q.storage_bytes() + 4 * q.k(),
            Weights::QuantI8(q) => q.storage_bytes() + q.k(),
            Weights::Dense { data, .. } => 4 * data.len(),
        }
    }
}

/// A convolution with its fused output stage:
/// `dst = activation(conv(src) * scale + shift + residual)`.
#[derive(Debug)]
pub(crate) struct Conv {
    pub w: Weights,
    /// Geometry of one image (c, h, w of the input).
    pub geom: ConvGeometry,
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
    pub activation: Activation,
    pub residual: Option<usize>,
}

impl Conv {
    /// Whether the input is already the GEMM's right-hand side (1x1,
    /// stride 1, no padding), so no im2col buffer is needed.
    pub fn is_pointwise(&self) -> bool {
        let g = &self.geom;
        g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
    }

    /// im2col values per image (0 for a pointwise conv).
    pub fn cols_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.geom.patch_len() * self.geom.out_pixels()
        }
    }
}

/// A depthwise k x k convolution (odd k, pad k / 2, stride 1 or 2) with
/// its fused output stage `dst = activation(conv(src) * scale + shift)`;
/// the weights are C x k*k (always the exact path: there is no int8
/// depthwise kernel; `kernels/int8/dw_bound.rs` measures why: quantizing
/// its f32 input alone costs as long as the whole f32 kernel).
#[derive(Debug)]
pub(crate) struct Depthwise {
    pub w: Weights,
    /// Geometry of one image.
    pub geom: ConvGeometry,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub activation: Activation,
}

impl Depthwise {
    /// One image (C x H x W) into `out` (C x out_h x out_w).
    fn run_image(&self, isa: Isa, x: &[f32], out: &mut [f32]) -> Result<()> {
        let epi = Epilogue {
            scale: Some(&self.scale),
            shift: Some(&self.shift),
            residual: None,
            activation: self.activation,
        };
        match &self.w {
            Weights::Quant(q) => depthwise_conv(isa, q, x, &self.geom, out, &epi),
            Weights::Dense { data, .. } => {
                // The scalar oracle's loop, on the f32 taps.
                let kk = self.geom.kh * self.geom.kw;
                let tap = |ch: usize, t: usize| data[ch * kk + t];
                crate::kernels::depthwise_loop(tap, x, &self.geom, out);
                let n = self.geom.out_pixels();
                epi.apply(out, n, 0..self.geom.c, 0..n, n);
                Ok(())
            }
            // The builder never makes one (no int8 depthwise kernel).
            Weights::QuantI8(_) => Err(QsimdError::InvalidGeometry {
                op: "depthwise",
                reason: "int8 weights (the depthwise kernel is exact only)".into(),
            }),
        }
    }

    /// `n` images in the engine's C x N x H x W layout. One image is
    /// already CHW; a batch goes through per-image copies.
    fn run(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        if n == 1 {
            return self.run_image(isa, x, out);
        }
        let (c, hw, ohw) = (
            self.geom.c,
            self.geom.h * self.geom.w,
            self.geom.out_pixels(),
        );
        let (mut img, mut res) = (vec![0.0f32; c * hw], vec![0.0f32; c * ohw]);
        for b in 0..n {
            for ch in 0..c {
                let src = (ch * n + b) * hw;
                img[ch * hw..(ch + 1) * hw].copy_from_slice(&x[src..src + hw]);
            }
            self.run_image(isa, &img, &mut res)?;
            for ch in 0..c {
                let dst = (ch * n + b) * ohw;
                out[dst..dst + ohw].copy_from_slice(&res[ch * ohw..(ch + 1) * ohw]);
            }
        }
        Ok(())
    }
}

/// What an op computes.
#[derive(Debug)]
pub(crate) enum Kind {
    Conv(Box<Conv>),
    Depthwise(Box<Depthwise>),
    /// Max-pool each plane of h x w; optionally then `relu(v*scale + shift)`.
    MaxPool {
        h: usize,
        w: usize,
        pool: Pool,
        post: Option<(Vec<f32>, Vec<f32>)>,
    },
    /// Option-A shortcut of a c-channel h x w map.
    ShortcutA {
        c: usize,
        h: usize,
        w: usize,
        stride: usize,
        pad: usize,
    },
    /// Mean of every plane of `hw` values.
    GlobalAvgPool {
        hw: usize,
    },
    /// C x N x HW to (C*HW) x N.
    Flatten {
        c: usize,
        hw: usize,
    },
    /// Classifier: classes x N = W (features x N) + bias.
    Linear {
        w: Weights,
        bias: Vec<f32>,
    },
}

/// One step: `kind` from slot `src` into slot `dst`, with the per-image
/// lengths of both (slots are longer; the kernels check exact lengths).
#[derive(Debug)]
pub(crate) struct Op {
    /// The layer it implements, for error messages.
    pub name: String,
    pub kind: Kind,
    pub src: usize,
    pub dst: usize,
    pub in_len: usize,
    pub out_len: usize,
}

/// Activation buffers, allocated once and grown only for a larger batch.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    pub slots: Vec<Vec<f32>>,
    pub cols: Vec<f32>,
    /// Images the buffers are sized for.
    pub images: usize,
}

impl Workspace {
    /// Makes room for `n` images; never shrinks.
    pub fn reserve(&mut self, slot_lens: &[usize], cols_len: usize, n: usize) {
        if n <= self.images && self.slots.len() == slot_lens.len() {
            return;
        }
        self.slots.resize_with(slot_lens.len(), Vec::new);
        for (slot, &len) in self.slots.iter_mut().zip(slot_lens) {
            slot.resize(len * n, 0.0);
        }
        self.cols.resize(cols_len * n, 0.0);
        self.images = n;
    }
}

/// Runs `op` on `n` images.
pub(crate) fn execute(op: &Op, isa: Isa, ws: &mut Workspace, n: usize) -> Result<()> {
    // Moving the destination out of the slot list lets the sources be
    // borrowed from it at the same time (no copy: a Vec is three words).
    let mut dst = std::mem::take(&mut ws.slots[op.dst]);
    let result = run_op(op, isa, ws, n, &mut dst[..op.out_len * n]);
    ws.slots[op.dst] = dst;
    result
}

fn run_op(op: &Op, isa: Isa, ws: &mut Workspace, n: usize, out: &mut [f32]) -> Result<()> {
    let src = &ws.slots[op.src][..op.in_len * n];
    match &op.kind {
        Kind::Conv(conv) => {
            let residual = conv.residual.map(|r| &ws.slots[r][..op.out_len * n]);
            let epi = Epilogue {
                scale: conv.scale.as_deref(),
                shift: conv.shift.as_deref(),
                residual,
                activation: conv.activation,
            };
            let cols_n = n * conv.geom.out_pixels();
            if conv.is_pointwise() {
                conv.w.gemm(isa, src, cols_n, out, &epi)
            } else {
                conv.w.conv(isa, &conv.geom, src, n, out, &epi)
            }
        }
        Kind::Depthwise(dw) => dw.run(isa, src, n, out),
        Kind::MaxPool { h, w, pool, post } => {
            let post = post.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice(), n));
            ops::max_pool(isa.check()?, src, (*h, *w), *pool, post, out);
            Ok(())
        }
        Kind::ShortcutA {
            c,
            h,
            w,
            stride,
            pad,
        } => {
            ops::shortcut_a(src, (*c, n, *h, *w), *stride, *pad, out);
            Ok(())
        }
        Kind::GlobalAvgPool { hw } => {
            ops::global_avg_pool(src, *hw, out);
            Ok(())
        }
        Kind::Flatten { c, hw } => {
            ops::flatten(src, (*c, n, *hw), out);
            Ok(())
        }
        Kind::Linear { w, bias } => {
            let epi = Epilogue {
                shift: Some(bias),
                ..Epilogue::NONE
            };
            w.gemm(isa, src, n, out, &epi)
        }
    }
}
