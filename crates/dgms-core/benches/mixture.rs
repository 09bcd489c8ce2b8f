//! Criterion benches of the mixture core: fused vs composed soft weights
//! (forward + backward) and k-means initialisation. `cargo xtask bench-core`
//! prints the ratios and peak memory in one table; these give criterion's
//! statistics for the same operations.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dgms_core::init::init_layers;
use dgms_core::{workloads, GaussianMixture, InitConfig, MixtureOptions};

fn fused_vs_composed(c: &mut Criterion) {
    let mut group = c.benchmark_group("soft_weights_fwd_bwd");
    group.sample_size(10);
    for shape in [[256usize, 128, 3, 3], workloads::RESNET18_LAYER4_CONV] {
        let n: usize = shape.iter().product();
        let weights = workloads::kaiming_weights(&shape, 1);
        let w = Var::from_slice(&weights, n, &Device::Cpu).unwrap();
        let init = InitConfig::default();
        let (mixture, _) = GaussianMixture::from_weights(
            "bench",
            w.as_tensor(),
            &init,
            &MixtureOptions::default(),
        )
        .unwrap();
        let upstream =
            Tensor::from_vec(workloads::normal_weights(n, 1.0, 2), n, &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("fused", n), |b| {
            b.iter(|| {
                let soft = mixture.soft_weights(w.as_tensor()).unwrap();
                (soft * &upstream)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("composed", n), |b| {
            b.iter(|| {
                let soft = mixture.soft_weights_composed(w.as_tensor()).unwrap();
                (soft * &upstream)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn init_resnet18(c: &mut Criterion) {
    let layers = workloads::resnet18_conv_weights();
    let views: Vec<(&str, &[f32])> = layers.iter().map(|(n, w)| (n.as_str(), &w[..])).collect();
    let total: usize = views.iter().map(|(_, w)| w.len()).sum();
    let mut group = c.benchmark_group("init");
    group.sample_size(10);
    group.throughput(Throughput::Elements(total as u64));
    group.bench_function("resnet18_convs_k16", |b| {
        b.iter(|| init_layers(&views, &InitConfig::default()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, fused_vs_composed, init_resnet18);
criterion_main!(benches);
