//! Candle tensors as host vectors, and their relative error.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::compare::rel_diff_with_floor;

/// Every value of `t` (any shape and float dtype, CPU) as f64, row-major.
/// Panics with the candle error otherwise.
pub fn to_f64_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1())
        .expect("tensor to host f64")
}

/// Every value of an f32 tensor, row-major. Panics if it is not f32.
pub fn to_f32_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 tensor to host")
}

/// max |a - b| / max |b| of two f32 tensors of the same shape, the scale
/// floored at 1e-12. Panics if the shapes differ.
pub fn rel_diff_tensors(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    rel_diff_with_floor(&to_f32_vec(a), &to_f32_vec(b), 1e-12)
}

/// Every tensor of a safetensors file as its shape and raw f32 bits (other
/// dtypes widened exactly, e.g. u8 indices), by name: two files compare
/// equal exactly when every value is bitwise the same.
pub fn tensor_bits(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u32>)> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|(name, t)| {
            let values: Vec<f32> = t
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1())
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
            let bits = values.iter().map(|v| v.to_bits()).collect();
            (name, (t.dims().to_vec(), bits))
        })
        .collect()
}
