//! Times `Engine::run` on a packed model at batch 1, call by call, to see
//! how the time of one pass is spread (a median hides a bimodal run):
//!
//! ```text
//! cargo xtask bench-qsimd   # writes target/bench-qsimd/NET.dgms.safetensors
//! cargo run -p dgms-qsimd --release --example run_model -- \
//!     target/bench-qsimd/mobilenet_v2.dgms.safetensors int8 500
//! ```
//!
//! Arguments: the packed model, `exact` or `int8`, repetitions (the ISA
//! from `DGMS_QSIMD` or the best one; threads from `RAYON_NUM_THREADS`).
//! Prints the 10th, 50th and 90th percentile of the call times.

use std::time::Instant;

use dgms_qsimd::engine::{Engine, Precision};
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        return Err("usage: run_model MODEL exact|int8 REPS".into());
    }
    let precision = match args[1].as_str() {
        "exact" => Precision::Exact,
        "int8" => Precision::Int8,
        other => return Err(format!("unknown precision {other} (exact or int8)").into()),
    };
    let reps: usize = args[2]
        .parse()
        .map_err(|e| format!("repetitions ({}): {e}", args[2]))?;
    let model = PackedModel::read(&args[0])?;
    let mut engine = Engine::with_precision(&model, Isa::from_env()?, precision)?;
    let [c, h, w] = engine.input_shape();
    let input: Vec<f32> = (0..c * h * w)
        .map(|i| ((i * 37 % 101) as f32) / 101.0 - 0.5)
        .collect();
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        engine.run(&input, 1)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "{} {precision} {}: p10 {:.3} ms, p50 {:.3} ms, p90 {:.3} ms over {} calls",
        engine.arch(),
        engine.isa(),
        at(0.1),
        at(0.5),
        at(0.9),
        times.len()
    );
    Ok(())
}
