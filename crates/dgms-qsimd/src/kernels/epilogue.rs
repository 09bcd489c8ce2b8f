//! The output stage fused into GEMM / convolution: folded batch norm,
//! residual add and the activation (ReLU or ReLU6).

use crate::error::{QsimdError, Result};

/// The activation applied last in an [`Epilogue`]: one of them, so an
/// output stage cannot ask for both ReLU and ReLU6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// y = v.
    #[default]
    None,
    /// Clamp negative outputs to 0.
    Relu,
    /// Clamp outputs to [0, 6] (MobileNetV2).
    Relu6,
}

/// `y = act(acc * scale[row] + shift[row] + residual[row, col])`, each
/// part optional. `scale`/`shift` have one entry per output row (channel),
/// `residual` is laid out like the output (rows x n).
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Per-row multiplier (folded batch-norm gamma / sigma).
    pub scale: Option<&'a [f32]>,
    /// Per-row offset (bias or folded batch-norm beta).
    pub shift: Option<&'a [f32]>,
    /// Added after scale and shift, rows x n row-major.
    pub residual: Option<&'a [f32]>,
    /// Applied last.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// No output transform: y = acc.
    pub const NONE: Epilogue<'static> = Epilogue {
        scale: None,
        shift: None,
        residual: None,
        activation: Activation::None,
    };

    /// Whether applying it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.scale.is_none()
            && self.shift.is_none()
            && self.residual.is_none()
            && self.activation == Activation::None
    }

    /// Checks the lengths against an output of `rows` x `n`.
    pub(crate) fn validate(&self, op: &'static str, rows: usize, n: usize) -> Result<()> {
        let check = |what: &'static str, v: Option<&[f32]>, expected: usize| match v {
            Some(s) if s.len() != expected => Err(QsimdError::ShapeMismatch {
                op,
                what,
                expected,
                got: s.len(),
            }),
            _ => Ok(()),
        };
        check("epilogue scale", self.scale, rows)?;
        check("epilogue shift", self.shift, rows)?;
        check("epilogue residual", self.residual, rows * n)
    }

    /// Applies the stage to a block of an output that is `n` wide: `buf`
    /// holds output rows `rows` (one every `ldb` values), columns `cols`
    /// of each starting at `buf[(r - rows.start) * ldb]`.
    pub(crate) fn apply(
        &self,
        buf: &mut [f32],
        ldb: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        n: usize,
    ) {
        if self.is_identity() {
            return;
        }
        let width = cols.len();
        for (r, row) in rows.zip(buf.chunks_mut(ldb.max(1))) {
            let out = &mut row[..width];
            self.row(r, cols.clone(), n, out);
        }
    }

    /// The stage of output row `r`, columns `cols` (`out.len()` of them)
    /// of an output `n` wide, in one pass over `out`.
    ///
    /// The stage is one pass rather than one per part, but the same
    /// operations in the same order per value: a missing scale is a
    /// multiply by 1 and a missing shift an add of -0.0, both exact
    /// identities in IEEE arithmetic (-0.0 keeps the sign of a zero,
    /// which +0.0 would not), so the result is bit for bit that of
    /// applying the parts one after the other.
    #[inline(always)]
    pub(crate) fn row(&self, r: usize, cols: std::ops::Range<usize>, n: usize, out: &mut [f32]) {
        let s = self.scale.map_or(1.0, |s| s[r]);
        let b = self.shift.map_or(-0.0, |b| b[r]);
        let res = self
            .residual
            .map(|res| &res[r * n + cols.start..r * n + cols.end]);
        match (res, self.activation) {
            (None, Activation::None) => stage(out, &[], s, b, |v| v),
            (None, Activation::Relu) => stage(out, &[], s, b, |v| v.max(0.0)),
            (None, Activation::Relu6) => stage(out, &[], s, b, |v| v.clamp(0.0, 6.0)),
            (Some(res), Activation::None) => stage(out, res, s, b, |v| v),
            (Some(res), Activation::Relu) => stage(out, res, s, b, |v| v.max(0.0)),
            (Some(res), Activation::Relu6) => stage(out, res, s, b, |v| v.clamp(0.0, 6.0)),
        }
    }
}

/// One output row's stage: `act(v * s + b [+ res])`, monomorphised
/// per activation and residual presence so the loop vectorises.
#[inline(always)]
fn stage(out: &mut [f32], res: &[f32], s: f32, b: f32, act: impl Fn(f32) -> f32) {
    if res.is_empty() {
        for v in out.iter_mut() {
            *v = act(*v * s + b);
        }
    } else {
        for (v, &e) in out.iter_mut().zip(res) {
            *v = act(*v * s + b + e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Activation, Epilogue};

    #[test]
    fn relu6_clamps_to_zero_and_six_after_scale_shift_and_residual() {
        let (scale, shift, res) = ([2.0], [1.0], [0.5, 0.5, 0.5]);
        let epi = Epilogue {
            scale: Some(&scale),
            shift: Some(&shift),
            residual: Some(&res),
            activation: Activation::Relu6,
        };
        assert!(!epi.is_identity());
        let mut y = [-3.0, 1.0, 4.0];
        epi.apply(&mut y, 3, 0..1, 0..3, 3);
        // 2x + 1 + 0.5: -4.5, 3.5, 9.5 -> 0, 3.5, 6.
        assert_eq!(y, [0.0, 3.5, 6.0]);
    }

    /// The one-pass stage gives the bits of the parts applied one after
    /// the other, for every combination of parts (a missing scale or
    /// shift must not touch a value: -0.0 stays -0.0).
    #[test]
    fn one_pass_equals_the_parts_in_sequence_bit_for_bit() {
        let vals = [
            -0.0f32,
            0.0,
            1.5,
            -2.25,
            f32::MIN_POSITIVE / 4.0,
            -f32::MIN_POSITIVE / 4.0,
            f32::INFINITY,
            f32::NAN,
            7.0,
        ];
        let n = vals.len();
        let (scale, shift, res) = ([0.75f32], [-0.5f32], vals.map(|v| v * -0.5));
        for mask in 0..8 {
            for act in [Activation::None, Activation::Relu, Activation::Relu6] {
                let epi = Epilogue {
                    scale: (mask & 1 != 0).then_some(&scale[..]),
                    shift: (mask & 2 != 0).then_some(&shift[..]),
                    residual: (mask & 4 != 0).then_some(&res[..]),
                    activation: act,
                };
                let mut y = vals;
                epi.apply(&mut y, n, 0..1, 0..n, n);
                for (i, (&got, &v)) in y.iter().zip(&vals).enumerate() {
                    let mut e = v;
                    if mask & 1 != 0 {
                        e *= scale[0];
                    }
                    if mask & 2 != 0 {
                        e += shift[0];
                    }
                    if mask & 4 != 0 {
                        e += res[i];
                    }
                    e = match act {
                        Activation::None => e,
                        Activation::Relu => e.max(0.0),
                        Activation::Relu6 => e.clamp(0.0, 6.0),
                    };
                    // NaN's sign and payload are not specified (the
                    // compiler folds constants to another NaN than the
                    // CPU makes).
                    let same = got.to_bits() == e.to_bits() || (got.is_nan() && e.is_nan());
                    assert!(same, "mask {mask}, {act:?}, value {v}: {got} vs {e}");
                }
            }
        }
    }
}
