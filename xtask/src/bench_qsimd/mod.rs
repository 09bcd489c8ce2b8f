//! `cargo xtask bench-qsimd`: the bit-packed qsimd kernels against f32
//! baselines measured in the same run, per ResNet-18 layer and for a
//! 4096 x 4096 linear layer, at batch 1 and 8 with 1 and 2 threads, and
//! end to end on ResNet-18, MobileNetV2 and ResNet-50 against ONNX Runtime
//! (the `peer` module; skipped, with the reason printed, when Python with
//! onnxruntime is not importable).
//!
//! Each thread count runs in a child process with `RAYON_NUM_THREADS`
//! set before any pool exists, because both rayon and candle size their
//! thread pools once per process. The parent prints one table of times
//! and ratios and writes `target/bench-qsimd.json`. `--only gemv` measures
//! just the GEMV section (exact 4-bit, int8, 2-bit table lookup, f32).

mod e2e;
pub(crate) mod layers;
mod peer;
mod profile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::parallel_ceiling::{self, Kernel};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Thread counts to measure (each in its own child process).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Batch sizes of the conv layers.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batches: Vec<usize>,
    /// Include the scalar kernels (slow; batch 1 only).
    #[arg(long)]
    scalar: bool,
    /// Only profile NET (resnet18, mobilenet_v2, resnet50) op by op at
    /// batch 1 with the process's rayon threads (`RAYON_NUM_THREADS`).
    #[arg(long, value_name = "NET")]
    profile: Option<String>,
    /// Only measure this part (`gemv`: the GEMV section, without the conv
    /// layers, the networks and the ONNX Runtime peer; the summary's other
    /// keys are then null).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Internal: the directory of the packed models.
    #[arg(long, hide = true)]
    models_dir: Option<PathBuf>,
    /// Internal: run the measurements of one thread count and print JSON.
    #[arg(long, hide = true)]
    child: bool,
}

/// A part of the benchmark that `--only` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The 4096 x 4096 and 1000 x 512 GEMV cases.
    Gemv,
}

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub kind: String,
    pub case: String,
    pub batch: usize,
    pub threads: usize,
    pub implementation: String,
    pub ms: f64,
}

impl Row {
    pub fn new(
        kind: &str,
        case: &str,
        batch: usize,
        threads: usize,
        implementation: String,
        ms: f64,
    ) -> Self {
        Self {
            kind: kind.into(),
            case: case.into(),
            batch,
            threads,
            implementation,
            ms,
        }
    }
}

