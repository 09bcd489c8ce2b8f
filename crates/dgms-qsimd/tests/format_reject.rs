//! Packed format: one test per rejection rule, each checking that the
//! message names the culprit and what was expected.

#[path = "format_support/mod.rs"]
mod support;

use dgms_qsimd::format::{pack_indices, PackedLayer, PackedModel};
use dgms_qsimd::QsimdError;
use serde_json::json;
use support::*;

const L1: &str = "layer1.0.conv1";

fn reject(raw: &Raw) -> String {
    err_of(&raw.bytes())
}

#[test]
fn base_raw_file_is_valid() {
    // The editor itself round trips, so each rejection below is due to its edit.
    assert_eq!(
        PackedModel::from_bytes(&Raw::base().bytes()).unwrap(),
        base_model()
    );
}

#[test]
fn not_safetensors() {
    for bytes in [
        &b""[..],
        b"garbage",
        &[0xff; 8],
        &[0xff; 64],
        b"\x02\0\0\0\0\0\0\0{x",
    ] {
        let e = PackedModel::from_bytes(bytes).unwrap_err();
        // Refused by the shared structural check, before the crate parses.
        assert!(matches!(e, QsimdError::Structure(_)), "{e:?}");
        assert_has(&e.to_string(), &["not a valid safetensors file"]);
    }
}

#[test]
fn data_offsets_beyond_the_file() {
    let h = r#"{"__metadata__":{},"x":{"dtype":"U8","shape":[99999999999],"data_offsets":[0,99999999999]}}"#;
    assert_has(
        &err_of(&raw_file(h, &[])),
        &["tensor `x`", "past the end of the 0-byte data section"],
    );
    // A shape whose byte count overflows.
    let h = r#"{"__metadata__":{},"x":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,18446744073709551615]}}"#;
    assert_has(&err_of(&raw_file(h, &[])), &["tensor `x`", "overflows"]);
    // Also when hidden behind a duplicate key.
    let h = r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,99999999999]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    assert_has(&err_of(&raw_file(h, &[0])), &["`x`", "more than once"]);
}

#[test]
fn missing_metadata() {
    let mut raw = Raw::base();
    raw.metadata = None;
    assert_has(&reject(&raw), &["__metadata__", "missing"]);
}

#[test]
fn missing_each_metadata_key() {
    for key in [
        "format",
        "format_version",
        "arch",
        "input_shape",
        "num_classes",
        "layers",
    ] {
        let mut raw = Raw::base();
        raw.meta().remove(key);
        assert_has(&reject(&raw), &[&format!("metadata `{key}`"), "missing"]);
    }
}

#[test]
fn extra_metadata_key() {
    let mut raw = Raw::base();
    raw.meta().insert("author".into(), "me".into());
    assert_has(&reject(&raw), &["metadata `author`", "unknown key"]);
}

#[test]
fn wrong_format_name() {
    let mut raw = Raw::base();
    raw.meta().insert("format".into(), "pt".into());
    assert_has(
        &reject(&raw),
        &["metadata `format`", "\"pt\"", "expected \"dgms-packed\""],
    );
}

#[test]
fn unsupported_or_malformed_version() {
    let mut raw = Raw::base();
    raw.meta().insert("format_version".into(), "2".into());
    let e = PackedModel::from_bytes(&raw.bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            QsimdError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{e:?}"
    );
    assert_has(
        &e.to_string(),
        &["unsupported format_version 2", "supports 1"],
    );
    for bad in ["01", "one", "", "-1", "1.0"] {
        raw.meta().insert("format_version".into(), bad.into());
        assert_has(&reject(&raw), &["metadata `format_version`"]);
    }
}

