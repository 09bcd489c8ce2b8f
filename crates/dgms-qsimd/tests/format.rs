//! Packed format: round trips, bit-packing properties, file I/O, atomic
//! writes, truncation and the committed fuzz seeds. Rejection cases are in
//! `format_reject.rs`.

#[path = "format_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dgms_qsimd::format::{
    fold_batch_norm, pack_indices, unpack_indices, FpTensor, ModelMeta, PackedLayer, PackedModel,
};
use proptest::prelude::*;
use support::*;

#[test]
fn round_trip_every_k_and_odd_shapes() {
    for &k in &[2usize, 3, 4, 5, 8, 16, 17, 256] {
        for shape in [
            &[1usize][..],
            &[13],
            &[3, 5, 7],
            &[2, 3, 1, 1],
            &[7, 3, 3, 3],
            &[9, 1, 1, 5],
        ] {
            let m = model_with(&[
                ("layer1.0.conv1", shape, k),
                ("layer2.1.conv2", &[3, 3, 3, 3], k),
            ]);
            let bytes = m.to_bytes().unwrap();
            let back = PackedModel::from_bytes(&bytes).unwrap();
            assert_eq!(back, m, "K = {k}, shape {shape:?}");
            assert_eq!(back.to_bytes().unwrap(), bytes, "deterministic bytes");
            let l = back.layer("layer1.0.conv1").unwrap();
            let n: usize = shape.iter().product();
            let idx = indices(n, k, 0);
            assert_eq!(l.indices(), idx);
            assert_eq!(l.num_weights(), n);
            let cb = codebook(k);
            let want: Vec<f32> = idx.iter().map(|&i| cb[i as usize]).collect();
            assert_eq!(l.decode(), want);
            assert_eq!(l.bits, PackedLayer::bits_for_k(k).unwrap());
            assert_eq!(l.packed.len(), (n * l.bits as usize).div_ceil(8));
        }
    }
}

#[test]
fn large_layer_round_trip_crosses_unpack_chunks() {
    // 10_007 weights: more than two 4096-weight chunks plus a ragged tail.
    for k in [3, 5, 16, 200] {
        let m = model_with(&[("big", &[10_007], k)]);
        let back = PackedModel::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back.layer("big").unwrap().indices(), indices(10_007, k, 0));
    }
}

