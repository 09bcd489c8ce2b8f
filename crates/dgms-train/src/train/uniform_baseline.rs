//! The LSQ baseline's side of a [`Model`]: a uniform grid with a learned
//! step on the layers a mixture would get (`dgms dgms --lsq`, `cargo xtask
//! train --baselines`), and its steps in checkpoints
//! (`<layer>.uniform.step`, beside the model's tensors as a mixture's are).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use dgms_core::UniformQuantizer;

use crate::config::UniformSettings;
use crate::error::{Result, TrainError};
use crate::train::session::Model;

/// Name of a layer's step in a checkpoint.
pub fn uniform_key(layer: &str) -> String {
    format!("{layer}.uniform.step")
}

/// Adds every grid's step to `out`.
pub fn uniform_tensors(model: &Model, out: &mut Vec<(String, Tensor)>) {
    for (layer, q) in model.net.uniform_quantizers() {
        out.push((uniform_key(&layer), q.step().as_tensor().clone()));
    }
}

impl Model {
    /// The layers `u` quantizes, checked to exist.
    fn uniform_layers(&self, u: &UniformSettings) -> Result<Vec<String>> {
        let layers = u
            .layers
            .clone()
            .unwrap_or_else(|| self.net.default_mixture_layers());
        for layer in &layers {
            self.conv(layer)?;
        }
        Ok(layers)
    }

    /// Sets a uniform grid on every layer of `u` (removing any mixture),
    /// its step initialised from the layer's current weights as LSQ does.
    pub fn enable_uniform(&self, u: &UniformSettings) -> Result<()> {
        let mut grids = Vec::new();
        for layer in self.uniform_layers(u)? {
            let conv = self.conv(&layer)?;
            let step = UniformQuantizer::initial_step(&layer, conv.weight(), u.bits)?;
            let var = Var::from_tensor(&Tensor::new(&[step], conv.weight().device())?)?;
            grids.push((conv, UniformQuantizer::new(layer, u.bits, var)?));
        }
        // Only once every layer succeeded: nothing half-enabled.
        for (conv, grid) in grids {
            conv.set_mixture(None);
            conv.set_uniform(Some(grid));
        }
        Ok(())
    }

    /// Sets the grids of `u` with the steps stored in `tensors` (a
    /// checkpoint of an LSQ run read from `path`).
    pub(crate) fn restore_uniform(
        &self,
        path: &Path,
        u: &UniformSettings,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<()> {
        let mut grids = Vec::new();
        for layer in self.uniform_layers(u)? {
            let key = uniform_key(&layer);
            let step = tensors.get(&key).ok_or_else(|| TrainError::MissingTensor {
                file: format!("{}: ", path.display()),
                name: key.clone(),
                hint: " (the checkpoint of an LSQ run must hold every layer's step)",
            })?;
            let conv = self.conv(&layer)?;
            // Read on the host; the step goes where the layer is.
            let step = step
                .to_dtype(candle_core::DType::F32)?
                .to_device(conv.weight().device())?;
            let var = Var::from_tensor(&step)?;
            let grid = UniformQuantizer::new(layer.clone(), u.bits, var)?;
            grid.step_value()?;
            grids.push((conv, grid));
        }
        for (conv, grid) in grids {
            conv.set_mixture(None);
            conv.set_uniform(Some(grid));
        }
        Ok(())
    }
}
