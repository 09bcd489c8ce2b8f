//! `cargo xtask bench-core`: the fused mixture op against the composed
//! candle version on a ResNet-18 layer4 conv (forward + backward, speed and
//! peak memory), and initialisation of every ResNet-18 conv layer (the exact
//! k-means, on all threads and on one, against the Lloyd restarts on the
//! same layers, with the summed errors to {0, mu} of both). Prints a table
//! of figures measured in this run and writes `target/bench-core.json`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dgms_core::init::init_layers;
use dgms_core::{workloads, InitConfig, KMeansMethod};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::memory::{bench_layer, peak_mib, run_op, OpKind};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weights of the benchmark layer (default: ResNet-18 layer4 conv).
    #[arg(long, default_value_t = 2_359_296)]
    n: usize,
    /// Mixture components.
    #[arg(long, default_value_t = 16)]
    k: usize,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Serialize)]
struct Report {
    n: usize,
    k: usize,
    threads: usize,
    reps: usize,
    fused_seconds: f64,
    composed_seconds: f64,
    fused_speedup: f64,
    /// Exact k-means init (`KMeansMethod::Exact`), all threads.
    init_resnet18_seconds: f64,
    /// The same on one thread.
    init_resnet18_one_thread_seconds: f64,
    /// Lloyd restarts (the former default) on the same layers, all threads.
    init_resnet18_lloyd_seconds: f64,
    /// Summed SSE to {0, mu} over the layers, exact and Lloyd.
    init_resnet18_sse_exact: f64,
    init_resnet18_sse_lloyd: f64,
    init_resnet18_weights: usize,
    fused_peak_mib: f64,
    composed_peak_mib: f64,
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

fn time_reps(reps: usize, bar: &ProgressBar, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
        bar.inc(1);
    }
    Ok(median(times))
}

pub fn run(args: &Args) -> Result<()> {
    let reps = args.reps.max(1);
    let bar = ProgressBar::new((5 * reps + 2) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .context("progress template")?,
    );

    bar.set_message("building the benchmark layer");
    let (mixture, w, upstream) = bench_layer(args.n, args.k)?;
    // One untimed run each warms caches and the rayon pool.
    run_op(OpKind::Fused, &mixture, &w, &upstream)?;
    bar.set_message("fused forward+backward");
    let fused = time_reps(reps, &bar, || {
        run_op(OpKind::Fused, &mixture, &w, &upstream)
    })?;
    bar.set_message("composed forward+backward");
    let composed = time_reps(reps, &bar, || {
        run_op(OpKind::Composed, &mixture, &w, &upstream)
    })?;

    bar.set_message("init of ResNet-18 convs");
    let layers = workloads::resnet18_conv_weights();
    let views: Vec<(&str, &[f32])> = layers
        .iter()
        .map(|(n, w)| (n.as_str(), w.as_slice()))
        .collect();
    let init_cfg = InitConfig {
        k: args.k,
        method: KMeansMethod::Exact,
        ..InitConfig::default()
    };
    let lloyd_cfg = InitConfig {
        method: KMeansMethod::Lloyd,
        ..init_cfg.clone()
    };
    let sse = |cfg: &InitConfig| -> Result<f64> {
        Ok(init_layers(&views, cfg)?.iter().map(|o| o.sse_zero).sum())
    };
    let (sse_exact, sse_lloyd) = (sse(&init_cfg)?, sse(&lloyd_cfg)?);
    let init = time_reps(reps, &bar, || {
        init_layers(&views, &init_cfg)?;
        Ok(())
    })?;
    bar.set_message("init, exact, one thread");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let init_one = time_reps(reps, &bar, || {
        one.install(|| init_layers(&views, &init_cfg))?;
        Ok(())
    })?;
    bar.set_message("init, Lloyd restarts");
    let init_lloyd = time_reps(reps, &bar, || {
        init_layers(&views, &lloyd_cfg)?;
        Ok(())
    })?;

    bar.set_message("peak memory (child processes)");
    let fused_peak = peak_mib(OpKind::Fused, args.n, args.k)?;
    bar.inc(1);
    let composed_peak = peak_mib(OpKind::Composed, args.n, args.k)?;
    bar.inc(1);
    bar.finish_and_clear();

    let report = Report {
        n: args.n,
        k: args.k,
        threads: rayon::current_num_threads(),
        reps,
        fused_seconds: fused,
        composed_seconds: composed,
        fused_speedup: composed / fused,
        init_resnet18_seconds: init,
        init_resnet18_one_thread_seconds: init_one,
        init_resnet18_lloyd_seconds: init_lloyd,
        init_resnet18_sse_exact: sse_exact,
        init_resnet18_sse_lloyd: sse_lloyd,
        init_resnet18_weights: views.iter().map(|(_, w)| w.len()).sum(),
        fused_peak_mib: fused_peak,
        composed_peak_mib: composed_peak,
    };
    print_table(&report);
    let path = crate::target_dir().join("bench-core.json");
    crate::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "dgms-core bench: {} weights, K={}, {} threads, median of {}",
        r.n, r.k, r.threads, r.reps
    );
    println!("{:<40} {:>12} {:>12}", "measure", "value", "ratio");
    println!(
        "{:<40} {:>10.3} s {:>12}",
        "composed forward+backward", r.composed_seconds, "1.00x"
    );
    println!(
        "{:<40} {:>10.3} s {:>11.2}x",
        "fused forward+backward", r.fused_seconds, r.fused_speedup
    );
    println!(
        "{:<40} {:>8.1} MiB {:>12}",
        "composed peak memory", r.composed_peak_mib, "1.00x"
    );
    println!(
        "{:<40} {:>8.1} MiB {:>11.2}x",
        "fused peak memory",
        r.fused_peak_mib,
        r.fused_peak_mib / r.composed_peak_mib
    );
    println!(
        "{:<40} {:>10.3} s {:>12}",
        format!(
            "init of ResNet-18 convs ({} weights)",
            r.init_resnet18_weights
        ),
        r.init_resnet18_seconds,
        "goal < 2 s"
    );
    println!(
        "{:<40} {:>10.3} s {:>11.2}x",
        "  exact k-means, one thread",
        r.init_resnet18_one_thread_seconds,
        r.init_resnet18_one_thread_seconds / r.init_resnet18_seconds
    );
    println!(
        "{:<40} {:>10.3} s {:>11.2}x",
        "  Lloyd (8 restarts), same layers",
        r.init_resnet18_lloyd_seconds,
        r.init_resnet18_lloyd_seconds / r.init_resnet18_seconds
    );
    println!(
        "{:<40} {:>12.6} {:>12}",
        "  summed SSE to {0, mu}, exact", r.init_resnet18_sse_exact, "1.000000x"
    );
    println!(
        "{:<40} {:>12.6} {:>11.6}x",
        "  summed SSE to {0, mu}, Lloyd",
        r.init_resnet18_sse_lloyd,
        r.init_resnet18_sse_lloyd / r.init_resnet18_sse_exact
    );
}
