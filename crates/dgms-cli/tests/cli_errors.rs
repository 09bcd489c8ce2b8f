//! The `dgms` binary on bad input and misuse: each case checks the exit
//! code and the first line of stderr, and that nothing the command read
//! was changed. (Issue 10: outputs never clobber inputs, sizes are checked,
//! non-finite inputs are refused, a closed stdout ends quietly.)

#![cfg(unix)] // symlinks, hard links and the closed-pipe behaviour

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};

/// Files every case starts from, made once: a hardened checkpoint (PTQ,
/// K = 4), its packed export, a copy of the full-precision weights and two
/// inputs (finite, and with a NaN).
struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

fn write_input(path: &Path, values: Vec<f32>) {
    let t = Tensor::from_vec(values, (2, 1, 28, 28), &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("input", t)].into_iter().collect(), path).unwrap();
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let s = |n: &str| root.join(n).to_str().unwrap().to_string();
        std::fs::copy(common::pretrained(), root.join("fp.safetensors")).unwrap();
        common::dgms_ok(&[
            "quantize",
            "--model",
            "resnet20",
            "--weights",
            &s("fp.safetensors"),
            "--k",
            "4",
            "--out",
            &s("hard.safetensors"),
        ]);
        common::dgms_ok(&[
            "export",
            "--checkpoint",
            &s("hard.safetensors"),
            "--out",
            &s("m.dgms.safetensors"),
        ]);
        let values: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 7) as f32 * 0.1).collect();
        write_input(&root.join("x.safetensors"), values.clone());
        let mut nan = values;
        nan[28 * 28 + 3 * 28 + 5] = f32::NAN; // image 1, row 3, column 5
        write_input(&root.join("x_nan.safetensors"), nan);
        Files { _dir: dir, root }
    })
}

/// Runs `dgms args`; returns (exit code, first line of stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "dgms {args:?}: {stderr}");
    let first = stderr.lines().next().unwrap_or("").to_string();
    (out.status.code(), first)
}

/// Asserts that `dgms args` fails with `code` and a first stderr line
/// starting with `prefix` and containing every one of `parts`.
fn fails(args: &[&str], code: i32, prefix: &str, parts: &[&str]) {
    let (status, first) = run(args);
    assert_eq!(status, Some(code), "dgms {args:?}: {first}");
    assert!(first.starts_with(prefix), "dgms {args:?}: {first}");
    for p in parts {
        assert!(first.contains(p), "dgms {args:?}: {first:?} lacks {p:?}");
    }
}

/// The fixture files every case reads.
const INPUTS: [&str; 5] = [
    "fp.safetensors",
    "hard.safetensors",
    "m.dgms.safetensors",
    "x.safetensors",
    "x_nan.safetensors",
];

/// Runs `body` and asserts that it left every input file unchanged.
fn leaves_inputs_unchanged(f: &Files, body: impl FnOnce()) {
    let snapshot = || INPUTS.map(|n| std::fs::read(f.path(n)).unwrap());
    let before = snapshot();
    body();
    assert!(before == snapshot(), "a refused command changed an input");
}