#[test]
fn model_without_layers_or_tensors_round_trips() {
    let m = PackedModel::new(
        ModelMeta::new("vggsmall", vec![3, 32, 32], 10),
        vec![],
        BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(PackedModel::from_bytes(&m.to_bytes().unwrap()).unwrap(), m);
}

#[test]
fn lookups_name_the_missing_thing() {
    let m = base_model();
    assert_eq!(m.layer("layer1.0.conv2").unwrap().k, 5);
    assert_eq!(m.tensor("fc.bias").unwrap().shape, vec![10]);
    assert_has(
        &m.layer("layer9.conv").unwrap_err().to_string(),
        &["layer9.conv"],
    );
    assert_has(&m.tensor("fc.nope").unwrap_err().to_string(), &["fc.nope"]);
    assert_eq!(m.meta.format_version, 1);
    let metas = m.layer_metas();
    assert_eq!(metas[0].name, "layer1.0.conv1");
    assert_eq!(
        (metas[0].k, metas[0].bits, metas[0].shape.clone()),
        (12, 4, vec![8, 4, 3, 3])
    );
}

#[test]
fn size_accounting() {
    let m = base_model();
    // layers: 288 weights at 4 bits + 12 codebook floats; 15 at 3 bits + 5 floats.
    let layers_packed = 144 + 12 * 4 + 6 + 5 * 4;
    let fp_values = 36 + 4 + 4 + 40 + 10;
    assert_eq!(m.packed_bytes(), layers_packed + fp_values * 4);
    assert_eq!(m.fp32_bytes(), (288 + 15 + fp_values) * 4);
    assert!(m.to_bytes().unwrap().len() > m.packed_bytes());
}

#[test]
fn fold_batch_norm_matches_formula_and_validates() {
    let (s, t) = fold_batch_norm(&[2.0, 1.0], &[0.5, -1.0], &[1.0, 0.0], &[3.0, 0.0], 1.0).unwrap();
    assert_eq!(s, vec![1.0, 1.0]);
    assert_eq!(t, vec![-0.5, -1.0]);
    let e = |r: dgms_qsimd::Result<(Vec<f32>, Vec<f32>)>| r.unwrap_err().to_string();
    assert_has(
        &e(fold_batch_norm(&[1.0], &[0.0, 0.0], &[0.0], &[1.0], 1e-5)),
        &["length"],
    );
    assert_has(&e(fold_batch_norm(&[], &[], &[], &[], 1e-5)), &["length"]);
    assert_has(
        &e(fold_batch_norm(&[1.0], &[0.0], &[0.0], &[-1.0], 1e-5)),
        &["channel 0", "running_var"],
    );
    assert_has(
        &e(fold_batch_norm(&[1.0], &[0.0], &[0.0], &[0.0], 0.0)),
        &["channel 0", "> 0"],
    );
    assert_has(
        &e(fold_batch_norm(&[f32::NAN], &[0.0], &[0.0], &[1.0], 1e-5)),
        &["gamma[0]", "not finite"],
    );
    assert_has(
        &e(fold_batch_norm(&[1.0], &[0.0], &[0.0], &[1.0], -1.0)),
        &["eps"],
    );
    assert_has(
        &e(fold_batch_norm(&[3e38], &[0.0], &[0.0], &[0.0], 1e-30)),
        &["finite f32"],
    );
}

#[test]
fn write_then_read_from_disk() {
    let dir = tmp_dir("write_then_read");
    let path = dir.join("m.dgms.safetensors");
    let m = base_model();
    m.write(&path).unwrap();
    assert_eq!(PackedModel::read(&path).unwrap(), m);
    // Overwriting an existing file works too.
    let m2 = model_with(&[("x", &[3, 3], 17)]);
    m2.write(&path).unwrap();
    assert_eq!(PackedModel::read(&path).unwrap(), m2);
    assert_eq!(
        names_in(&dir),
        vec!["m.dgms.safetensors".to_string()],
        "no temp file left"
    );
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failed_writes_leave_no_trace_and_existing_files_untouched() {
    let dir = tmp_dir("failed_writes");
    // Under a "directory" that is a file: an error naming the path.
    let blocker = dir.join("a_file");
    std::fs::write(&blocker, b"x").unwrap();
    let impossible = blocker.join("m.dgms.safetensors");
    let e = base_model().write(&impossible).unwrap_err().to_string();
    assert_has(&e, &["a_file"]);
    assert!(!impossible.exists());
    std::fs::remove_file(&blocker).unwrap();
    // Missing parent directories are created, as for every output.
    let nested = dir.join("new_dir").join("m.dgms.safetensors");
    base_model().write(&nested).unwrap();
    assert!(PackedModel::read(&nested).is_ok());
    std::fs::remove_dir_all(dir.join("new_dir")).unwrap();

    // An invalid model never replaces an existing file.
    let path = dir.join("m.dgms.safetensors");
    std::fs::write(&path, b"old contents").unwrap();
    let mut bad = base_model();
    bad.layers[0].codebook[0] = 1.0;
    assert!(bad.write(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old contents");

    // The rename fails when the target is a non-empty directory: the temp
    // file is removed and the directory is untouched.
    let target = dir.join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let e = base_model().write(&target).unwrap_err().to_string();
    assert_has(&e, &["occupied"]);
    assert_eq!(
        names_in(&dir),
        vec!["m.dgms.safetensors".to_string(), "occupied".to_string()]
    );
    assert_eq!(names_in(&target), vec!["keep".to_string()]);
}

#[test]
fn read_errors_name_the_path() {
    let dir = tmp_dir("read_errors");
    let path = dir.join("bad.dgms.safetensors");
    let mut bytes = base_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80; // flips a padding bit or an index of the last layer
    std::fs::write(&path, &bytes).unwrap();
    let e = PackedModel::read(&path).unwrap_err().to_string();
    assert_has(&e, &[&path.display().to_string()]);
    let nowhere = dir.join("absent.dgms.safetensors");
    let e = PackedModel::read(&nowhere).unwrap_err().to_string();
    assert_has(&e, &[&nowhere.display().to_string()]);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = model_with(&[("a", &[3, 5], 5), ("b", &[7], 3)])
        .to_bytes()
        .unwrap();
    for len in 0..bytes.len() {
        assert!(
            PackedModel::from_bytes(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
    assert!(PackedModel::from_bytes(&bytes).is_ok());
}

#[test]
fn fp_tensor_new_checks_shape_and_values() {
    assert!(FpTensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
    assert!(FpTensor::new(vec![], vec![1.0]).is_ok());
    assert_has(
        &FpTensor::new(vec![2, 3], vec![0.0; 5])
            .unwrap_err()
            .to_string(),
        &["expected 6"],
    );
    assert_has(
        &FpTensor::new(vec![1], vec![f32::INFINITY])
            .unwrap_err()
            .to_string(),
        &["not finite"],
    );
}

/// The committed fuzz seeds: small valid files of several widths.
fn seed_models() -> Vec<(&'static str, PackedModel)> {
    vec![
        (
            "k5_3bit.dgms.safetensors",
            model_with(&[("layer1.0.conv1", &[4, 3, 3, 3], 5)]),
        ),
        (
            "k3_k17.dgms.safetensors",
            model_with(&[("l.a", &[2, 3, 3], 3), ("l.b", &[5, 2], 17)]),
        ),
        (
            "k16_4bit.dgms.safetensors",
            model_with(&[("layer2.0.conv2", &[8, 4, 1, 1], 16)]),
        ),
    ]
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/read_packed")
}

#[test]
fn fuzz_seeds_are_current() {
    for (name, m) in seed_models() {
        let bytes = std::fs::read(seed_dir().join(name)).unwrap_or_else(|e| {
            panic!(
                "{name}: {e} (regenerate: cargo test --test format -- --ignored write_fuzz_seeds)"
            )
        });
        assert!(bytes.len() < 4096, "{name} is {} bytes", bytes.len());
        assert_eq!(PackedModel::from_bytes(&bytes).unwrap(), m, "{name}");
        assert_eq!(m.to_bytes().unwrap(), bytes, "{name} is stale");
    }
}

/// Not a check: the generator of the committed seeds, kept beside
/// [`fuzz_seeds_are_current`] so both use [`seed_models`]. Run it by hand
/// after a format change (fuzz/README.md):
/// `cargo test -p dgms-qsimd --test format -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "generator, not a check: rewrites crates/dgms-qsimd/fuzz/seeds/read_packed (run by hand after a format change)"]
fn write_fuzz_seeds() {
    std::fs::create_dir_all(seed_dir()).unwrap();
    for (name, m) in seed_models() {
        m.write(seed_dir().join(name)).unwrap();
    }
}

/// Reference packer: one bit at a time, straight from the format docs.
fn reference_pack(idx: &[u8], bits: u32) -> Vec<u8> {
    let mut out = vec![0u8; (idx.len() * bits as usize).div_ceil(8)];
    for (i, &v) in idx.iter().enumerate() {
        for b in 0..bits as usize {
            if (v >> b) & 1 == 1 {
                let j = i * bits as usize + b;
                out[j / 8] |= 1 << (j % 8);
            }
        }
    }
    out
}

fn bits_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![Just(2u32), Just(3), Just(4), Just(8)]
}

proptest! {
    #[test]
    fn pack_unpack_round_trip(bits in bits_strategy(), raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let idx: Vec<u8> = raw.iter().map(|&v| (v as u16 & ((1 << bits) - 1)) as u8).collect();
        let packed = pack_indices(&idx, bits);
        prop_assert_eq!(&packed, &reference_pack(&idx, bits));
        let mut out = vec![0xAAu8; idx.len() + 3];
        unpack_indices(&packed, bits, idx.len(), &mut out);
        prop_assert_eq!(&out[..idx.len()], &idx[..]);
        prop_assert!(out[idx.len()..].iter().all(|&b| b == 0xAA), "wrote past n");
    }

    #[test]
    fn packed_layer_round_trip(bits_k in 2usize..=256, dims in proptest::collection::vec(1usize..6, 1..4), seed in any::<u64>()) {
        let n: usize = dims.iter().product();
        let idx = indices(n, bits_k, seed);
        let l = PackedLayer::from_indices("p", dims.clone(), &idx, codebook(bits_k)).unwrap();
        prop_assert_eq!(l.indices(), idx);
        let m = PackedModel::new(ModelMeta::new("t", vec![1], 1), vec![l], BTreeMap::new()).unwrap();
        prop_assert_eq!(PackedModel::from_bytes(&m.to_bytes().unwrap()).unwrap(), m);
    }

    #[test]
    fn corrupted_files_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = base_bytes();
        let len = bytes.len();
        for (pos, v) in flips {
            bytes[pos % len] = v;
        }
        if let Ok(m) = PackedModel::from_bytes(&bytes) {
            prop_assert_eq!(PackedModel::from_bytes(&m.to_bytes().unwrap()).unwrap(), m);
        }
    }
}
