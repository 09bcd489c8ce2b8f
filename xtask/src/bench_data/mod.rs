//! `cargo xtask bench-data`: images/s of the image-folder pipeline
//! (decode, resize to 256, crop 224, flip, normalise into the f32 batch
//! tensor) on a generated ImageNet-like folder, with rayon pools of 1 and
//! 2 threads, against Pillow + numpy doing torchvision's transforms in one
//! process (one DataLoader worker) on the same files. Prints a table and
//! writes `target/bench-data.json`.
//!
//! Ours is the real loader: `Loader` over `Split::Files` with
//! `LoaderConfig::for_split`, iterated batch by batch inside an explicit
//! pool's `install`. Not through `Loader::prefetch`: its thread is outside
//! the pool, so its batches would run on the global pool instead.

mod folder;
mod pillow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dgms_data::{FileSplit, ImageTransform, Loader, LoaderConfig, Mode, Split};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use pillow::{Peer, PillowRun};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Fewer images (64) and one timed pass per measurement.
    #[arg(long)]
    quick: bool,
    /// Images in the generated folder (default 256, or 64 with --quick).
    #[arg(long)]
    images: Option<usize>,
    /// Images per batch. 32: each batch ends in a barrier (all images of a
    /// batch are built before the next starts), so very small batches
    /// measure idle threads rather than the pipeline.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Timed passes over the folder per measurement; the median counts
    /// (default 3, or 1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Seed of the generated images and of the training crops.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the JSON (default target/bench-data.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One line of the table: a mode's images/s.
#[derive(Debug, Serialize)]
struct ModeRow {
    mode: &'static str,
    ours_1_thread: f64,
    ours_2_threads: f64,
    scaling_2t_over_1t: f64,
    /// Pillow + numpy, one process, one thread; null when not measured.
    pillow_1_process: Option<f64>,
    /// Ours with 1 thread over Pillow (per core); null without Pillow.
    ours_1_thread_over_pillow: Option<f64>,
}

impl ModeRow {
    fn new(mode: &'static str, one: f64, two: f64, pillow: Option<f64>) -> Self {
        Self {
            mode,
            ours_1_thread: one,
            ours_2_threads: two,
            scaling_2t_over_1t: two / one,
            pillow_1_process: pillow,
            ours_1_thread_over_pillow: pillow.map(|p| one / p),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    images: usize,
    classes: usize,
    image_sizes: [&'static str; 2],
    jpeg_quality: u8,
    mean_file_kib: f64,
    resize: u32,
    crop: u32,
    batch_size: usize,
    reps: usize,
    seed: u64,
    cpu: String,
    /// 1-minute load average before the run: above about 0.5, other
    /// processes shared the cores and the 2-thread figures understate.
    load_average_1m: Option<f64>,
    /// Versions of the peer, when it ran.
    pillow: Option<PillowRun>,
    /// Why there are no Pillow figures, when there are none.
    pillow_note: Option<String>,
    /// images/s, train then eval.
    modes: Vec<ModeRow>,
}

pub fn run(args: &Args) -> Result<()> {
    let images = args.images.unwrap_or(if args.quick { 64 } else { 256 });
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    if images == 0 || args.batch_size == 0 {
        bail!("--images and --batch-size must be at least 1");
    }
    let load_average_1m = load_average();
    let root = crate::target_dir().join("bench-data").join("images");
    let bar = ProgressBar::new((1 + 1 + 2 * 2 * reps + 1) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:<34} [{bar:30}] {pos}/{len} {elapsed}")
            .context("progress template")?,
    );

    bar.set_message(format!("writing {images} JPEGs"));
    let bytes = folder::write_folder(&root, images, args.seed)?;
    bar.inc(1);
    let transform = ImageTransform::default();
    let split = Split::Files(Arc::new(FileSplit::scan("bench-data", &root, transform)?));

    bar.set_message("warm-up pass (page cache)");
    images_per_s(&split, Mode::Eval, 2, args, 1, &bar)?;

    let mut ours = Vec::new();
    for (name, mode) in [("train", Mode::Train), ("eval", Mode::Eval)] {
        bar.set_message(format!("ours, {name}, 1 thread"));
        let one = images_per_s(&split, mode, 1, args, reps, &bar)?;
        bar.set_message(format!("ours, {name}, 2 threads"));
        let two = images_per_s(&split, mode, 2, args, reps, &bar)?;
        ours.push((name, one, two));
    }

    bar.set_message("Pillow peer (python3)");
    let peer = pillow::run(&root, args.batch_size, reps, args.seed)?;
    bar.inc(1);
    bar.finish_and_clear();

    let (pillow, pillow_note) = match peer {
        Peer::Measured(run) => (Some(run), None),
        Peer::Absent(note) => (None, Some(note)),
    };
    let modes = ours
        .into_iter()
        .map(|(name, one, two)| {
            let p = pillow.as_ref().map(|p| match name {
                "train" => p.train_images_per_s,
                _ => p.eval_images_per_s,
            });
            ModeRow::new(name, one, two, p)
        })
        .collect();
    let report = Report {
        images,
        classes: folder::CLASSES,
        image_sizes: ["500x375", "375x500"],
        jpeg_quality: folder::JPEG_QUALITY,
        mean_file_kib: bytes as f64 / images as f64 / 1024.0,
        resize: transform.resize,
        crop: transform.crop,
        batch_size: args.batch_size,
        reps,
        seed: args.seed,
        cpu: cpu_line(),
        load_average_1m,
        pillow,
        pillow_note,
        modes,
    };
    print_table(&report);
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| crate::target_dir().join("bench-data.json"));
    crate::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Images/s of whole passes over `split` in `mode` on a pool of `threads`
/// (median of `reps`); epoch `r` for pass `r`, so training crops differ.
fn images_per_s(
    split: &Split,
    mode: Mode,
    threads: usize,
    args: &Args,
    reps: usize,
    bar: &ProgressBar,
) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building a rayon pool")?;
    let config = LoaderConfig::for_split(split, mode, args.batch_size, args.seed);
    let loader = Loader::new(split.clone(), config)?;
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps {
        let (seconds, seen) = pool.install(|| -> Result<(f64, usize)> {
            let start = Instant::now();
            let mut seen = 0;
            for batch in loader.epoch(rep as u64) {
                seen += batch?.len();
            }
            Ok((start.elapsed().as_secs_f64(), seen))
        })?;
        if seen != split.len() {
            // A skipped file would make the figure look better than it is.
            bail!("{} of {} images decoded", seen, split.len());
        }
        times.push(seconds);
        bar.inc(1);
    }
    times.sort_by(f64::total_cmp);
    Ok(split.len() as f64 / times[times.len() / 2])
}

/// The 1-minute load average (`/proc/loadavg`; Linux only).
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The CPU's model name and the SIMD extensions that matter to the
/// decoders and resizers (`/proc/cpuinfo`; Linux only).
fn cpu_line() -> String {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => cpu_line_from(&text),
        Err(_) => "CPU: unknown (no /proc/cpuinfo)".to_string(),
    }
}

