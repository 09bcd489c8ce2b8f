//! Runs the exact initialisation of every ResNet-18 conv (for perf).
use dgms_core::init::init_layers;
use dgms_core::{workloads, InitConfig, KMeansMethod};
fn main() {
    let layers: Vec<(String, Vec<f32>)> = workloads::RESNET18_CONVS
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            (
                name.to_string(),
                workloads::kaiming_weights(shape, i as u64),
            )
        })
        .collect();
    let views: Vec<(&str, &[f32])> = layers
        .iter()
        .map(|(n, w)| (n.as_str(), w.as_slice()))
        .collect();
    let cfg = InitConfig {
        k: 16,
        method: KMeansMethod::Exact,
        ..InitConfig::default()
    };
    for _ in 0..3 {
        let t = std::time::Instant::now();
        init_layers(&views, &cfg).unwrap();
        eprintln!("{:.3}", t.elapsed().as_secs_f64());
    }
}