/// Median wall time of `f` in milliseconds: warm-up calls for about 0.2 s
/// (at least one: caches, page faults, rayon's threads awake), then at
/// least 5 and at most 200 timed calls, stopping after about 1 s.
pub fn time_ms(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    while start.elapsed().as_secs_f64() < 0.2 {
        f()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (times.len() < 200 && start.elapsed().as_secs_f64() < 1.0) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

#[derive(Serialize)]
struct Summary {
    /// f32 GEMV time over qsimd exact time, 4096 x 4096, batch 1, 2
    /// threads; the f32 side is the faster of candle's matmul and the
    /// project's own f32 SIMD GEMV.
    gemv_speedup: f64,
    /// The same for the int8 GEMV.
    gemv_int8_speedup: f64,
    /// The same for the 2-bit table-lookup GEMV (`gemv_2bit`, K = 4).
    gemv_2bit_speedup: f64,
    /// ResNet-18, batch 1, 2 threads, in ms: candle f32 (its own conv),
    /// candle with the project's im2col conv op, qsimd exact and int8
    /// (best ISA).
    resnet18_b1_candle_ms: f64,
    resnet18_b1_candle_im2col_ms: f64,
    resnet18_b1_exact_ms: f64,
    resnet18_b1_int8_ms: f64,
    /// candle f32 time over qsimd time (the goals: >= 2 exact,
    /// >= 4 int8).
    resnet18_b1_exact_speedup: f64,
    resnet18_b1_int8_speedup: f64,
    isa: String,
    /// The ONNX Runtime peer, per network NET (resnet18, mobilenet_v2,
    /// resnet50) at batch 1: `NET_b1_tT_ort_ms`, `NET_b1_tT_exact_ms`,
    /// `NET_b1_tT_int8_ms` at T threads, and the ratios
    /// `NET_b1_tT_exact_vs_ort` and `NET_b1_tT_int8_vs_ort` = ORT's time
    /// over ours (best ISA), so > 1 means qsimd is faster; the keys
    /// without `_tT` are those at 2 threads (the goal).
    /// `NET_logits_max_rel_diff`: max |ORT - exact| / max |exact| over the
    /// logits of the benchmark input (the two compute the same function).
    #[serde(flatten)]
    peer: BTreeMap<String, f64>,
    /// "onnxruntime VERSION", or why the peer was skipped.
    peer_status: String,
    /// `NET_b1_exact_thread_scaling`, `NET_b1_int8_thread_scaling`: the
    /// network's 1-thread time over its 2-thread time at batch 1 (best
    /// ISA; the goal is >= 1.7), when both were measured.
    #[serde(flatten)]
    thread_scaling: BTreeMap<String, f64>,
    /// What 2 threads can give at most on this machine: two independent
    /// copies of a kernel against one (see `parallel_ceiling`).
    parallel_ceiling: Vec<crate::parallel_ceiling::Ceiling>,
    rows: Vec<Row>,
}

fn child(args: &Args) -> Result<()> {
    let threads = rayon::current_num_threads();
    let mut rows = layers::gemv_rows(threads, args.scalar)?;
    if args.only == Some(Only::Gemv) {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    for &b in &args.batches {
        rows.extend(layers::conv_rows(b, threads, args.scalar)?);
    }
    let dir = args.models_dir.as_deref().context("--models-dir")?;
    rows.extend(e2e::rows(dir, &args.batches, threads, args.scalar)?);
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    if args.child {
        return child(args);
    }
    let dir = crate::target_dir().join("bench-qsimd");
    if let Some(net) = &args.profile {
        return profile::run(&dir, net);
    }
    let gemv_only = args.only == Some(Only::Gemv);
    if !gemv_only {
        e2e::prepare(&dir, &e2e::NETWORKS)?;
    }
    let exe = std::env::current_exe()?;
    let mut rows: Vec<Row> = Vec::new();
    for &t in &args.threads {
        eprintln!("measuring with {t} thread(s)...");
        let mut cmd = Command::new(&exe);
        cmd.args(["bench-qsimd", "--child"])
            .arg("--models-dir")
            .arg(&dir)
            .arg(format!(
                "--batches={}",
                args.batches
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .env("RAYON_NUM_THREADS", t.to_string());
        if args.scalar {
            cmd.arg("--scalar");
        }
        if gemv_only {
            cmd.arg("--only=gemv");
        }
        let out = cmd.output().context("running the benchmark child")?;
        if !out.status.success() {
            bail!(
                "benchmark child ({t} threads) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let line = text
            .lines()
            .last()
            .context("benchmark child printed nothing")?;
        rows.extend(serde_json::from_str::<Vec<Row>>(line)?);
    }
    // A failing peer loses only its own keys, not the measurements above.
    let peer_result = match gemv_only {
        true => Ok((BTreeMap::new(), "skipped: --only gemv".to_string())),
        false => run_peer(&dir, &args.threads, &mut rows),
    };
    let (peer, peer_status) = match peer_result {
        Ok(p) => p,
        Err(e) => {
            println!("ONNX Runtime peer failed: {e:#}");
            (BTreeMap::new(), format!("failed: {e:#}"))
        }
    };
    print_table(&rows);
    let thread_scaling = thread_scaling(&rows);
    for (k, v) in &thread_scaling {
        println!("{k}: {v:.2}x");
    }
    let parallel_ceiling = [Kernel::Exact, Kernel::Int8]
        .into_iter()
        .map(parallel_ceiling::measure)
        .collect::<Result<Vec<_>>>()?;
    for c in &parallel_ceiling {
        println!("{}", parallel_ceiling::describe(c));
    }
    let gemv_int8_speedup = gemv_speedup(&rows, "qsimd-int8-").unwrap_or(f64::NAN);
    let gemv_2bit_speedup = gemv_speedup(&rows, "qsimd-2bit-").unwrap_or(f64::NAN);
    let gemv_speedup = gemv_speedup(&rows, "qsimd-exact-").unwrap_or(f64::NAN);
    let model = |prefix: &str| {
        best_ms(
            rows.iter().filter(|r| {
                r.kind == "model"
                    && r.case == e2e::case("resnet18")
                    && r.batch == 1
                    && r.threads == 2
            }),
            prefix,
        )
        .unwrap_or(f64::NAN)
    };
    let candle = model("candle-f32");
    let summary = Summary {
        gemv_speedup,
        gemv_int8_speedup,
        gemv_2bit_speedup,
        resnet18_b1_candle_ms: candle,
        resnet18_b1_candle_im2col_ms: model("candle-f32-im2col-op"),
        resnet18_b1_exact_ms: model("qsimd-exact-"),
        resnet18_b1_int8_ms: model("qsimd-int8-"),
        resnet18_b1_exact_speedup: candle / model("qsimd-exact-"),
        resnet18_b1_int8_speedup: candle / model("qsimd-int8-"),
        isa: dgms_qsimd::kernels::Isa::detect().to_string(),
        peer,
        peer_status,
        thread_scaling,
        parallel_ceiling,
        rows,
    };
    let path = crate::target_dir().join("bench-qsimd.json");
    crate::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Exports every network for the ONNX Runtime peer, measures it at every
/// thread count (adding its rows) and returns the summary keys (see
/// [`Summary::peer`]) and the peer's status. Without Python and
/// onnxruntime the peer is skipped with the reason.
fn run_peer(
    dir: &Path,
    threads: &[usize],
    rows: &mut Vec<Row>,
) -> Result<(BTreeMap<String, f64>, String)> {
    let mut keys = BTreeMap::new();
    if let Some(why) = peer::unavailable() {
        println!("ONNX Runtime peer skipped: {why}");
        return Ok((keys, format!("skipped: {why}")));
    }
    let mut version = String::new();
    for net in e2e::NETWORKS {
        peer::export(dir, net)?;
        for &t in threads {
            eprintln!("ONNX Runtime: {net}, {t} thread(s)...");
            let r = peer::measure(dir, net, t)?;
            version = r.ort_version.clone();
            let case = e2e::case(net);
            rows.push(Row::new(
                "model",
                &case,
                1,
                t,
                "onnxruntime-f32".into(),
                r.ort_ms,
            ));
            keys.insert(format!("{net}_logits_max_rel_diff"), r.max_rel_diff);
            let ours = |prefix: &str| {
                let sel = rows.iter().filter(|r| {
                    r.kind == "model" && r.case == case && r.batch == 1 && r.threads == t
                });
                best_ms(sel, prefix).unwrap_or(f64::NAN)
            };
            let (exact, int8) = (ours("qsimd-exact-"), ours("qsimd-int8-"));
            let mut put = |suffix: &str, v: f64| {
                keys.insert(format!("{net}_b1_t{t}_{suffix}"), v);
                if t == 2 {
                    keys.insert(format!("{net}_b1_{suffix}"), v);
                }
            };
            put("ort_ms", r.ort_ms);
            put("exact_ms", exact);
            put("int8_ms", int8);
            put("exact_vs_ort", r.ort_ms / exact);
            put("int8_vs_ort", r.ort_ms / int8);
        }
    }
    Ok((keys, format!("onnxruntime {version}")))
}

/// Each network's 1-thread over 2-thread time at batch 1, exact and int8
/// (best ISA each), keyed `NET_b1_{exact,int8}_thread_scaling`.
fn thread_scaling(rows: &[Row]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for net in e2e::NETWORKS {
        let case = e2e::case(net);
        for (name, prefix) in [("exact", "qsimd-exact-"), ("int8", "qsimd-int8-")] {
            let at = |t: usize| {
                best_ms(
                    rows.iter().filter(|r| {
                        r.kind == "model" && r.case == case && r.batch == 1 && r.threads == t
                    }),
                    prefix,
                )
            };
            if let (Some(one), Some(two)) = (at(1), at(2)) {
                out.insert(format!("{net}_b1_{name}_thread_scaling"), one / two);
            }
        }
    }
    out
}

/// The fastest row whose implementation is `name`, or starts with it when
/// `name` ends in '-' (e.g. `qsimd-exact-`: any ISA).
fn best_ms<'a>(rows: impl Iterator<Item = &'a Row>, name: &str) -> Option<f64> {
    let matches = |imp: &str| match name.ends_with('-') {
        true => imp.starts_with(name),
        false => imp == name,
    };
    rows.filter(|r| matches(&r.implementation))
        .map(|r| r.ms)
        .min_by(f64::total_cmp)
}

/// Best f32 GEMV time over the best time of `qsimd` (an implementation
/// prefix), 4096 x 4096 at 2 threads.
fn gemv_speedup(rows: &[Row], qsimd: &str) -> Option<f64> {
    let sel = || {
        rows.iter()
            .filter(|r| r.case == "linear 4096x4096" && r.threads == 2)
    };
    let f32_ms = best_ms(sel(), "f32-gemv-")?.min(best_ms(sel(), "gemm-f32")?);
    Some(f32_ms / best_ms(sel(), qsimd)?)
}

/// One line per (case, batch, threads): every implementation's time and
/// its ratio to the fastest f32 baseline of the same line.
fn print_table(rows: &[Row]) {
    let mut keys: Vec<(String, String, usize, usize)> = Vec::new();
    for r in rows {
        let k = (r.kind.clone(), r.case.clone(), r.batch, r.threads);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    println!(
        "{:<5} {:<22} {:>5} {:>3}  {:<20} {:>10} {:>9}",
        "kind", "case", "batch", "thr", "implementation", "ms", "vs f32"
    );
    for (kind, case, batch, threads) in keys {
        let line: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                r.kind == kind && r.case == case && r.batch == batch && r.threads == threads
            })
            .collect();
        let base = line
            .iter()
            .filter(|r| r.implementation.contains("f32"))
            .map(|r| r.ms)
            .min_by(f64::total_cmp)
            .unwrap_or(f64::NAN);
        for r in line {
            println!(
                "{:<5} {:<22} {:>5} {:>3}  {:<20} {:>10.3} {:>8.2}x",
                kind,
                case,
                batch,
                threads,
                r.implementation,
                r.ms,
                base / r.ms
            );
        }
    }
}