fn cpu_line_from(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown model".to_string());
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| match flags.split_whitespace().any(|x| x == f) {
        true => "yes",
        false => "no",
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "CPU: {model}, {cpus} logical CPUs; avx2 {}, avx512f {}, avx512_vnni {}",
        has("avx2"),
        has("avx512f"),
        has("avx512_vnni")
    )
}

fn print_table(r: &Report) {
    println!(
        "dgms-data folder pipeline: {} JPEGs ({} and {}, q{}, mean {:.0} KiB), \
         resize {} + crop {}, batch {}, median of {}",
        r.images,
        r.image_sizes[0],
        r.image_sizes[1],
        r.jpeg_quality,
        r.mean_file_kib,
        r.resize,
        r.crop,
        r.batch_size,
        r.reps
    );
    println!("{}", r.cpu);
    if let Some(load) = r.load_average_1m.filter(|&l| l > 0.5) {
        println!(
            "note: load average {load:.2} before the run: other processes shared the \
             cores, so the 2-thread figures and the ratios are noisy"
        );
    }
    match (&r.pillow, &r.pillow_note) {
        (Some(p), _) => println!(
            "Pillow {} + numpy {} (Python {}), one process, one thread",
            p.pillow, p.numpy, p.python
        ),
        (None, Some(note)) => println!("{note}"),
        (None, None) => {}
    }
    println!(
        "{:<8} {:>12} {:>12} {:>7} {:>14} {:>15}",
        "images/s", "ours 1 thr", "ours 2 thr", "2t/1t", "Pillow 1 proc", "ours 1t/Pillow"
    );
    let opt = |v: Option<f64>, suffix: &str| match v {
        Some(v) => format!("{v:.1}{suffix}"),
        None => "-".to_string(),
    };
    for m in &r.modes {
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>6.2}x {:>14} {:>15}",
            m.mode,
            m.ours_1_thread,
            m.ours_2_threads,
            m.scaling_2t_over_1t,
            opt(m.pillow_1_process, ""),
            m.ours_1_thread_over_pillow
                .map_or("-".to_string(), |v| format!("{v:.2}x")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_null_without_pillow_and_present_with_it() {
        let without = serde_json::to_value(ModeRow::new("eval", 100.0, 180.0, None)).unwrap();
        assert!(without["pillow_1_process"].is_null());
        assert!(without["ours_1_thread_over_pillow"].is_null());
        assert_eq!(without["scaling_2t_over_1t"], 1.8);

        let with = serde_json::to_value(ModeRow::new("eval", 100.0, 180.0, Some(50.0))).unwrap();
        assert_eq!(with["pillow_1_process"], 50.0);
        assert_eq!(with["ours_1_thread_over_pillow"], 2.0);
    }

    #[test]
    fn our_resize_rounding_is_the_peers() {
        // The peer (and torchvision) takes the long side as Python's
        // int(size * long / short); for these magnitudes the float quotient
        // is never within rounding of an integer, so that is floor division.
        for size in [224u32, 256, 288] {
            for w in (1..=1200).step_by(7) {
                for h in (1..=1200).step_by(11) {
                    let (short, long) = (w.min(h), w.max(h));
                    let new_long = size * long / short;
                    let want = if w <= h {
                        (size, new_long)
                    } else {
                        (new_long, size)
                    };
                    let got = dgms_data::image_transform::resized_size(w, h, size);
                    assert_eq!(got, want, "{w}x{h} -> shorter side {size}");
                }
            }
        }
        assert_eq!(
            dgms_data::image_transform::resized_size(500, 375, 256),
            (341, 256)
        );
    }

    #[test]
    fn the_cpu_line_names_the_model_and_the_extensions() {
        let text = "processor\t: 0\nmodel name\t: Test CPU @ 2GHz\nflags\t\t: fpu avx2 avx512f\n";
        let line = cpu_line_from(text);
        assert!(line.contains("Test CPU @ 2GHz"), "{line}");
        assert!(
            line.contains("avx2 yes") && line.contains("avx512f yes"),
            "{line}"
        );
        assert!(line.contains("avx512_vnni no"), "{line}");
    }
}
