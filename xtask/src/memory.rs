//! Peak-memory measurement of one mixture op, run in a child process so
//! that each op starts from the same clean heap.
//!
//! The child resets the kernel's peak-RSS counter (`/proc/self/clear_refs`,
//! value 5), runs forward + backward once, and reports VmHWM minus the RSS
//! it had before the op: the op's own peak, inputs excluded.
//!
//! The binary's allocator is mimalloc, which by default keeps freed memory
//! (the set-up's temporaries) mapped and reuses it for the op, so the op
//! would not raise the RSS by what it allocates. The child therefore runs
//! with `MIMALLOC_PURGE_DELAY=0`: freed memory goes back at once, as with
//! glibc's large blocks, and the RSS growth is the op's allocations.

use std::process::Command;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use dgms_core::{workloads, GaussianMixture, InitConfig, MixtureOptions};

/// Which implementation to measure.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OpKind {
    Fused,
    Composed,
}

#[derive(clap::Args, Debug)]
pub struct PeakArgs {
    #[arg(value_enum)]
    op: OpKind,
    /// Number of weights of the layer.
    #[arg(long)]
    n: usize,
    /// Number of components.
    #[arg(long)]
    k: usize,
}

/// Builds the benchmark layer: Kaiming weights of `n` values, a mixture
/// initialised from them, and an upstream gradient.
pub fn bench_layer(n: usize, k: usize) -> Result<(GaussianMixture, Var, Tensor)> {
    // The spread of a layer4 conv of ResNet-18 (fan-in 512 x 3 x 3).
    let std = (2.0f64 / 4608.0).sqrt();
    let w = Tensor::from_vec(workloads::normal_weights(n, std, 1), n, &Device::Cpu)?;
    let init = InitConfig {
        k,
        ..InitConfig::default()
    };
    let (mixture, _) =
        GaussianMixture::from_weights("bench", &w, &init, &MixtureOptions::default())?;
    let upstream = Tensor::from_vec(workloads::normal_weights(n, 1.0, 2), n, &Device::Cpu)?;
    Ok((mixture, Var::from_tensor(&w)?, upstream))
}

/// One forward + backward of the chosen op.
pub fn run_op(op: OpKind, mixture: &GaussianMixture, w: &Var, upstream: &Tensor) -> Result<()> {
    let soft = match op {
        OpKind::Fused => mixture.soft_weights(w.as_tensor())?,
        OpKind::Composed => mixture.soft_weights_composed(w.as_tensor())?,
    };
    let grads = (soft * upstream)?.sum_all()?.backward()?;
    if grads.get(w.as_tensor()).is_none() {
        bail!("no gradient reached the weights");
    }
    Ok(())
}

pub fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (peak memory is measured on Linux only)")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot parse {line:?}"))
}

/// Child side: prints the op's peak memory in MiB on stdout.
pub fn measure_peak(args: &PeakArgs) -> Result<()> {
    let (mixture, w, upstream) = bench_layer(args.n, args.k)?;
    let before = status_kib("VmRSS:")?;
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting the peak-RSS counter via /proc/self/clear_refs")?;
    run_op(args.op, &mixture, &w, &upstream)?;
    let peak = status_kib("VmHWM:")?;
    println!("{:.3}", peak.saturating_sub(before) as f64 / 1024.0);
    Ok(())
}

/// Parent side: runs `xtask measure-peak` in a child and returns MiB.
pub fn peak_mib(op: OpKind, n: usize, k: usize) -> Result<f64> {
    let name = format!("{op:?}").to_lowercase();
    let (n, k) = (n.to_string(), k.to_string());
    child_number(
        &format!("the peak-memory child for {name}"),
        &["measure-peak", &name, "--n", &n, "--k", &k],
    )
}

/// Runs this xtask binary with `args` in a child process with
/// `MIMALLOC_PURGE_DELAY=0` (freed memory goes back at once, so its RSS
/// follows what is live; see the module docs) and parses the one number
/// it prints.
pub fn child_number(what: &str, args: &[&str]) -> Result<f64> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let out = Command::new(exe)
        .env("MIMALLOC_PURGE_DELAY", "0")
        .args(args)
        .output()
        .with_context(|| format!("spawning {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("{what} printed {text:?}, expected a number"))
}
