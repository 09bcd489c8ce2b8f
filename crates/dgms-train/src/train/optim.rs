//! SGD with momentum, Nesterov and weight decay, with its own state (one
//! momentum buffer per parameter) so that checkpoints can save and restore
//! it exactly. candle-nn's SGD has no momentum.
//!
//! Update, as PyTorch's `torch.optim.SGD` with dampening 0:
//! `g = grad + wd * p` (only for parameters with decay);
//! `buf = g` on a parameter's first step, else `buf = momentum * buf + g`;
//! `d = g + momentum * buf` (Nesterov) or `d = buf`; `p -= lr * d`.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Tensor, Var};

use crate::error::{Result, TrainError};
use crate::train::sgd_update::{update_buffer, update_param, Hyper};

/// One trained tensor.
#[derive(Clone, Debug)]
pub struct Param {
    /// Checkpoint name (e.g. `layer1.0.conv1.weight`, `layer1.0.conv1.mixture.mu`).
    pub name: String,
    pub var: Var,
    /// Whether weight decay applies (off for batch-norm parameters' running
    /// statistics, which are never trained, and by default for mixtures).
    pub decay: bool,
}

/// Hyper-parameters of [`Sgd`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

/// SGD with momentum state.
pub struct Sgd {
    params: Vec<Param>,
    buffers: Vec<Option<Tensor>>,
    cfg: SgdConfig,
    lr: f64,
    momentum: f64,
    /// In-place passes of [`crate::train::sgd_update`] for f32 CPU
    /// parameters (off only in tests, to compare with the composed ops).
    in_place: bool,
}

/// Prefix of the momentum buffers' names in checkpoints.
pub const STATE_PREFIX: &str = "optim.momentum.";

impl Sgd {
    pub fn new(params: Vec<Param>, cfg: SgdConfig) -> Self {
        let buffers = vec![None; params.len()];
        Self {
            momentum: cfg.momentum,
            params,
            buffers,
            cfg,
            lr: 0.0,
            in_place: true,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Momentum for the next steps (the one-cycle schedule cycles it).
    pub fn set_momentum(&mut self, momentum: f64) {
        self.momentum = momentum;
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One update from the gradients in `grads`; parameters without a
    /// gradient are left alone (as PyTorch does for `grad is None`).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (cfg, lr, momentum, in_place) = (&self.cfg, self.lr, self.momentum, self.in_place);
        for (param, buffer) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            let p = param.var.as_tensor();
            let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
            let fast = in_place
                && f32_cpu(p)
                && f32_cpu(grad)
                && p.is_contiguous()
                && buffer.as_ref().is_none_or(f32_cpu);
            let decay = (param.decay && cfg.weight_decay != 0.0).then_some(cfg.weight_decay);
            let updated = if fast {
                let h = Hyper {
                    lr: lr as f32,
                    momentum: momentum as f32,
                    decay: decay.map(|wd| wd as f32),
                    nesterov: cfg.nesterov,
                };
                step_in_place(p, grad, buffer, h, momentum != 0.0)
            } else {
                step_composed(p, grad, buffer, (lr, momentum, decay, cfg.nesterov))
                    .and_then(|new| param.var.set(&new))
            };
            updated.map_err(|source| TrainError::Update {
                param: param.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Copies of the momentum buffers (which steps update in place),
    /// named `optim.momentum.<param name>`.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|(p, b)| {
                b.as_ref()
                    .map(|b| Ok((format!("{STATE_PREFIX}{}", p.name), b.copy()?)))
            })
            .collect()
    }

    /// Restores the buffers saved by [`Self::state`]; a buffer whose shape
    /// differs from its parameter's is an error naming it.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (param, buffer) in self.params.iter().zip(self.buffers.iter_mut()) {
            let key = format!("{STATE_PREFIX}{}", param.name);
            *buffer = match tensors.get(&key) {
                None => None,
                Some(t) => {
                    if t.dims() != param.var.dims() {
                        return Err(TrainError::OptimizerState {
                            key,
                            found: t.dims().to_vec(),
                            expected: param.var.dims().to_vec(),
                        });
                    }
                    // A copy (steps update the buffer in place), on the
                    // parameter's device (checkpoints load on the host).
                    Some(
                        t.to_dtype(param.var.dtype())?
                            .to_device(param.var.device())?
                            .copy()?,
                    )
                }
            };
        }
        Ok(())
    }
}

