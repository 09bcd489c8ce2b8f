//! [`GaussianMixture`]: one layer's mixture as candle `Var`s.

use candle_core::{DType, Device, Tensor, Var};

use crate::composed;
use crate::error::{CoreError, Result};
use crate::harden::HardenedLayer;
use crate::init::{init_params, InitConfig, InitOutcome};
use crate::kernel::{self, Prepared};
use crate::op::{with_cpu_slice, SoftWeightOp};
use crate::params::{check_finite_weights, MixtureParams, PackedLayout};
use crate::reference_rule::HardeningRule;

/// How a mixture's tensors are created.
#[derive(Clone, Debug)]
pub struct MixtureOptions {
    /// Train the temperature tau as well (off by default, see
    /// `docs/METHOD.md#mixture`).
    pub train_tau: bool,
    /// dtype of the parameters; must match the weights' (f32 or f64).
    pub dtype: DType,
    /// Device of the parameters; the layer's weights must be on the same
    /// one (off the CPU the soft weights use the composed ops, see
    /// [`GaussianMixture::soft_weights`]).
    pub device: Device,
}

impl Default for MixtureOptions {
    fn default() -> Self {
        Self {
            train_tau: false,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// The Gaussian mixture of one layer: component 0 is the zero component
/// (mean fixed at 0), components 1..K-1 have trained means.
///
/// The parameters are candle [`Var`]s so that an optimizer can train them
/// together with the layer's weights; [`Self::trainable_vars`] lists the
/// ones that receive gradients (tau only with `train_tau`).
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    name: String,
    k: usize,
    mu: Var,
    sigma: Var,
    pi: Var,
    pi_zero: Var,
    sigma_zero: Var,
    tau: Var,
    train_tau: bool,
}

/// Smallest width sigma (and temperature tau, when trained) a mixture keeps
/// during training: see [`GaussianMixture::project`].
pub const SIGMA_FLOOR: f64 = 1e-6;

/// Names of the mixture's tensors, as used in checkpoints (`<layer>.<name>`).
pub const PARAM_NAMES: [&str; 6] = ["mu", "sigma", "pi", "pi_zero", "sigma_zero", "tau"];

impl GaussianMixture {
    /// A mixture with the given values for the layer `name`.
    pub fn new(
        name: impl Into<String>,
        params: &MixtureParams,
        opts: &MixtureOptions,
    ) -> Result<Self> {
        let name = name.into();
        params.validate(&name)?;
        if !matches!(opts.dtype, DType::F32 | DType::F64) {
            return Err(CoreError::Unsupported {
                layer: name,
                what: format!("mixture dtype {:?}, expected f32 or f64", opts.dtype),
            });
        }
        let var = |v: &[f32]| -> Result<Var> {
            let t = Tensor::from_slice(v, v.len(), &opts.device)?.to_dtype(opts.dtype)?;
            Ok(Var::from_tensor(&t)?)
        };
        Ok(Self {
            k: params.k(),
            mu: var(&params.mu)?,
            sigma: var(&params.sigma)?,
            pi: var(&params.pi)?,
            pi_zero: var(&[params.pi_zero])?,
            sigma_zero: var(&[params.sigma_zero])?,
            tau: var(&[params.tau])?,
            train_tau: opts.train_tau,
            name,
        })
    }

    /// Initialises a mixture from a layer's pretrained weights
    /// (`docs/METHOD.md#initialisation`): k-means, zero component, pi and
    /// sigma.
    pub fn from_weights(
        name: impl Into<String>,
        weights: &Tensor,
        init: &InitConfig,
        opts: &MixtureOptions,
    ) -> Result<(Self, InitOutcome)> {
        let name = name.into();
        let host: Vec<f32> = weights.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let outcome = init_params(&name, &host, init)?;
        let mixture = Self::new(name, &outcome.params, opts)?;
        Ok((mixture, outcome))
    }

    /// The layer name given at construction (used in error messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of components K (zero component included).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Whether tau is trained.
    pub fn train_tau(&self) -> bool {
        self.train_tau
    }

    /// The parameters that receive gradients: mu, sigma, pi, pi_zero,
    /// sigma_zero, and tau when it is trained.
    pub fn trainable_vars(&self) -> Vec<Var> {
        let mut v = vec![
            self.mu.clone(),
            self.sigma.clone(),
            self.pi.clone(),
            self.pi_zero.clone(),
            self.sigma_zero.clone(),
        ];
        if self.train_tau {
            v.push(self.tau.clone());
        }
        v
    }

    /// Every tensor of the mixture with its name (see [`PARAM_NAMES`]), for
    /// checkpoints.
    pub fn named_vars(&self) -> Vec<(&'static str, Var)> {
        let vars = [
            &self.mu,
            &self.sigma,
            &self.pi,
            &self.pi_zero,
            &self.sigma_zero,
            &self.tau,
        ];
        PARAM_NAMES
            .iter()
            .zip(vars)
            .map(|(n, v)| (*n, v.clone()))
            .collect()
    }

    /// The current values, read back from the `Var`s (as f32).
    pub fn params(&self) -> Result<MixtureParams> {
        let read =
            |v: &Var| -> Result<Vec<f32>> { Ok(v.as_tensor().to_dtype(DType::F32)?.to_vec1()?) };
        Ok(MixtureParams {
            mu: read(&self.mu)?,
            sigma: read(&self.sigma)?,
            pi: read(&self.pi)?,
            pi_zero: read(&self.pi_zero)?[0],
            sigma_zero: read(&self.sigma_zero)?[0],
            tau: read(&self.tau)?[0],
        })
    }

    /// Overwrites the values (e.g. when resuming), keeping K.
    pub fn set_params(&self, params: &MixtureParams) -> Result<()> {
        params.validate(&self.name)?;
        if params.k() != self.k {
            return Err(CoreError::ShapeMismatch {
                layer: self.name.clone(),
                what: "mixture means".into(),
                got: vec![params.k() - 1],
                expected: vec![self.k - 1],
            });
        }
        let pairs: [(&Var, &[f32]); 6] = [
            (&self.mu, &params.mu),
            (&self.sigma, &params.sigma),
            (&self.pi, &params.pi),
            (&self.pi_zero, std::slice::from_ref(&params.pi_zero)),
            (&self.sigma_zero, std::slice::from_ref(&params.sigma_zero)),
            (&self.tau, std::slice::from_ref(&params.tau)),
        ];
        for (var, values) in pairs {
            let t =
                Tensor::from_slice(values, values.len(), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Projects the parameters back into their domain after an optimizer
    /// step: a width with |sigma| below [`SIGMA_FLOOR`] becomes
    /// `±SIGMA_FLOOR` (its sign kept, +1e-6 for an exact 0), and a trained
    /// tau below it becomes it.
    ///
    /// A width's sign is free, as in the reference, whose density uses only
    /// sigma^2: plain SGD on sigma can step through 0 (the gradient grows
    /// like 1/(tau sigma)), and the component then goes on with width
    /// |sigma|. Clamping at +1e-6 instead would freeze such a component as
    /// a spike that no weight joins, which happened to the zero component
    /// of a K = 4 layer within four steps (`docs/METHOD.md#training`).
    /// Returns how many values were moved.
    pub fn project(&self) -> Result<usize> {
        let mut moved = 0;
        for var in [&self.sigma, &self.sigma_zero] {
            let values: Vec<f64> = var.as_tensor().to_dtype(DType::F64)?.to_vec1()?;
            if values.iter().any(|v| v.abs() < SIGMA_FLOOR) {
                let lifted: Vec<f64> = values
                    .iter()
                    .map(|&v| {
                        if v.abs() >= SIGMA_FLOOR {
                            v
                        } else {
                            moved += 1;
                            if v < 0.0 {
                                -SIGMA_FLOOR
                            } else {
                                SIGMA_FLOOR
                            }
                        }
                    })
                    .collect();
                let t = Tensor::from_vec(lifted, values.len(), var.device())?;
                var.set(&t.to_dtype(var.dtype())?)?;
            }
        }
        if self.train_tau {
            let values: Vec<f64> = self.tau.as_tensor().to_dtype(DType::F64)?.to_vec1()?;
            let low = values.iter().filter(|&&v| v < SIGMA_FLOOR).count();
            if low > 0 {
                self.tau.set(&self.tau.as_tensor().maximum(SIGMA_FLOOR)?)?;
                moved += low;
            }
        }
        Ok(moved)
    }

    fn tau_tensor(&self) -> Tensor {
        if self.train_tau {
            self.tau.as_tensor().clone()
        } else {
            self.tau.as_tensor().detach()
        }
    }

    /// Packed parameters (see [`PackedLayout`]), differentiable w.r.t. the Vars.
    fn packed(&self) -> Result<Tensor> {
        Ok(Tensor::cat(
            &[
                self.pi_zero.as_tensor(),
                self.pi.as_tensor(),
                self.sigma_zero.as_tensor(),
                self.sigma.as_tensor(),
                self.mu.as_tensor(),
                &self.tau_tensor(),
            ],
            0,
        )?)
    }

    /// Validates the current parameters and the weights' dtype and values.
    fn check_inputs(&self, w: &Tensor) -> Result<()> {
        self.params()?.validate(&self.name)?;
        if w.dtype() != self.mu.dtype() {
            return Err(CoreError::Unsupported {
                layer: self.name.clone(),
                what: format!(
                    "weights are {:?} but the mixture is {:?}; expected the same dtype",
                    w.dtype(),
                    self.mu.dtype()
                ),
            });
        }
        match w.dtype() {
            // Off the CPU: x - x is 0 for every finite x and NaN otherwise,
            // so one reduction on the device decides; only a bad layer is
            // copied to the host to name its first bad weight.
            DType::F32 | DType::F64 if !w.device().is_cpu() => {
                let bad = w
                    .sub(w)?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                if !bad.is_finite() {
                    check_finite_weights(&self.name, &self.host_values(w)?)?;
                }
            }
            DType::F32 => with_cpu_slice::<f32, _>(w, |s| check_finite_weights(&self.name, s))??,
            DType::F64 => with_cpu_slice::<f64, _>(w, |s| check_finite_weights(&self.name, s))??,
            other => {
                return Err(CoreError::Unsupported {
                    layer: self.name.clone(),
                    what: format!("weights of dtype {other:?}, expected f32 or f64"),
                })
            }
        }
        Ok(())
    }

    /// Soft weights s(w), same shape as `w`, through the fused op. Gradients
    /// flow to `w` (when tracked) and to the mixture's trainable Vars.
    ///
    /// The fused op runs on the CPU and, built with the `cuda` feature, on
    /// CUDA (dgms-cuda's kernels). On any other device this falls back to
    /// [`Self::soft_weights_composed`], candle ops that run there. That
    /// fallback's autograd graph keeps about 13 K x N tensors per layer of
    /// N weights until the backward (counted from [`crate::composed`]'s
    /// ops), where the fused op keeps none: at K = 16 in f32 about 830
    /// bytes per mixture weight, independent of the batch size.
    pub fn soft_weights(&self, w: &Tensor) -> Result<Tensor> {
        if !fused_op_runs_on(w.device()) {
            return self.soft_weights_composed(w);
        }
        self.check_inputs(w)?;
        let op = SoftWeightOp {
            layout: PackedLayout { k: self.k },
        };
        Ok(w.contiguous()?.apply_op2(&self.packed()?, op)?)
    }

    /// Soft weights through composed candle ops and autograd (the oracle).
    pub fn soft_weights_composed(&self, w: &Tensor) -> Result<Tensor> {
        self.check_inputs(w)?;
        let sigma = Tensor::cat(&[self.sigma_zero.as_tensor(), self.sigma.as_tensor()], 0)?;
        let pi = Tensor::cat(&[self.pi_zero.as_tensor(), self.pi.as_tensor()], 0)?;
        Ok(composed::soft_weights(
            w,
            self.mu.as_tensor(),
            &sigma,
            &pi,
            &self.tau_tensor(),
        )?)
    }

    /// Index of the most likely component of every weight (0 = zero
    /// component), flattened in row-major order.
    pub fn hard_indices(&self, w: &Tensor) -> Result<Vec<u8>> {
        Ok(self.harden(w)?.indices)
    }

    /// Hard weights h(w): the mean of each weight's most likely component
    /// (0 for the zero component), same shape and dtype as `w`.
    pub fn hard_weights(&self, w: &Tensor) -> Result<Tensor> {
        let hardened = self.harden(w)?;
        Ok(Tensor::from_vec(hardened.decode(), w.shape(), w.device())?.to_dtype(w.dtype())?)
    }

    /// Responsibilities gamma_k(w): shape `w.dims() + [K]`, f32, no gradient.
    pub fn responsibilities(&self, w: &Tensor) -> Result<Tensor> {
        let host = self.host_weights(w)?;
        let prep = self.prepared()?;
        let mut out = vec![0f32; host.len() * self.k];
        kernel::responsibilities(&prep, &host, &mut out);
        let mut dims = w.dims().to_vec();
        dims.push(self.k);
        Ok(Tensor::from_vec(out, dims, w.device())?)
    }

    /// Hardens the layer: b-bit index of every weight and the table of K
    /// values (index 0 = the zero component, value 0).
    pub fn harden(&self, w: &Tensor) -> Result<HardenedLayer> {
        self.harden_with(w, HardeningRule::LogSpace)
    }

    /// [`Self::harden`] with the given rule (the reference's float32 rule
    /// reproduces released models exactly; see [`crate::reference_rule`]).
    pub fn harden_with(&self, w: &Tensor, rule: HardeningRule) -> Result<HardenedLayer> {
        let host = self.host_weights(w)?;
        HardenedLayer::from_params_with(&self.name, w.dims(), &host, &self.params()?, rule)
    }

    fn prepared(&self) -> Result<Prepared> {
        let params = self.params()?;
        params.validate(&self.name)?;
        Ok(Prepared::from_packed(
            &params.to_packed(),
            PackedLayout { k: self.k },
        ))
    }

    fn host_weights(&self, w: &Tensor) -> Result<Vec<f32>> {
        let host = self.host_values(w)?;
        check_finite_weights(&self.name, &host)?;
        Ok(host)
    }

    /// The weights as f32 on the host, from any device.
    fn host_values(&self, w: &Tensor) -> Result<Vec<f32>> {
        Ok(w.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    }
}

/// Whether [`SoftWeightOp`] has a body for `device` in this build.
fn fused_op_runs_on(device: &Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}
