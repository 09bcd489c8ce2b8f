//! The `__metadata__` map: model-level facts and the list of quantized
//! layers, encoded as strings (safetensors only allows string values).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{QsimdError, Result};

/// Value of the `format` key.
pub const FORMAT_NAME: &str = "dgms-packed";
/// The only `format_version` this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Every `__metadata__` key, all required; any other key is an error so a
/// newer writer's additions are not silently dropped.
pub const METADATA_KEYS: [&str; 6] = [
    "format",
    "format_version",
    "arch",
    "input_shape",
    "num_classes",
    "layers",
];

/// Model-level metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMeta {
    /// Architecture name, e.g. `resnet20`, `resnet18`, `vggsmall`.
    pub arch: String,
    /// Input shape without the batch dimension, `[C, H, W]`.
    pub input_shape: Vec<usize>,
    /// Number of classifier outputs.
    pub num_classes: usize,
    /// Format version, [`FORMAT_VERSION`] for everything this crate writes.
    pub format_version: u32,
}

impl ModelMeta {
    /// Metadata at the current [`FORMAT_VERSION`].
    pub fn new(arch: impl Into<String>, input_shape: Vec<usize>, num_classes: usize) -> Self {
        Self {
            arch: arch.into(),
            input_shape,
            num_classes,
            format_version: FORMAT_VERSION,
        }
    }

    /// Checks what the reader checks: a known version, a non-empty arch, a
    /// non-empty input shape of positive dimensions and `num_classes > 0`.
    pub fn validate(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(QsimdError::UnsupportedVersion {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if self.arch.is_empty() {
            return Err(meta_err("arch", "is empty, expected an architecture name"));
        }
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(meta_err(
                "input_shape",
                &format!(
                    "is {:?}, expected a non-empty list of positive dimensions [C, H, W]",
                    self.input_shape
                ),
            ));
        }
        if self
            .input_shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none()
        {
            return Err(meta_err(
                "input_shape",
                &format!("element count of {:?} overflows", self.input_shape),
            ));
        }
        if self.num_classes == 0 {
            return Err(meta_err("num_classes", "is 0, expected at least 1"));
        }
        Ok(())
    }
}

/// One entry of the `layers` metadata array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerMeta {
    /// Layer name; its tensors are `NAME.indices` and `NAME.codebook`.
    pub name: String,
    /// Weight shape, PyTorch order.
    pub shape: Vec<usize>,
    /// Codebook size K.
    pub k: usize,
    /// Index width in bits.
    pub bits: u32,
}

/// A JSON error in metadata `key`, kept as the cause.
fn meta_json_err(key: &str, reason: String, source: serde_json::Error) -> QsimdError {
    QsimdError::MetadataJson {
        key: key.to_string(),
        reason,
        source,
    }
}

fn meta_err(key: &str, reason: &str) -> QsimdError {
    QsimdError::Metadata {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Quotes an untrusted value for an error message, cut to a readable length.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Builds the `__metadata__` map (sorted, so the header is deterministic).
pub(crate) fn encode(meta: &ModelMeta, layers: &[LayerMeta]) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), FORMAT_NAME.into());
    m.insert("format_version".into(), meta.format_version.to_string());
    m.insert("arch".into(), meta.arch.clone());
    m.insert(
        "input_shape".into(),
        to_json("input_shape", &meta.input_shape)?,
    );
    m.insert("num_classes".into(), meta.num_classes.to_string());
    m.insert("layers".into(), to_json("layers", &layers)?);
    Ok(m)
}

fn to_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| meta_json_err(key, "cannot encode as JSON".into(), e))
}

/// Parses and checks the `__metadata__` map (see the module docs of
/// [`crate::format`] for each key's rules).
pub(crate) fn decode(map: Option<&HashMap<String, String>>) -> Result<(ModelMeta, Vec<LayerMeta>)> {
    let Some(map) = map else {
        return Err(meta_err(
            "__metadata__",
            &format!("missing, expected a dgms-packed header with keys {METADATA_KEYS:?}"),
        ));
    };
    let get = |key: &str| {
        map.get(key)
            .map(String::as_str)
            .ok_or_else(|| meta_err(key, "missing"))
    };
    let format = get("format")?;
    if format != FORMAT_NAME {
        return Err(meta_err(
            "format",
            &format!("is {}, expected {FORMAT_NAME:?}", quote(format)),
        ));
    }
    let version = get("format_version")?;
    let found = parse_canonical(version).ok_or_else(|| {
        meta_err(
            "format_version",
            &format!(
                "is {}, expected a decimal integer such as \"1\"",
                quote(version)
            ),
        )
    })?;
    let format_version = u32::try_from(found).map_err(|_| {
        meta_err(
            "format_version",
            &format!("is {found}, not a version this reader supports ({FORMAT_VERSION})"),
        )
    })?;
    if format_version != FORMAT_VERSION {
        return Err(QsimdError::UnsupportedVersion {
            found: format_version,
            supported: FORMAT_VERSION,
        });
    }
    let mut unknown: Vec<&String> = map
        .keys()
        .filter(|k| !METADATA_KEYS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        return Err(meta_err(
            key,
            &format!("unknown key, expected only {METADATA_KEYS:?}"),
        ));
    }
    let arch = get("arch")?.to_string();
    let input_shape_s = get("input_shape")?;
    let input_shape: Vec<usize> = serde_json::from_str(input_shape_s).map_err(|e| {
        let reason = format!(
            "is {}, expected a JSON array of dimensions such as [1,28,28]",
            quote(input_shape_s)
        );
        meta_json_err("input_shape", reason, e)
    })?;
    let classes = get("num_classes")?;
    let num_classes = parse_canonical(classes).ok_or_else(|| {
        meta_err(
            "num_classes",
            &format!("is {}, expected a positive decimal integer", quote(classes)),
        )
    })?;
    let meta = ModelMeta {
        arch,
        input_shape,
        num_classes,
        format_version,
    };
    meta.validate()?;
    let layers_s = get("layers")?;
    let layers: Vec<LayerMeta> = serde_json::from_str(layers_s).map_err(|e| {
        let reason =
            "expected a JSON array of {\"name\", \"shape\", \"k\", \"bits\"} objects".to_string();
        meta_json_err("layers", reason, e)
    })?;
    Ok((meta, layers))
}

/// Parses a canonical decimal `usize` (no sign, no leading zeros), so that
/// one value has exactly one spelling and re-encoding round trips.
fn parse_canonical(s: &str) -> Option<usize> {
    let v: usize = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers() {
        assert_eq!(parse_canonical("1"), Some(1));
        assert_eq!(parse_canonical("01"), None);
        assert_eq!(parse_canonical("+1"), None);
        assert_eq!(parse_canonical(""), None);
    }

    #[test]
    fn quote_cuts_long_values() {
        let q = quote(&"x".repeat(1000));
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("..."));
    }
}