#[test]
fn malformed_model_metadata() {
    let cases = [
        ("arch", "", "is empty"),
        ("input_shape", "[1,28", "JSON array"),
        ("input_shape", "[]", "non-empty"),
        ("input_shape", "[1,0,28]", "positive"),
        (
            "input_shape",
            "[4294967296,4294967296,4294967296]",
            "overflows",
        ),
        ("num_classes", "0", "expected at least 1"),
        ("num_classes", "ten", "positive decimal"),
    ];
    for (key, value, needle) in cases {
        let mut raw = Raw::base();
        raw.meta().insert(key.into(), value.into());
        assert_has(&reject(&raw), &[&format!("metadata `{key}`"), needle]);
    }
}

#[test]
fn layers_json_malformed() {
    let cases = [
        "[{\"name\":\"a\"",
        "{}",
        "[{\"name\":\"layer1.0.conv1\",\"shape\":[8,4,3,3],\"k\":12}]",
        "[{\"name\":\"layer1.0.conv1\",\"shape\":[8,4,3,3],\"k\":12,\"bits\":4,\"extra\":1}]",
        "[{\"name\":\"layer1.0.conv1\",\"shape\":[8,-4,3,3],\"k\":12,\"bits\":4}]",
        "[{\"name\":7,\"shape\":[8,4,3,3],\"k\":12,\"bits\":4}]",
    ];
    for layers in cases {
        let mut raw = Raw::base();
        raw.meta().insert("layers".into(), layers.into());
        assert_has(
            &reject(&raw),
            &["metadata `layers`", "expected a JSON array"],
        );
    }
}

fn edit_l1(raw: &mut Raw, field: &str, value: serde_json::Value) {
    raw.edit_layers(|ls| ls[0][field] = value);
}

#[test]
fn shape_product_overflow() {
    let mut raw = Raw::base();
    edit_l1(
        &mut raw,
        "shape",
        json!([1u64 << 32, 1u64 << 32, 1u64 << 32]),
    );
    assert_has(&reject(&raw), &[&format!("layer {L1}"), "overflows"]);
    // n fits but n * bits does not.
    let mut raw = Raw::base();
    edit_l1(&mut raw, "shape", json!([u64::MAX / 2]));
    assert_has(&reject(&raw), &[&format!("layer {L1}"), "overflows"]);
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let mut raw = Raw::base();
    edit_l1(&mut raw, "shape", json!([1u64 << 40, 1 << 20]));
    assert_has(
        &reject(&raw),
        &[
            &format!("{L1}.indices has shape [144]"),
            "expected [576460752303423488]",
        ],
    );
    let mut raw = Raw::base();
    edit_l1(&mut raw, "k", json!(1u64 << 40));
    assert_has(
        &reject(&raw),
        &[
            &format!("layer {L1}"),
            "outside the supported range 2..=256",
        ],
    );
    let mut raw = Raw::base();
    edit_l1(&mut raw, "k", json!(1));
    assert_has(&reject(&raw), &["K = 1 is outside"]);
    let mut raw = Raw::base();
    edit_l1(&mut raw, "shape", json!([]));
    assert_has(
        &reject(&raw),
        &[&format!("layer {L1}"), "at least one dimension"],
    );
}

#[test]
fn wrong_dtypes() {
    let mut raw = Raw::base();
    raw.tensor(&format!("{L1}.indices")).dtype = "I8".into();
    assert_has(
        &reject(&raw),
        &[&format!("{L1}.indices has dtype I8, expected U8")],
    );
    let mut raw = Raw::base();
    let cb = raw.tensor(&format!("{L1}.codebook"));
    cb.dtype = "I32".into();
    assert_has(
        &reject(&raw),
        &[&format!("{L1}.codebook"), "dtype I32, expected F32"],
    );
    let mut raw = Raw::base();
    let t = raw.tensor("fc.bias");
    t.dtype = "F16".into();
    t.shape = vec![20];
    assert_has(
        &reject(&raw),
        &["tensor fc.bias", "dtype F16, expected F32"],
    );
}

