//! Crash consistency of a real training run: the `dgms` binary is
//! SIGKILLed at many moments (by time, and inside saves: when one of
//! dgms-io's temporary files `.<file>.<random>.tmp` appears in the run
//! directory), resumed each time from `last.safetensors` (or started over
//! with `--force` when no checkpoint exists yet) until done; the final
//! checkpoints (every tensor: weights, batch-norm statistics, optimizer
//! state) and `metrics.jsonl` (every field but the wall-clock `seconds`)
//! must equal an uninterrupted run's, bit for bit.
#![cfg(unix)]

mod common;
mod train_support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dgms_ok;
use train_support::assert_same_run;

/// A short run: many short epochs, so that kills land in every phase.
const RUN: [&str; 11] = [
    "pretrain",
    "--epochs",
    "24",
    "--batch-size",
    "8",
    "--max-batches",
    "2",
    "--max-eval",
    "16",
    "--lr",
    "0.05",
];
/// Epochs of [`RUN`].
const EPOCHS: usize = 24;
/// Kills that must land (the child still running when killed).
const KILLS: usize = 24;

enum Kill {
    After(Duration),
    InsideSave(usize),
}

/// The i-th kill: alternating, by time (0.5 to 3 epochs' worth of the
/// uninterrupted run after the start, so that the earlier ones land in the
/// start-up, the later ones in training, evaluation or saves) and inside
/// the n-th save of a process (n = 1: config.json, then resume's
/// metrics.jsonl, then each epoch's best, last and metrics.jsonl).
fn kill(i: usize, epoch_time: Duration) -> Kill {
    if i.is_multiple_of(2) {
        Kill::After(epoch_time.mul_f64(0.5 + 0.5 * ((i / 2) % 6) as f64))
    } else {
        Kill::InsideSave(1 + (i / 2) % 6)
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dgms")
}

/// The arguments of the next attempt: resume when a checkpoint exists,
/// else start over.
fn next_args(run: &Path) -> Vec<String> {
    let last = run.join("last.safetensors");
    if last.exists() {
        vec![
            "pretrain".into(),
            "--resume".into(),
            last.to_str().unwrap().into(),
        ]
    } else {
        let mut args: Vec<String> = RUN.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--force".into(),
            "--out".into(),
            run.to_str().unwrap().into(),
        ]);
        args
    }
}

/// Epochs the run in `run` has recorded.
fn epochs_done(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count())
}

/// Whether the run in `run` completed every epoch.
fn finished(run: &Path) -> bool {
    epochs_done(run) == EPOCHS
}

/// Temporary files of dgms-io in `dir`.
fn temp_files(dir: &Path) -> HashSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with('.') && name.ends_with(".tmp")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one attempt under `kill`; returns whether the process was killed
/// and whether a temporary file existed at that instant.
fn attempt(run: &Path, kill: &Kill) -> (bool, bool) {
    // Left behind by earlier kills (a SIGKILL leaves no time to clean up).
    let stale = temp_files(run);
    let mut seen = stale.clone();
    let mut child = spawn(&next_args(run));
    let start = Instant::now();
    let mut saves = 0;
    loop {
        if child.try_wait().unwrap().is_some() {
            return (false, false);
        }
        let fire = match kill {
            Kill::After(d) => start.elapsed() >= *d,
            Kill::InsideSave(n) => {
                let now = temp_files(run);
                saves += now.difference(&seen).count();
                seen.extend(now);
                saves >= *n
            }
        };
        if fire {
            let inside = temp_files(run).difference(&stale).next().is_some();
            child.kill().unwrap();
            child.wait().unwrap();
            return (true, inside);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn killed_and_resumed_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let started = Instant::now();
    let mut args: Vec<&str> = RUN.to_vec();
    let straight_s = straight.to_str().unwrap();
    args.extend(["--out", straight_s]);
    dgms_ok(&args);
    let run_time = started.elapsed();

    let run = dir.path().join("killed");
    std::fs::create_dir_all(&run).unwrap();
    let epoch_time = run_time / EPOCHS as u32;
    let (mut killed, mut inside_saves, mut attempts) = (0, 0, 0);
    // Epochs completed (lines of metrics.jsonl) when each kill landed.
    let mut at_epochs = Vec::new();
    // The uninterrupted run's time per epoch includes its cold start, so
    // later epochs can run faster: when one attempt gets more than two
    // epochs done before its kill, the time-based kills come sooner, so
    // that the 24 kills land before the run is through.
    let mut time_scale = 1.0;
    while killed < KILLS && !finished(&run) {
        let before = epochs_done(&run);
        let (k, inside) = attempt(&run, &kill(attempts, epoch_time.mul_f64(time_scale)));
        attempts += 1;
        killed += usize::from(k);
        inside_saves += usize::from(inside);
        if k {
            at_epochs.push(epochs_done(&run));
            if epochs_done(&run) > before + 2 {
                time_scale *= 0.5;
            }
        }
    }
    // Then to the end.
    let mut resumes = 0;
    loop {
        let status = spawn(&next_args(&run)).wait().unwrap();
        resumes += 1;
        if status.success() {
            break;
        }
        assert!(resumes < 5, "the run does not finish: {status}");
    }
    println!(
        "{killed} kills in {attempts} attempts ({inside_saves} while a temporary file existed, \
         i.e. inside a save), at epochs {at_epochs:?} of {EPOCHS}; uninterrupted run {:.1} s, \
         total {:.1} s",
        run_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        killed >= 20,
        "only {killed} kills landed before the run finished"
    );
    assert!(inside_saves >= 3, "only {inside_saves} kills inside saves");
    assert_same_run(&straight, &run);
}
