//! The Pillow peer: `scripts/bench_data_pillow.py` run with the benches'
//! Python ([`crate::python`]: `DGMS_PYTHON` or `python3`) on the same
//! folder, when Pillow and numpy import. It is optional (CI never
//! installs it): without it the bench still reports our figures.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::python;
use serde::{Deserialize, Serialize};

/// What the script prints (one JSON line).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PillowRun {
    pub images: usize,
    pub pillow: String,
    pub numpy: String,
    pub python: String,
    pub train_images_per_s: f64,
    pub eval_images_per_s: f64,
}

/// The peer's result, or why there is none (printed and kept in the JSON).
pub enum Peer {
    Measured(PillowRun),
    Absent(String),
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("bench_data_pillow.py")
}

/// Runs the peer on `folder`. A missing Pillow is `Absent`; a script that
/// fails once Pillow imports is an error (a bug to fix, not a setup gap).
pub fn run(folder: &Path, batch_size: usize, reps: usize, seed: u64) -> Result<Peer> {
    if let Some(why) = python::unavailable("PIL, numpy", "pip install pillow numpy") {
        return Ok(Peer::Absent(format!(
            "{why}: ratios against Pillow not measured"
        )));
    }
    let out = Command::new(python::python())
        .arg(script())
        .arg(folder)
        .args(["--batch-size", &batch_size.to_string()])
        .args(["--reps", &reps.to_string()])
        .args(["--seed", &seed.to_string()])
        // One DataLoader worker is one thread: keep numpy's BLAS (unused
        // here, but it may spawn threads on import) to one as well.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output()
        .with_context(|| format!("running {} scripts/bench_data_pillow.py", python::python()))?;
    if !out.status.success() {
        bail!(
            "scripts/bench_data_pillow.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Peer::Measured(parse(&String::from_utf8_lossy(
        &out.stdout,
    ))?))
}

/// The script's last stdout line as a [`PillowRun`].
pub fn parse(stdout: &str) -> Result<PillowRun> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("the Pillow peer printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("the Pillow peer printed `{line}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_parsed() {
        let text =
            "noise\n{\"images\": 4, \"batch_size\": 2, \"reps\": 1, \"pillow\": \"13.0.0\", \
                    \"numpy\": \"2.4.6\", \"python\": \"3.12.3\", \
                    \"train_images_per_s\": 10.5, \"eval_images_per_s\": 12.0}\n";
        let run = parse(text).unwrap();
        assert_eq!((run.images, run.eval_images_per_s), (4, 12.0));
        assert!(parse("").is_err());
        assert!(parse("{\"images\": 4}").is_err(), "missing fields accepted");
    }
}