#[test]
fn indices_length_mismatch() {
    let mut raw = Raw::base();
    let t = raw.tensor(&format!("{L1}.indices"));
    t.data.push(0);
    t.shape = vec![145];
    assert_has(
        &reject(&raw),
        &[
            &format!("{L1}.indices has shape [145], expected [144]"),
            "288 weights * 4 bits",
        ],
    );
    let mut raw = Raw::base();
    let t = raw.tensor(&format!("{L1}.indices"));
    t.shape = vec![12, 12];
    assert_has(&reject(&raw), &["shape [12, 12], expected [144]"]);
}

#[test]
fn index_out_of_range_names_weight_and_k() {
    // K = 12 at 4 bits: set weight 532 of a 6x100 layer to 13.
    let mut m = base_model();
    let mut idx = indices(600, 12, 9);
    idx[532] = 13;
    m.layers[0] = PackedLayer {
        name: L1.into(),
        shape: vec![6, 100],
        k: 12,
        bits: 4,
        codebook: codebook(12),
        packed: pack_indices(&idx, 4),
    };
    let mut raw = Raw::base();
    raw.tensor(&format!("{L1}.indices")).data = m.layers[0].packed.clone();
    raw.tensor(&format!("{L1}.indices")).shape = vec![300];
    edit_l1(&mut raw, "shape", json!([6, 100]));
    let e = PackedModel::from_bytes(&raw.bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layer layer1.0.conv1: index 13 at weight 532 is >= K = 12"
    );
    assert!(matches!(
        e,
        QsimdError::IndexOutOfRange {
            index: 13,
            weight: 532,
            k: 12,
            ..
        }
    ));
    // The same through validate() and from_indices().
    assert_eq!(m.validate().unwrap_err().to_string(), e.to_string());
    let e2 = PackedLayer::from_indices(L1, vec![6, 100], &idx, codebook(12)).unwrap_err();
    assert_eq!(e2.to_string(), e.to_string());
}

#[test]
fn index_out_of_range_at_other_widths() {
    for (k, bad, n) in [(3usize, 3u8, 9usize), (5, 7, 20), (17, 200, 9)] {
        let l = layer("q", &[n], k, 1);
        let mut idx = l.indices();
        idx[n - 1] = bad;
        let bits = l.bits;
        let mut raw = Raw::parse(&model_with(&[("q", &[n], k)]).to_bytes().unwrap());
        raw.tensor("q.indices").data = pack_indices(&idx, bits);
        let want = format!("layer q: index {bad} at weight {} is >= K = {k}", n - 1);
        assert_eq!(reject(&raw), want);
    }
}

#[test]
fn nonzero_padding_bits() {
    // layer1.0.conv2: 15 weights at 3 bits = 45 bits, so bits 45..48 pad.
    let mut raw = Raw::base();
    let t = raw.tensor("layer1.0.conv2.indices");
    *t.data.last_mut().unwrap() |= 0b0100_0000;
    assert_has(
        &reject(&raw),
        &[
            "layer layer1.0.conv2",
            "nonzero padding bits after weight 14",
        ],
    );
}

#[test]
fn codebook_length_mismatch() {
    let mut raw = Raw::base();
    let t = raw.tensor(&format!("{L1}.codebook"));
    t.data.truncate(11 * 4);
    t.shape = vec![11];
    assert_has(
        &reject(&raw),
        &[&format!(
            "{L1}.codebook has shape [11], expected [12] (K entries)"
        )],
    );
}

#[test]
fn codebook_zero_entry_must_be_zero() {
    let mut raw = Raw::base();
    let t = raw.tensor(&format!("{L1}.codebook"));
    t.data[..4].copy_from_slice(&0.25f32.to_le_bytes());
    assert_has(
        &reject(&raw),
        &[
            &format!("layer {L1}"),
            "codebook[0] = 0.25, expected exactly 0.0",
        ],
    );
}

#[test]
fn non_finite_values() {
    for (bad, shown) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let mut raw = Raw::base();
        raw.tensor(&format!("{L1}.codebook")).data[12..16].copy_from_slice(&bad.to_le_bytes());
        assert_has(
            &reject(&raw),
            &[
                &format!("layer {L1}"),
                &format!("codebook[3] = {shown} is not finite"),
            ],
        );
        let mut raw = Raw::base();
        raw.tensor("fc.weight").data[8..12].copy_from_slice(&bad.to_le_bytes());
        assert_has(
            &reject(&raw),
            &[
                "tensor fc.weight",
                &format!("value {shown} at element 2 is not finite"),
            ],
        );
    }
}

