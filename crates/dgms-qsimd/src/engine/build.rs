//! Turning a [`PackedModel`] into the engine's program: fusion of batch
//! norm / bias / residual / ReLU into the producing op, and slot
//! assignment. The tensor lookups with their shape checks (every error
//! names the layer) are in [`lookup`].

mod lookup;

use std::collections::BTreeSet;

use crate::error::Result;
use crate::format::PackedModel;
use crate::kernels::{Activation, ConvGeometry};

use super::graph::{Conv, Depthwise, Kind, Op};
use super::ops::Pool;
use super::Precision;

/// How the builder stores quantized layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightMode {
    /// In the kernels' index layout, for `precision`.
    Packed(Precision),
    /// Decoded to f32 by the format reader (the reference engine).
    Decoded,
}

/// An activation during building: its slot and per-image shape (c, h, w).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Act {
    pub slot: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Act {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// A convolution to add: weight name, output channels, square kernel,
/// stride, padding, and what is fused after it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvSpec<'a> {
    pub name: &'a str,
    pub out_c: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// The conv has a `NAME.bias` (VGG-Small).
    pub bias: bool,
    /// Batch norm applied to the output (`BN.scale`, `BN.shift`).
    pub bn: Option<&'a str>,
    /// The one activation of the fused output stage.
    pub activation: Activation,
}

/// A depthwise convolution to add: weight name, odd square kernel (pad
/// k / 2), stride, its batch norm and the activation fused after it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DepthwiseSpec<'a> {
    pub name: &'a str,
    pub k: usize,
    pub stride: usize,
    pub bn: &'a str,
    pub activation: Activation,
}

/// Builds the op list of one model.
pub(crate) struct Builder<'m> {
    model: &'m PackedModel,
    mode: WeightMode,
    used: BTreeSet<String>,
    pub ops: Vec<Op>,
    /// Per-image length of every slot (the largest value it holds).
    pub slot_lens: Vec<usize>,
    /// Per-image length of the largest im2col matrix.
    pub cols_len: usize,
}

impl<'m> Builder<'m> {
    pub fn new(model: &'m PackedModel, mode: WeightMode) -> Self {
        Self {
            model,
            mode,
            used: BTreeSet::new(),
            ops: Vec::new(),
            slot_lens: Vec::new(),
            cols_len: 0,
        }
    }

    /// The input activation (slot 0).
    pub fn input(&mut self, c: usize, h: usize, w: usize) -> Act {
        let act = Act { slot: 0, c, h, w };
        self.slot_lens = vec![act.len()];
        act
    }

    /// A slot not in `live`, sized for `len` values per image. Ops run in
    /// order, so every slot not holding a value still needed is free.
    fn alloc(&mut self, len: usize, live: &[usize]) -> usize {
        let slot = (0..)
            .find(|s| !live.contains(s))
            .unwrap_or(self.slot_lens.len());
        if slot >= self.slot_lens.len() {
            self.slot_lens.resize(slot + 1, 0);
        }
        self.slot_lens[slot] = self.slot_lens[slot].max(len);
        slot
    }

    fn push(&mut self, name: &str, kind: Kind, src: &Act, out: Act) -> Act {
        self.ops.push(Op {
            name: name.to_string(),
            kind,
            src: src.slot,
            dst: out.slot,
            in_len: src.len(),
            out_len: out.len(),
        });
        out
    }

    /// Adds a convolution of `x`; `residual` (same shape as the output) is
    /// added before the ReLU; `live` are the slots still needed afterwards.
    pub fn conv(
        &mut self,
        x: Act,
        spec: ConvSpec,
        residual: Option<Act>,
        live: &[usize],
    ) -> Result<Act> {
        let name = spec.name;
        let geom = ConvGeometry {
            c: x.c,
            h: x.h,
            w: x.w,
            kh: spec.k,
            kw: spec.k,
            stride: spec.stride,
            pad: spec.pad,
        };
        geom.validate("conv").map_err(|e| self.cause(name, e))?;
        let w = self.weights(name, &[spec.out_c, x.c, spec.k, spec.k])?;
        let bias = if spec.bias {
            Some(self.fp(name, &format!("{name}.bias"), &[spec.out_c])?)
        } else {
            None
        };
        let (scale, shift) = match (spec.bn, bias) {
            (Some(bn), bias) => {
                let (s, mut t) = self.bn(bn, spec.out_c)?;
                // (acc + b)*s + t = acc*s + (b*s + t): one fused stage.
                if let Some(b) = bias {
                    t.iter_mut()
                        .zip(b.iter().zip(&s))
                        .for_each(|(t, (b, s))| *t += b * s);
                }
                (Some(s), Some(t))
            }
            (None, bias) => (None, bias),
        };
        let (oh, ow) = (geom.out_h(), geom.out_w());
        if let Some(r) = residual {
            if (r.c, r.h, r.w) != (spec.out_c, oh, ow) {
                return Err(self.err(
                    name,
                    format!(
                        "shortcut is {}x{}x{}, the conv output {}x{oh}x{ow}",
                        r.c, r.h, r.w, spec.out_c
                    ),
                ));
            }
        }
        let mut keep = live.to_vec();
        keep.push(x.slot);
        keep.extend(residual.map(|r| r.slot));
        let out = Act {
            slot: self.alloc(spec.out_c * oh * ow, &keep),
            c: spec.out_c,
            h: oh,
            w: ow,
        };
        let conv = Conv {
            w,
            geom,
            scale,
            shift,
            activation: spec.activation,
            residual: residual.map(|r| r.slot),
        };
        self.cols_len = self.cols_len.max(conv.cols_len());
        Ok(self.push(name, Kind::Conv(Box::new(conv)), &x, out))
    }

