//! Shared helpers of the format tests: deterministic models and a raw
//! safetensors editor for crafting invalid files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use dgms_qsimd::format::{FpTensor, ModelMeta, PackedLayer, PackedModel};
use dgms_test_support::rng::Lcg64;

/// Deterministic indices in `0..k` (64-bit LCG).
pub fn indices(n: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut g = Lcg64::seeded(seed);
    (0..n).map(|_| g.below(k) as u8).collect()
}

/// A codebook with entry 0 = 0.0 and distinct nonzero others.
pub fn codebook(k: usize) -> Vec<f32> {
    (0..k)
        .map(|j| {
            let m = j as f32 * 0.037;
            if j % 2 == 0 {
                m
            } else {
                -m
            }
        })
        .collect()
}

pub fn layer(name: &str, shape: &[usize], k: usize, seed: u64) -> PackedLayer {
    let n = shape.iter().product();
    PackedLayer::from_indices(name, shape.to_vec(), &indices(n, k, seed), codebook(k)).unwrap()
}

pub fn fp(shape: &[usize], seed: u64) -> FpTensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i as u64 * 7 + seed) % 19) as f32 * 0.1 - 0.9)
        .collect();
    FpTensor::new(shape.to_vec(), data).unwrap()
}

/// A model with the given (name, shape, K) layers plus a first conv, a
/// classifier and one folded batch norm.
pub fn model_with(layers: &[(&str, &[usize], usize)]) -> PackedModel {
    let layers = layers
        .iter()
        .enumerate()
        .map(|(i, (name, shape, k))| layer(name, shape, *k, i as u64))
        .collect();
    let mut tensors = BTreeMap::new();
    tensors.insert("conv1.weight".to_string(), fp(&[4, 1, 3, 3], 1));
    tensors.insert("bn1.scale".to_string(), fp(&[4], 2));
    tensors.insert("bn1.shift".to_string(), fp(&[4], 3));
    tensors.insert("fc.weight".to_string(), fp(&[10, 4], 4));
    tensors.insert("fc.bias".to_string(), fp(&[10], 5));
    PackedModel::new(
        ModelMeta::new("resnet20", vec![1, 28, 28], 10),
        layers,
        tensors,
    )
    .unwrap()
}

/// The model most rejection tests start from: layer1.0.conv1 has K = 12
/// (4 bits, so indices 12..15 are representable but invalid).
pub fn base_model() -> PackedModel {
    model_with(&[
        ("layer1.0.conv1", &[8, 4, 3, 3], 12),
        ("layer1.0.conv2", &[5, 3, 1, 1], 5),
    ])
}

pub fn base_bytes() -> Vec<u8> {
    base_model().to_bytes().unwrap()
}

/// The error message of `from_bytes`, which must fail.
pub fn err_of(bytes: &[u8]) -> String {
    match PackedModel::from_bytes(bytes) {
        Ok(m) => panic!("expected an error, parsed {m:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `msg` contains every needle.
pub fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

/// A fresh, empty directory under cargo's per-test scratch area.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("format")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One tensor of a [`Raw`] file.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// An editable safetensors file: any metadata and tensors, valid or not.
#[derive(Clone, Debug)]
pub struct Raw {
    pub metadata: Option<BTreeMap<String, String>>,
    pub tensors: Vec<RawTensor>,
}

impl Raw {
    pub fn parse(bytes: &[u8]) -> Raw {
        let (_, md) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let metadata = md
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let tensors = md
            .offset_keys()
            .into_iter()
            .map(|name| {
                let t = st.tensor(&name).unwrap();
                RawTensor {
                    dtype: t.dtype().to_string(),
                    shape: t.shape().to_vec(),
                    data: t.data().to_vec(),
                    name,
                }
            })
            .collect();
        Raw { metadata, tensors }
    }

    pub fn base() -> Raw {
        Raw::parse(&base_bytes())
    }

    /// Serializes without any validation (data offsets follow the order).
    pub fn bytes(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if let Some(m) = &self.metadata {
            header.insert("__metadata__".into(), serde_json::to_value(m).unwrap());
        }
        let mut off = 0;
        for t in &self.tensors {
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.data.len()]}),
            );
            off += t.data.len();
        }
        raw_file(&serde_json::to_string(&header).unwrap(), &self.all_data())
    }

    fn all_data(&self) -> Vec<u8> {
        self.tensors.iter().flat_map(|t| t.data.clone()).collect()
    }

    pub fn tensor(&mut self, name: &str) -> &mut RawTensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    pub fn remove(&mut self, name: &str) {
        self.tensors.retain(|t| t.name != name);
    }

    pub fn meta(&mut self) -> &mut BTreeMap<String, String> {
        self.metadata.as_mut().unwrap()
    }

    /// Edits the `layers` metadata array as JSON.
    pub fn edit_layers(&mut self, f: impl FnOnce(&mut Vec<serde_json::Value>)) {
        let m = self.meta();
        let mut layers: Vec<serde_json::Value> = serde_json::from_str(&m["layers"]).unwrap();
        f(&mut layers);
        m.insert("layers".into(), serde_json::to_string(&layers).unwrap());
    }
}

/// A safetensors file from a header string and a data section.
pub fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

pub fn f32_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