#[test]
fn bits_inconsistent_with_k() {
    let mut raw = Raw::base();
    edit_l1(&mut raw, "bits", json!(8));
    assert_has(
        &reject(&raw),
        &[&format!("layer {L1}"), "bits = 8 but K = 12 needs bits = 4"],
    );
}

#[test]
fn listed_layer_with_missing_tensors() {
    for suffix in ["indices", "codebook"] {
        let mut raw = Raw::base();
        raw.remove(&format!("{L1}.{suffix}"));
        assert_has(
            &reject(&raw),
            &[
                &format!("layer {L1}"),
                &format!("tensor {L1}.{suffix} is missing"),
            ],
        );
    }
}

#[test]
fn quantized_tensor_not_listed() {
    let mut raw = Raw::base();
    raw.edit_layers(|ls| {
        ls.remove(0);
    });
    assert_has(
        &reject(&raw),
        &[
            &format!("{L1}.codebook"),
            &format!("no layer \"{L1}\" is listed"),
        ],
    );
    let mut raw = Raw::base();
    raw.tensors.push(RawTensor {
        name: "stray.indices".into(),
        dtype: "F32".into(),
        shape: vec![1],
        data: f32_le(&[0.0]),
    });
    assert_has(
        &reject(&raw),
        &["tensor stray.indices", "no layer \"stray\" is listed"],
    );
}

#[test]
fn duplicate_layer_names() {
    let mut raw = Raw::base();
    raw.edit_layers(|ls| {
        let first = ls[0].clone();
        ls.push(first);
    });
    assert_has(
        &reject(&raw),
        &[&format!("layer {L1}"), "listed more than once"],
    );
    let mut m = base_model();
    m.layers.push(m.layers[0].clone());
    assert_has(
        &m.to_bytes().unwrap_err().to_string(),
        &["listed more than once"],
    );
}

#[test]
fn batch_norm_pairs() {
    let mut raw = Raw::base();
    raw.remove("bn1.shift");
    assert_has(
        &reject(&raw),
        &["tensor bn1.scale", "without its partner bn1.shift"],
    );
    let mut raw = Raw::base();
    let t = raw.tensor("bn1.shift");
    t.shape = vec![2, 2];
    assert_has(&reject(&raw), &["1-D [C] of one shape"]);
}

#[test]
fn writer_refuses_what_the_reader_refuses() {
    let mut m = base_model();
    m.tensors
        .insert("x.codebook".into(), m.tensors["fc.bias"].clone());
    assert_has(
        &m.to_bytes().unwrap_err().to_string(),
        &["tensor x.codebook", "reserved"],
    );
    let mut m = base_model();
    m.tensors
        .insert("__metadata__".into(), m.tensors["fc.bias"].clone());
    assert!(m.to_bytes().is_err());
    let mut m = base_model();
    m.meta.format_version = 2;
    assert_has(
        &m.to_bytes().unwrap_err().to_string(),
        &["unsupported format_version 2"],
    );
    let mut m = base_model();
    m.layers[0].bits = 8;
    assert_has(&m.validate().unwrap_err().to_string(), &["needs bits = 4"]);
    let mut m = base_model();
    m.layers[1].packed.pop();
    assert_has(
        &m.validate().unwrap_err().to_string(),
        &["layer layer1.0.conv2", "indices hold 5 bytes, expected"],
    );
    assert!(PackedLayer::from_indices("", vec![2], &[0, 1], codebook(2)).is_err());
    assert_has(
        &PackedLayer::from_indices("z", vec![3], &[0, 1], codebook(2))
            .unwrap_err()
            .to_string(),
        &["layer z", "2 indices given", "expected one per weight: 3"],
    );
}
