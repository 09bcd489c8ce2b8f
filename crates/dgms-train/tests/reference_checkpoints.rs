//! The DGMS authors' own checkpoint (`resnet20_dgms_k16.pth.tar`, made by
//! their released code; see ../shared/fixtures/reference-checkpoints):
//! imported, hardened, exported and run in both engines against their
//! logits and sparsity; continued by `dgms dgms --init`.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dgms_core::{HardeningRule, MixtureParams};
use dgms_qsimd::engine::Precision;
use dgms_qsimd::kernels::Isa;
use dgms_test_support::fixtures::shared_fixture;
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::export::{export_packed_with, ExportOptions};
use dgms_train::infer::{read_input, read_packed, EngineKind, Runner};
use dgms_train::phases::{self, OpenOptions};
use dgms_train::reference_import::{open_checkpoint, Origin};
use dgms_train::train::session::Model;
use dgms_train::train::trainer::train;

const CKPT: &str = "fixtures/reference-checkpoints/resnet20_dgms_k16.pth.tar";
const IO: &str = "fixtures/reference-checkpoints/resnet20_dgms_k16.io.safetensors";

fn fixture() -> Option<(PathBuf, PathBuf)> {
    Some((shared_fixture(CKPT)?, shared_fixture(IO)?))
}

fn io_tensor(path: &Path, name: &str) -> Tensor {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()[name].clone()
}

#[test]
fn imports_with_every_mixture_as_stored() {
    let Some((ckpt_path, _)) = fixture() else {
        return;
    };
    let (ckpt, origin) = open_checkpoint(&ckpt_path, Some("resnet20"), None).unwrap();
    let Origin::Reference { model_config } = origin else {
        panic!("not recognised as the authors' format");
    };
    assert_eq!(
        (model_config.in_channels, model_config.num_classes),
        (3, 10)
    );
    // Every conv but the first, K = 16, as their main.py wraps them.
    assert_eq!(ckpt.meta.mixture_k.len(), 18);
    assert!(ckpt.meta.mixture_k.values().all(|&k| k == 16));
    assert!(!ckpt.meta.mixture_k.contains_key("conv1"));
    // The raw file has a negative sigma; imported, every sigma is |sigma|.
    let raw = dgms_models::read_pth(&ckpt_path).unwrap();
    let negative: Vec<&String> = raw
        .iter()
        .filter(|(k, t)| {
            k.ends_with(".sub_distribution.sigma")
                && t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .any(|&s| s < 0.0)
        })
        .map(|(k, _)| k)
        .collect();
    assert!(!negative.is_empty(), "the fixture has a negative sigma");
    for key in negative {
        let layer = key
            .trim_start_matches("network.")
            .trim_end_matches(".sub_distribution.sigma");
        let theirs: Vec<f32> = raw[key].to_vec1().unwrap();
        let ours: Vec<f32> = ckpt.tensors[&format!("{layer}.mixture.sigma")]
            .to_vec1()
            .unwrap();
        let abs: Vec<f32> = theirs.iter().map(|s| s.abs()).collect();
        assert_eq!(ours, abs, "{layer}");
    }
    // pi and tau as stored.
    let pi: Vec<f32> = raw["network.layer2.1.conv1.sub_distribution.pi_k"]
        .to_vec1()
        .unwrap();
    let ours: Vec<f32> = ckpt.tensors["layer2.1.conv1.mixture.pi"].to_vec1().unwrap();
    assert_eq!(pi, ours);
    let tau: Vec<f32> = raw["network.layer2.1.conv1.sub_distribution.temperature"]
        .to_vec1()
        .unwrap();
    let ours: Vec<f32> = ckpt.tensors["layer2.1.conv1.mixture.tau"]
        .to_vec1()
        .unwrap();
    assert_eq!(tau, ours);
}

#[test]
fn a_network_name_is_required() {
    let Some((ckpt_path, _)) = fixture() else {
        return;
    };
    let msg = match open_checkpoint(&ckpt_path, None, None) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("imported without a network name"),
    };
    assert!(msg.contains("--model") && msg.contains("authors"), "{msg}");
    // The wrong network: every key it would need and lacks, named.
    let msg = match open_checkpoint(&ckpt_path, Some("resnet32"), None) {
        Err(e) => common::chain(&e),
        Ok(_) => panic!("a ResNet-20 file imported as resnet32"),
    };
    assert!(
        msg.contains("missing key `network.layer1.3.conv1.weight`"),
        "{msg}"
    );
}