    /// A depthwise `spec.k` x `spec.k` convolution `name` (weight
    /// [C, 1, k, k], pad k / 2) with batch norm `bn` and `spec.activation`.
    /// Its weights stay on the exact path in int8 mode (there is no int8
    /// depthwise kernel).
    pub fn depthwise(&mut self, x: Act, spec: DepthwiseSpec, live: &[usize]) -> Result<Act> {
        let name = spec.name;
        let geom = ConvGeometry {
            c: x.c,
            h: x.h,
            w: x.w,
            kh: spec.k,
            kw: spec.k,
            stride: spec.stride,
            pad: spec.k / 2,
        };
        geom.validate("depthwise")
            .map_err(|e| self.cause(name, e))?;
        let mode = self.mode;
        if mode == WeightMode::Packed(Precision::Int8) {
            self.mode = WeightMode::Packed(Precision::Exact);
        }
        let w = self.weights(name, &[x.c, 1, spec.k, spec.k]);
        self.mode = mode;
        let w = w?;
        let (scale, shift) = self.bn(spec.bn, x.c)?;
        let mut keep = live.to_vec();
        keep.push(x.slot);
        let (oh, ow) = (geom.out_h(), geom.out_w());
        let out = Act {
            slot: self.alloc(x.c * oh * ow, &keep),
            c: x.c,
            h: oh,
            w: ow,
        };
        let dw = Depthwise {
            w,
            geom,
            scale,
            shift,
            activation: spec.activation,
        };
        Ok(self.push(name, Kind::Depthwise(Box::new(dw)), &x, out))
    }

    /// Max-pooling, then optionally batch norm `post_bn` and ReLU.
    pub fn max_pool(
        &mut self,
        x: Act,
        name: &str,
        pool: Pool,
        post_bn: Option<&str>,
        live: &[usize],
    ) -> Result<Act> {
        let (oh, ow) = (pool.out_len(x.h), pool.out_len(x.w));
        if oh == 0 || ow == 0 || 2 * pool.pad > pool.k || pool.stride == 0 {
            return Err(self.err(name, format!("cannot pool a {}x{} map", x.h, x.w)));
        }
        let post = match post_bn {
            Some(bn) => Some(self.bn(bn, x.c)?),
            None => None,
        };
        let mut keep = live.to_vec();
        keep.push(x.slot);
        let out = Act {
            slot: self.alloc(x.c * oh * ow, &keep),
            c: x.c,
            h: oh,
            w: ow,
        };
        let kind = Kind::MaxPool {
            h: x.h,
            w: x.w,
            pool,
            post,
        };
        Ok(self.push(name, kind, &x, out))
    }

    /// Option-A shortcut to `out_c` channels (`(out_c - c) / 2` zero
    /// channels on each side).
    pub fn shortcut_a(
        &mut self,
        x: Act,
        name: &str,
        out_c: usize,
        stride: usize,
        live: &[usize],
    ) -> Result<Act> {
        let pad = out_c.saturating_sub(x.c) / 2;
        if x.c + 2 * pad != out_c {
            return Err(self.err(
                name,
                format!("option-A shortcut cannot pad {} channels to {out_c}", x.c),
            ));
        }
        let mut keep = live.to_vec();
        keep.push(x.slot);
        let (oh, ow) = ((x.h - 1) / stride + 1, (x.w - 1) / stride + 1);
        let out = Act {
            slot: self.alloc(out_c * oh * ow, &keep),
            c: out_c,
            h: oh,
            w: ow,
        };
        let kind = Kind::ShortcutA {
            c: x.c,
            h: x.h,
            w: x.w,
            stride,
            pad,
        };
        Ok(self.push(name, kind, &x, out))
    }

    /// Global average pooling: a c x 1 x 1 activation.
    pub fn global_avg_pool(&mut self, x: Act) -> Act {
        let out = Act {
            slot: self.alloc(x.c, &[x.slot]),
            c: x.c,
            h: 1,
            w: 1,
        };
        self.push("avgpool", Kind::GlobalAvgPool { hw: x.h * x.w }, &x, out)
    }

    /// Flattening for a classifier: a (c*h*w) x 1 x 1 activation.
    pub fn flatten(&mut self, x: Act) -> Act {
        let features = x.len();
        let out = Act {
            slot: self.alloc(features, &[x.slot]),
            c: features,
            h: 1,
            w: 1,
        };
        let kind = Kind::Flatten {
            c: x.c,
            hw: x.h * x.w,
        };
        self.push("flatten", kind, &x, out)
    }

    /// The classifier `name` (weight and bias) on a features x 1 x 1 input.
    pub fn linear(&mut self, x: Act, name: &str, classes: usize) -> Result<Act> {
        let w = self.weights(name, &[classes, x.c])?;
        let bias = self.fp(name, &format!("{name}.bias"), &[classes])?;
        let out = Act {
            slot: self.alloc(classes, &[x.slot]),
            c: classes,
            h: 1,
            w: 1,
        };
        Ok(self.push(name, Kind::Linear { w, bias }, &x, out))
    }
}
