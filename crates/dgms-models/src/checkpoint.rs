//! Loading parameters into a `VarMap` (the training setup: build the model
//! on a `VarMap`, then overwrite its `Var`s with pretrained values), from
//! safetensors or PyTorch `.pth` files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::error::{ModelError, Result};

/// Sets every `Var` of `varmap` from the tensor of the same name in
/// `tensors` (converted to the `Var`'s dtype and device). Tensors the map
/// does not hold (e.g. `num_batches_tracked`) are ignored. `source` names
/// the checkpoint in errors. Checks every name and shape before setting
/// anything, so a failure leaves the map unchanged.
pub fn set_varmap(varmap: &VarMap, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
    // A poisoned lock only means another thread panicked while holding it;
    // the map itself is still valid.
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    // Sorted, so the error for several missing tensors is deterministic.
    names.sort();
    let mut updates = Vec::with_capacity(names.len());
    for name in names {
        let var = &data[name];
        let t = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
            path: source.to_string(),
            name: name.clone(),
        })?;
        if t.dims() != var.dims() {
            return Err(ModelError::TensorShape {
                path: source.to_string(),
                name: name.clone(),
                got: t.dims().to_vec(),
                expected: var.dims().to_vec(),
            });
        }
        let t = t
            .to_device(var.device())?
            .to_dtype(var.dtype())
            .map_err(|e| ModelError::load(name.as_str(), e))?;
        updates.push((var, t));
    }
    for (var, t) in updates {
        var.set(&t)?;
    }
    Ok(())
}

/// Whether `path` holds a PyTorch file (`torch.save`'s zip + pickle)
/// rather than safetensors: recognised by content (a zip archive), so a
/// `.pth.tar` or a renamed file is read as what it is; a file that is not
/// a zip but is named `.pth`, `.pt` or `.tar` still counts as PyTorch, so
/// that a corrupt one gets the error of the format it claims to be.
pub fn is_pth(path: impl AsRef<Path>) -> bool {
    let path = path.as_ref();
    crate::pth::starts_like_zip(path)
        || matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("pth" | "pt" | "tar")
        )
}

/// Every tensor of a checkpoint file on the CPU, by name: a PyTorch state
/// dict (see [`is_pth`] and [`crate::pth::read_pth`]), else safetensors
/// (read into memory, no mmap, after the shared structural check
/// `dgms_io::check_safetensors`). Errors name the file.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    if is_pth(path) {
        return crate::pth::read_pth(path);
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::Checkpoint {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    dgms_io::check_safetensors(&bytes).map_err(|source| ModelError::Safetensors {
        path: path.display().to_string(),
        source,
    })?;
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| ModelError::Candle(e.with_path(path)))
}

/// [`set_varmap`] from a safetensors or `.pth` file ([`load_tensors`]).
pub fn load_varmap(varmap: &VarMap, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = load_tensors(path)?;
    set_varmap(varmap, &tensors, &path.display().to_string())
}
