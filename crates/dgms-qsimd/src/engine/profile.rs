//! Per-op wall times of one pass, for finding where a model's time goes
//! (`cargo xtask bench-qsimd --profile`).

use std::time::Instant;

use super::graph::{self, Kind};
use super::{on_pool, ops, Engine};
use crate::error::{QsimdError, Result};

/// The time of one op of [`Engine::profile`].
#[derive(Clone, Debug)]
pub struct OpTime {
    /// The layer the op implements.
    pub name: String,
    /// What kind of op it is: "conv1x1", "conv3x3 s2", "depthwise3x3",
    /// "maxpool", "avgpool", "flatten", "linear", "shortcut".
    pub kind: String,
    /// Wall time in milliseconds.
    pub ms: f64,
}

impl Engine {
    /// Runs `n` images (as [`Engine::run`]) and returns the wall time of
    /// every op, in order. The input layout change and the logits'
    /// transpose are not timed.
    pub fn profile(&mut self, input: &[f32], n: usize) -> Result<Vec<OpTime>> {
        let [c, h, w] = self.input_shape;
        if n.checked_mul(c * h * w) != Some(input.len()) || n > self.max_images_per_pass() {
            return Err(QsimdError::Input {
                reason: format!(
                    "{} values for a profiled pass of {n} images of {c}x{h}x{w}",
                    input.len()
                ),
            });
        }
        self.ws.reserve(&self.slot_lens, self.cols_len, n);
        ops::nchw_to_cnhw(input, (n, c, h * w), &mut self.ws.slots[0][..input.len()]);
        let mut times = Vec::with_capacity(self.ops.len());
        // On the pool, as `Engine::run` runs its passes.
        on_pool(|| -> Result<()> {
            for op in &self.ops {
                let t = Instant::now();
                graph::execute(op, self.isa, &mut self.ws, n).map_err(|e| QsimdError::InGraph {
                    arch: self.arch.clone(),
                    layer: op.name.clone(),
                    source: Box::new(e),
                })?;
                times.push(OpTime {
                    name: op.name.clone(),
                    kind: kind_name(&op.kind),
                    ms: t.elapsed().as_secs_f64() * 1e3,
                });
            }
            Ok(())
        })?;
        Ok(times)
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Conv(c) => {
            let g = &c.geom;
            let stride = if g.stride == 1 {
                String::new()
            } else {
                format!(" s{}", g.stride)
            };
            format!("conv{}x{}{stride}", g.kh, g.kw)
        }
        Kind::Depthwise(d) => format!("depthwise{}x{}", d.geom.kh, d.geom.kw),
        Kind::MaxPool { .. } => "maxpool".into(),
        Kind::ShortcutA { .. } => "shortcut".into(),
        Kind::GlobalAvgPool { .. } => "avgpool".into(),
        Kind::Flatten { .. } => "flatten".into(),
        Kind::Linear { .. } => "linear".into(),
    }
}
