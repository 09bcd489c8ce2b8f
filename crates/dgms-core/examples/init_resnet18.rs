//! Runs the exact initialisation of every ResNet-18 conv (for perf).
use dgms_core::init::init_layers;
use dgms_core::{workloads, InitConfig, KMeansMethod};
fn main() {
    let layers = workloads::resnet18_conv_weights();
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
