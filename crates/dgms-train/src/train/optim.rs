//! SGD with momentum, Nesterov and weight decay, with its own state (one
//! momentum buffer per parameter) so that checkpoints can save and restore
//! it exactly. candle-nn's SGD has no momentum.
//!
//! Update, as PyTorch's `torch.optim.SGD` with dampening 0:
//! `g = grad + wd * p` (only for parameters with decay);
//! `buf = g` on a parameter's first step, else `buf = momentum * buf + g`;
//! `d = g + momentum * buf` (Nesterov) or `d = buf`; `p -= lr * d`.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::{Result, TrainError};

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
        for (param, buffer) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            let p = param.var.as_tensor().detach();
            let mut g = grad.detach();
            if param.decay && self.cfg.weight_decay != 0.0 {
                g = (g + (&p * self.cfg.weight_decay)?)?;
            }
            let d = if self.momentum != 0.0 {
                let buf = match buffer.take() {
                    None => g.clone(),
                    Some(b) => ((b * self.momentum)? + &g)?,
                };
                let d = if self.cfg.nesterov {
                    (&g + (&buf * self.momentum)?)?
                } else {
                    buf.clone()
                };
                *buffer = Some(buf);
                d
            } else {
                g
            };
            param
                .var
                .set(&(p - (d * self.lr)?)?)
                .map_err(|source| TrainError::Update {
                    param: param.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The momentum buffers, named `optim.momentum.<param name>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|(p, b)| {
                b.as_ref()
                    .map(|b| (format!("{STATE_PREFIX}{}", p.name), b.clone()))
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
                    Some(t.to_dtype(param.var.dtype())?)
                }
            };
        }
        Ok(())
    }
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
        let state: HashMap<String, Tensor> = sgd.state().into_iter().collect();
        assert_eq!(state.len(), 1);
        let mut restored = Sgd::new(vec![param], cfg);
        restored.load_state(&state).unwrap();
        assert_eq!(
            restored.state()[0].1.to_vec1::<f32>().unwrap(),
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
}