#[test]
fn outputs_never_replace_inputs() {
    let f = files();
    leaves_inputs_unchanged(f, || {
        let (packed, input) = (f.arg("m.dgms.safetensors"), f.arg("x.safetensors"));
        let infer = ["infer", "--packed", &packed, "--input", &input, "--out"];
        fails(
            &[&infer[..], &[&packed]].concat(),
            1,
            "error: --out ",
            &["is the same file as --packed", "m.dgms.safetensors"],
        );
        // The same file under another name: a hard link to the input.
        let hard = f.path("x_hardlink.safetensors");
        let _ = std::fs::remove_file(&hard);
        std::fs::hard_link(f.path("x.safetensors"), &hard).unwrap();
        fails(
            &[&infer[..], &[hard.to_str().unwrap()]].concat(),
            1,
            "error: --out ",
            &["is the same file as --input"],
        );
        std::fs::remove_file(&hard).unwrap();
        let hard_ckpt = f.arg("hard.safetensors");
        // A path that reaches the checkpoint through `..`.
        let dotted = f.root.join("sub/../hard.safetensors");
        std::fs::create_dir_all(f.root.join("sub")).unwrap();
        fails(
            &[
                "harden",
                "--checkpoint",
                &hard_ckpt,
                "--out",
                dotted.to_str().unwrap(),
            ],
            1,
            "error: --out ",
            &["same file as --checkpoint"],
        );
        std::fs::remove_dir(f.root.join("sub")).unwrap();
        fails(
            &["export", "--checkpoint", &hard_ckpt, "--out", &hard_ckpt],
            1,
            "error: --out ",
            &["same file as --checkpoint"],
        );
        let fp = f.arg("fp.safetensors");
        // The weights by name, and through a symlink to them.
        let link = f.path("fp_link.safetensors");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(f.path("fp.safetensors"), &link).unwrap();
        for out in [fp.clone(), f.arg("fp_link.safetensors")] {
            fails(
                &[
                    "quantize",
                    "--model",
                    "resnet20",
                    "--weights",
                    &fp,
                    "--k",
                    "4",
                    "--out",
                    &out,
                ],
                1,
                "error: --out ",
                &["same file as --weights"],
            );
        }
        std::fs::remove_file(&link).unwrap();
        fails(
            &["report", "--checkpoint", &hard_ckpt, "--json", &hard_ckpt],
            1,
            "error: --json ",
            &["same file as --checkpoint"],
        );
    });
}

#[test]
fn non_finite_inputs_are_refused_unless_allowed() {
    let f = files();
    let (packed, nan) = (f.arg("m.dgms.safetensors"), f.arg("x_nan.safetensors"));
    let out = f.arg("logits_nan.safetensors");
    let args = ["infer", "--packed", &packed, "--input", &nan, "--out", &out];
    fails(
        &args,
        1,
        "error: ",
        &[
            "x_nan.safetensors",
            "NaN at index [1, 0, 3, 5]",
            "--allow-nonfinite",
        ],
    );
    assert!(!f.path("logits_nan.safetensors").exists());
    let (code, first) = run(&[&args[..], &["--allow-nonfinite"]].concat());
    assert_eq!(code, Some(0), "{first}");
    assert!(f.path("logits_nan.safetensors").exists());
}

#[test]
fn sizes_are_checked() {
    let f = files();
    let (packed, input) = (f.arg("m.dgms.safetensors"), f.arg("x.safetensors"));
    let out = f.arg("logits_sizes.safetensors");
    let infer = [
        "infer", "--packed", &packed, "--input", &input, "--out", &out,
    ];
    for repeat in ["0", "100001", "18446744073709551615"] {
        fails(
            &[&infer[..], &["--repeat", repeat]].concat(),
            1,
            &format!("error: --repeat {repeat}: "),
            &["1..=100000"],
        );
    }
    // Too large for a usize at all: clap's usage error (exit 2).
    fails(
        &[&infer[..], &["--repeat", "99999999999999999999999"]].concat(),
        2,
        "error: invalid value",
        &["--repeat"],
    );
    let fp = f.arg("fp.safetensors");
    let q_out = f.arg("q_sizes.dgms.safetensors");
    let quantize = [
        "quantize",
        "--model",
        "resnet20",
        "--weights",
        &fp,
        "--out",
        &q_out,
    ];
    for (shape, says) in [
        ("1,28", "expected C,H,W (3 numbers), got 2"),
        ("0,28,28", "every dimension must be in 1..=16384, got 0"),
        (
            "1,28,99999",
            "every dimension must be in 1..=16384, got 99999",
        ),
        ("4096,16384,16384", "more than 67108864 values per image"),
    ] {
        fails(
            &[&quantize[..], &["--input-shape", shape]].concat(),
            1,
            &format!("error: --input-shape {shape}: "),
            &[says],
        );
    }
    assert!(!f.path("q_sizes.dgms.safetensors").exists());
    fails(
        &[
            "eval",
            "--checkpoint",
            &f.arg("hard.safetensors"),
            "--max-eval",
            "0",
        ],
        1,
        "error: --max-eval 0: ",
        &["at least 1"],
    );
    // The LSQ baseline needs 2^bits levels, and no flag that mixes it with
    // a mixture reaches training.
    let lsq_out = f.arg("lsq_run");
    fails(
        &[
            "dgms", "--lsq", "--k", "12", "--init", &fp, "--out", &lsq_out,
        ],
        1,
        "error: --lsq --k 12: ",
        &["power of two"],
    );
    fails(
        &[
            "dgms", "--lsq", "--k", "512", "--init", &fp, "--out", &lsq_out,
        ],
        1,
        "error: --k 512: ",
        &["power of two from 4 to 256"],
    );
    assert!(!f.path("lsq_run").exists());
}