#[test]
fn hardening_gives_their_sparsity_and_the_rules_agree_here() {
    let Some((ckpt_path, io)) = fixture() else {
        return;
    };
    let opts = OpenOptions {
        model: Some("resnet20"),
        ..OpenOptions::default()
    };
    let ours = phases::report_with(&ckpt_path, &opts, HardeningRule::LogSpace, None).unwrap();
    let theirs = phases::report_with(&ckpt_path, &opts, HardeningRule::Reference, None).unwrap();
    let sparsity: Vec<f64> = io_tensor(&io, "sparsity")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(theirs.table.sparsity, sparsity[0], "the authors' sparsity");
    assert_eq!(ours.table.zeros, theirs.table.zeros);
    // No weight of this file underflows, so the two rules pick the same
    // component for every weight.
    assert_eq!(ours.table.reference_underflow, Some(0));
    let (_, _, a) = phases::open(&ckpt_path, &opts).unwrap();
    let (_, _, b) = phases::open(&ckpt_path, &opts).unwrap();
    let la = phases::harden_model_with(&a, HardeningRule::LogSpace).unwrap();
    let lb = phases::harden_model_with(&b, HardeningRule::Reference).unwrap();
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.indices, y.indices, "{}", x.name);
        assert_eq!(x.table, y.table, "{}", x.name);
    }
    // The authors' report: 18 mixture layers, conv1 and linear in fp32.
    let r = &theirs.reference;
    assert_eq!(r.layers.len(), 20);
    assert!(r.layers[0].sparsity.is_none() && r.layers[19].sparsity.is_none());
    assert_eq!(r.skipped_weights, 16 * 3 * 9 + 10 * 64);
    assert_eq!(r.bits, Some(4));
    let cr = 1.0 / ((1.0 - sparsity[0]) * 4.0 / 32.0);
    assert!((r.compression_rate.unwrap() - cr).abs() < 1e-9);
}

