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

impl Activation {
    /// Applies the activation to every value of `out`.
    fn apply(self, out: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => out.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => out.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
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
            if let Some(s) = self.scale {
                let s = s[r];
                out.iter_mut().for_each(|v| *v *= s);
            }
            if let Some(b) = self.shift {
                let b = b[r];
                out.iter_mut().for_each(|v| *v += b);
            }
            if let Some(res) = self.residual {
                let res = &res[r * n + cols.start..r * n + cols.end];
                out.iter_mut().zip(res).for_each(|(v, &e)| *v += e);
            }
            self.activation.apply(out);
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
}