#[test]
fn missing_and_unreadable_files_are_named() {
    let f = files();
    let missing = f.arg("no_such.dgms.safetensors");
    let out = f.arg("logits_missing.safetensors");
    fails(
        &[
            "infer",
            "--packed",
            &missing,
            "--input",
            &f.arg("x.safetensors"),
            "--out",
            &out,
        ],
        1,
        "error: reading ",
        &["no_such.dgms.safetensors"],
    );
    let garbage = f.path("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    fails(
        &["eval", "--checkpoint", garbage.to_str().unwrap()],
        1,
        "error: ",
        &["garbage.safetensors"],
    );
}

/// Runs `dgms args` with its stdout closed before it writes: it must end
/// quietly, with exit status 0, nothing on stderr, and its files written.
fn quiet_with_closed_stdout(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "dgms {args:?}: {stderr}");
    assert!(stderr.trim().is_empty(), "dgms {args:?}: {stderr}");
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_command_ends_quietly_when_stdout_is_closed() {
    let f = files();
    let (fp, hard) = (f.arg("fp.safetensors"), f.arg("hard.safetensors"));
    let ptq = [
        "quantize",
        "--model",
        "resnet20",
        "--weights",
        &fp,
        "--k",
        "4",
    ];
    let cases: Vec<(Vec<String>, Option<&str>)> = vec![
        (
            owned(&[&ptq[..], &["--out", &f.arg("pipe_q.safetensors")]].concat()),
            Some("pipe_q.safetensors"),
        ),
        (
            owned(&[&ptq[..], &["--out", &f.arg("pipe_q.dgms.safetensors")]].concat()),
            Some("pipe_q.dgms.safetensors"),
        ),
        (
            [
                "export",
                "--checkpoint",
                &hard,
                "--out",
                &f.arg("pipe_e.dgms.safetensors"),
            ]
            .map(String::from)
            .to_vec(),
            Some("pipe_e.dgms.safetensors"),
        ),
        (
            [
                "report",
                "--checkpoint",
                &hard,
                "--json",
                &f.arg("pipe_r.json"),
            ]
            .map(String::from)
            .to_vec(),
            Some("pipe_r.json"),
        ),
        (
            ["eval", "--checkpoint", &hard, "--max-eval", "8"]
                .map(String::from)
                .to_vec(),
            None,
        ),
        (
            [
                "infer",
                "--packed",
                &f.arg("m.dgms.safetensors"),
                "--input",
                &f.arg("x.safetensors"),
                "--out",
                &f.arg("pipe_logits.safetensors"),
            ]
            .map(String::from)
            .to_vec(),
            Some("pipe_logits.safetensors"),
        ),
    ];
    for (args, writes) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        quiet_with_closed_stdout(&args);
        if let Some(name) = writes {
            assert!(f.path(name).exists(), "dgms {args:?} did not write {name}");
        }
    }
    quiet_with_closed_stdout(&["--help"]);
    quiet_with_closed_stdout(&["--version"]);
}