/// One step through the in-place passes; creates the buffer on the
/// parameter's first step.
fn step_in_place(
    p: &Tensor,
    grad: &Tensor,
    buffer: &mut Option<Tensor>,
    h: Hyper,
    with_momentum: bool,
) -> candle_core::Result<()> {
    let grad = grad.contiguous()?;
    if !with_momentum {
        return update_param(p, &grad, None, h);
    }
    let first = buffer.is_none();
    let buf = match buffer.take() {
        Some(b) => b.contiguous()?,
        None => p.zeros_like()?,
    };
    update_buffer(&buf, &grad, p, h, first)?;
    update_param(p, &grad, Some(&buf), h)?;
    *buffer = Some(buf);
    Ok(())
}

/// The new parameter value from candle tensor ops (any dtype or device);
/// updates the buffer.
fn step_composed(
    p: &Tensor,
    grad: &Tensor,
    buffer: &mut Option<Tensor>,
    (lr, momentum, decay, nesterov): (f64, f64, Option<f64>, bool),
) -> candle_core::Result<Tensor> {
    let p = p.detach();
    let mut g = grad.detach();
    if let Some(wd) = decay {
        g = (g + (&p * wd)?)?;
    }
    let d = if momentum != 0.0 {
        let buf = match buffer.take() {
            None => g.clone(),
            Some(b) => ((b * momentum)? + &g)?,
        };
        let d = if nesterov {
            (&g + (&buf * momentum)?)?
        } else {
            buf.clone()
        };
        *buffer = Some(buf);
        d
    } else {
        g
    };
    p - (d * lr)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(nesterov: bool, decay: bool) -> Vec<f32> {
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let mut sgd = Sgd::new(
            vec![Param {
                name: "w".into(),
                var: var.clone(),
                decay,
            }],
            SgdConfig {
                momentum: 0.9,
                nesterov,
                weight_decay: 0.1,
            },
        );
        sgd.set_lr(0.5);
        for _ in 0..2 {
            // L = sum(w^2) / 2, so grad = w.
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            sgd.step(&loss.backward().unwrap()).unwrap();
        }
        var.as_tensor().to_vec1().unwrap()
    }

    /// Two steps worked out by hand from the PyTorch update rule.
    #[test]
    fn matches_pytorch_update_rule() {
        // Plain momentum, no decay, w0 = 1: g0 = 1, buf = 1, w1 = 0.5;
        // g1 = 0.5, buf = 0.9 + 0.5 = 1.4, w2 = 0.5 - 0.7 = -0.2.
        assert!((run(false, false)[0] - (-0.2)).abs() < 1e-6);
        // Nesterov: d0 = 1 + 0.9 = 1.9, w1 = 1 - 0.95 = 0.05; g1 = 0.05,
        // buf = 0.9 * 1 + 0.05 = 0.95, d1 = 0.05 + 0.855 = 0.905,
        // w2 = 0.05 - 0.4525 = -0.4025.
        assert!((run(true, false)[0] - (-0.4025)).abs() < 1e-6);
        // Decay 0.1: g0 = 1.1, buf = 1.1, w1 = 0.45; g1 = 0.495,
        // buf = 0.99 + 0.495 = 1.485, w2 = 0.45 - 0.7425 = -0.2925.
        assert!((run(false, true)[0] - (-0.2925)).abs() < 1e-6);
    }

    #[test]
    fn state_round_trips_and_checks_shapes() {
        let var = Var::from_slice(&[1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let cfg = SgdConfig {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        };
        let param = Param {
            name: "w".into(),
            var: var.clone(),
            decay: true,
        };
        let mut sgd = Sgd::new(vec![param.clone()], cfg.clone());
        sgd.set_lr(0.1);
        let loss = var.as_tensor().sum_all().unwrap();
        sgd.step(&loss.backward().unwrap()).unwrap();
        let state: HashMap<String, Tensor> = sgd.state().unwrap().into_iter().collect();
        assert_eq!(state.len(), 1);
        let mut restored = Sgd::new(vec![param], cfg);
        restored.load_state(&state).unwrap();
        assert_eq!(
            restored.state().unwrap()[0].1.to_vec1::<f32>().unwrap(),
            vec![1.0, 1.0]
        );
        let bad: HashMap<String, Tensor> = [(
            "optim.momentum.w".to_string(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]
        .into();
        let msg = restored.load_state(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("optim.momentum.w") && msg.contains("[3]"),
            "{msg}"
        );
    }

    /// Parameters and momentum buffers after `steps` steps of random
    /// gradients (some of them ±0), in place or composed.
    fn random_steps(in_place: bool, cfg: &SgdConfig, steps: usize) -> Vec<Vec<u32>> {
        use dgms_test_support::rng::Lcg64;
        let dev = &Device::Cpu;
        let mut rng = Lcg64::scrambled(7);
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| match i % 11 {
                    // Signed zeros: the composed ops' `+ 0.0` turns -0 into +0.
                    0 => -0.0,
                    1 => 0.0,
                    _ => rng.unit(),
                })
                .collect()
        };
        let shapes: [&[usize]; 2] = [&[3, 5, 7], &[13]];
        let vars: Vec<Var> = shapes
            .iter()
            .map(|d| Var::from_vec(values(d.iter().product()), *d, dev).unwrap())
            .collect();
        let params = vars
            .iter()
            .enumerate()
            .map(|(i, v)| Param {
                name: format!("p{i}"),
                var: v.clone(),
                decay: i == 0,
            })
            .collect();
        let mut sgd = Sgd::new(params, cfg.clone());
        sgd.in_place = in_place;
        for step in 0..steps {
            sgd.set_lr(0.05 * (step + 1) as f64);
            // A cycled momentum, as the one-cycle schedule sets it.
            sgd.set_momentum(cfg.momentum * (1.0 - 0.05 * step as f64));
            // L = Σ p·r: the gradient is r.
            let mut loss = Tensor::zeros((), DType::F32, dev).unwrap();
            for v in &vars {
                let r = Tensor::from_vec(values(v.elem_count()), v.dims(), dev).unwrap();
                loss = (loss + (v.as_tensor() * r).unwrap().sum_all().unwrap()).unwrap();
            }
            sgd.step(&loss.backward().unwrap()).unwrap();
        }
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let mut out: Vec<Vec<u32>> = vars.iter().map(|v| bits(v.as_tensor())).collect();
        out.extend(sgd.state().unwrap().iter().map(|(_, b)| bits(b)));
        out
    }

    /// The in-place passes give the composed update's bits, parameters and
    /// buffers, over several steps, with and without Nesterov, decay and
    /// momentum.
    #[test]
    fn in_place_step_equals_composed_bit_for_bit() {
        for (momentum, nesterov, weight_decay) in [
            (0.9, true, 5e-4),
            (0.9, false, 5e-4),
            (0.9, true, 0.0),
            (0.0, false, 0.1),
        ] {
            let cfg = SgdConfig {
                momentum,
                nesterov,
                weight_decay,
            };
            let fused = random_steps(true, &cfg, 5);
            let composed = random_steps(false, &cfg, 5);
            assert_eq!(fused.len(), if momentum == 0.0 { 2 } else { 4 });
            assert_eq!(fused, composed, "{cfg:?}");
        }
    }
}