#[test]
fn exported_model_gives_their_logits_in_both_engines() {
    let Some((ckpt_path, io)) = fixture() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r20.dgms.safetensors");
    let opts = ExportOptions {
        model: Some("resnet20"),
        ..ExportOptions::default()
    };
    let summary = export_packed_with(&ckpt_path, &out, &opts).unwrap();
    assert_eq!(summary.quantized_layers, 18);
    let packed = read_packed(&out).unwrap();
    let (input, [n, c, h, w]) = read_input(&io).unwrap();
    let expected: Vec<f32> = io_tensor(&io, "logits")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for kind in [EngineKind::Qsimd, EngineKind::Candle] {
        let mut runner = Runner::new(&packed, kind, Isa::detect(), Precision::Exact).unwrap();
        let got = runner.run(&input, n, [c, h, w]).unwrap();
        let err = got
            .iter()
            .zip(&expected)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(err < 1e-4, "{kind:?}: relative error {err}");
        for i in 0..n {
            let top = |v: &[f32]| {
                let row = &v[i * 10..(i + 1) * 10];
                (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
            };
            assert_eq!(top(&got), top(&expected), "{kind:?}: image {i}");
        }
    }
}

/// Soft weights by the reference's formula in f64 (log space), for
/// comparison with what the model's first forward pass uses.
fn reference_soft(p: &MixtureParams, w: f32) -> f64 {
    let mus: Vec<f64> = p.means_with_zero().iter().map(|&m| m as f64).collect();
    let sig: Vec<f64> = p.sigmas_with_zero().iter().map(|&s| s as f64).collect();
    let pis: Vec<f64> = p
        .pis_with_zero()
        .iter()
        .map(|&q| (q as f64).abs())
        .collect();
    let w = w as f64;
    let l: Vec<f64> = (0..mus.len())
        .map(|k| pis[k].ln() - sig[k].ln() - ((w - mus[k]) / sig[k]).powi(2) / 2.0)
        .collect();
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
    let gamma: Vec<f64> = l.iter().map(|x| (x - m).exp() / z).collect();
    let gm = gamma.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let tau = p.tau as f64;
    let e: Vec<f64> = gamma.iter().map(|g| ((g - gm) / tau).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().zip(&mus).map(|(a, mu)| a / s * mu).sum()
}

#[test]
fn dgms_init_continues_their_mixtures() {
    let Some((ckpt_path, _)) = fixture() else {
        return;
    };
    let (imported, Origin::Reference { model_config }) =
        open_checkpoint(&ckpt_path, Some("resnet20"), None).unwrap()
    else {
        panic!("not the authors' format");
    };
    let model = Model::with_config("resnet20", &model_config, 7).unwrap();
    model
        .load_init(&ckpt_path, &MixtureSettings::with_k(16))
        .unwrap();
    // The first forward pass uses the imported mixtures' soft weights.
    let conv = model.net.conv("layer2.1.conv1").unwrap();
    let mixture = conv.mixture().expect("mixture continued");
    let params = mixture.params().unwrap();
    let stored: Vec<f32> = imported.tensors["layer2.1.conv1.mixture.mu"]
        .to_vec1()
        .unwrap();
    assert_eq!(params.mu, stored, "means as stored, no k-means");
    let soft: Vec<f32> = conv
        .effective_weight(true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let latent: Vec<f32> = conv.weight().flatten_all().unwrap().to_vec1().unwrap();
    let scale = params.mu.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    for (i, (&s, &w)) in soft.iter().zip(&latent).enumerate() {
        let r = reference_soft(&params, w);
        assert!(
            (s as f64 - r).abs() <= 1e-5 * scale,
            "weight {i}: soft {s} vs reference {r}"
        );
    }
    // Fine-tuning from the file: a K other than the file's is refused...
    let other = Model::with_config("resnet20", &model_config, 7).unwrap();
    let msg = common::chain(
        &other
            .load_init(&ckpt_path, &MixtureSettings::with_k(8))
            .unwrap_err(),
    );
    assert!(msg.contains("16") && msg.contains('8'), "{msg}");

    // ... and two steps move the mixtures.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("cifar");
    std::fs::create_dir(&data_dir).unwrap();
    dgms_test_support::datasets::write_random_cifar(&data_dir, 16, 12345).unwrap();
    let data = format!("cifar10:{}", data_dir.display());
    let mut cfg = RunConfig::dgms(
        "resnet20",
        &data,
        dir.path().join("run"),
        Some(ckpt_path.clone()),
        MixtureSettings::with_k(16),
    );
    cfg.epochs = 1;
    cfg.batch_size = 8;
    cfg.max_batches = Some(2);
    cfg.max_eval = Some(16);
    cfg.lr = 0.05;
    let outcome = train(&cfg, None).unwrap();
    let after = dgms_train::train::checkpoint::load(&outcome.last).unwrap();
    assert_eq!(after.meta.mixture_k, imported.meta.mixture_k);
    let moved = |name: &str| {
        let a = after.tensors[name].to_dtype(DType::F32).unwrap();
        let b = imported.tensors[name].to_dtype(DType::F32).unwrap();
        a.sub(&b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(
        moved("layer2.1.conv1.mixture.mu") > 0.0,
        "means did not move"
    );
    assert!(moved("layer2.1.conv1.weight") > 0.0, "weights did not move");
}

#[test]
fn quantize_hardens_with_the_files_own_mixtures() {
    let Some((ckpt_path, io)) = fixture() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.dgms.safetensors");
    // K = 4 asked for: ignored, the file's trained K = 16 mixtures are used
    // as they are (k-means at K = 4 would give another sparsity).
    let (report, summary, _) = dgms_train::export::quantize_packed(
        "resnet20",
        &ckpt_path,
        &dgms_train::export::ShapeSource::Input([3, 32, 32]),
        &MixtureSettings::with_k(4),
        &out,
    )
    .unwrap();
    let sparsity: Vec<f64> = io_tensor(&io, "sparsity")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(report.sparsity, sparsity[0]);
    assert_eq!(report.bits, Some(4));
    assert_eq!(summary.quantized_layers, 18);
}
