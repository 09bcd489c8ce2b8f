//! The training commands of the `dgms` binary on bad input and misuse:
//! the exit code and the first line of the message; a resume through the
//! binary takes everything from the checkpoint and equals an uninterrupted
//! run; Ctrl-C (SIGINT) stops a run with exit 130 and says how to resume.

mod common;
mod train_support;

use std::path::Path;

use common::{dgms, dgms_ok, path_str as s, pretrained};
use train_support::assert_same_run;

/// A tiny run, as (flag, value) pairs.
const TINY: [(&str, &str); 5] = [
    ("--epochs", "2"),
    ("--batch-size", "8"),
    ("--max-batches", "2"),
    ("--max-eval", "16"),
    ("--seed", "3"),
];

/// Runs `dgms args` expecting exit code `code`; returns the first line of
/// stderr.
fn first_error_line(args: &[&str], code: i32) -> String {
    let out = dgms(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "dgms {args:?}: {stderr}");
    stderr.lines().next().unwrap_or_default().to_string()
}

/// The TINY flags (those not in `extra`), then `extra`.
fn tiny_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = Vec::new();
    for (flag, value) in TINY {
        let overridden = extra
            .iter()
            .any(|e| *e == flag || e.starts_with(&format!("{flag}=")));
        if !overridden {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    args
}

fn pretrain_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["pretrain"];
    args.extend(tiny_args(extra));
    args.extend(["--out", out]);
    args
}

#[test]
fn bad_hyper_parameters_name_their_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cases: [(&[&str], &str); 11] = [
        (
            &["--lr", "nan"],
            "error: --lr NaN: must be a finite number > 0",
        ),
        (&["--lr=-1"], "error: --lr -1: must be a finite number > 0"),
        (
            &["--momentum", "1.5"],
            "error: --momentum 1.5: must be a finite number in [0, 1)",
        ),
        (
            &["--weight-decay", "inf"],
            "error: --weight-decay inf: must be a finite number >= 0",
        ),
        (
            &["--gamma", "0"],
            "error: --gamma 0: must be a finite number > 0",
        ),
        (&["--epochs", "0"], "error: --epochs 0: must be at least 1"),
        (
            &["--batch-size", "0"],
            "error: --batch-size 0: must be in 1..=65536",
        ),
        (
            &["--batch-size", "100000"],
            "error: --batch-size 100000: must be in 1..=65536",
        ),
        (
            &["--max-batches", "0"],
            "error: --max-batches 0: must be at least 1",
        ),
        (
            &["--max-eval", "0"],
            "error: --max-eval 0: must be at least 1",
        ),
        (
            &["--schedule", "multi-step", "--milestones", "2,1"],
            "error: --milestones 2,1: must be strictly increasing",
        ),
    ];
    for (extra, expected) in cases {
        let line = first_error_line(&pretrain_args(s(&out), extra), 1);
        assert_eq!(line, expected, "{extra:?}");
    }
    assert!(!out.exists(), "a refused run writes nothing");

    let init = pretrained();
    for (extra, expected) in [
        (["--k", "1"], "error: --k 1: must be in 2..=256"),
        (
            ["--tau", "nan"],
            "error: --tau NaN: must be a finite number > 0",
        ),
    ] {
        let mut args = vec!["dgms", "--init", s(&init)];
        args.extend(tiny_args(&extra));
        args.extend(["--out", s(&out)]);
        assert_eq!(first_error_line(&args, 1), expected);
    }
}

#[test]
fn resume_takes_the_checkpoint_configuration_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    dgms_ok(&pretrain_args(s(&straight), &[]));
    dgms_ok(&pretrain_args(s(&split), &["--stop-after", "1"]));
    let last = split.join("last.safetensors");

    // Training again into the run without --resume.
    let line = first_error_line(&pretrain_args(s(&split), &[]), 1);
    assert!(
        line.starts_with(&format!("error: {} already holds a run", split.display()))
            && line.contains("--resume")
            && line.contains("--force"),
        "{line}"
    );

    // A flag that would change the run.
    for (flag, value, saved) in [
        ("--lr", "0.5", "0.1"),
        ("--seed", "4", "3"),
        ("--max-batches", "3", "2"),
        ("--model", "vggsmall", "\"resnet20\""),
    ] {
        let line = first_error_line(&["pretrain", "--resume", s(&last), flag, value], 1);
        let shown = if flag == "--model" {
            "\"vggsmall\""
        } else {
            value
        };
        let expected = format!("error: {flag} {shown} differs from the checkpoint's {saved}");
        if flag == "--model" {
            assert!(
                line.contains("checkpoint of model resnet20, not vggsmall"),
                "{line}"
            );
        } else {
            assert!(line.starts_with(&expected), "{line} (expected {expected})");
        }
    }
    // --out elsewhere, --force with --resume, the other command.
    let line = first_error_line(
        &["pretrain", "--resume", s(&last), "--out", s(&straight)],
        1,
    );
    assert!(
        line.contains("is not the directory of the checkpoint"),
        "{line}"
    );
    first_error_line(&["pretrain", "--resume", s(&last), "--force"], 2);
    let line = first_error_line(&["dgms", "--resume", s(&last)], 1);
    assert!(
        line.contains("resume it with `dgms pretrain --resume"),
        "{line}"
    );
    // A fresh run needs --out.
    let line = first_error_line(&["pretrain", "--epochs", "1"], 1);
    assert!(line.starts_with("error: --out DIR is required"), "{line}");

    // Flags equal to the checkpoint's are accepted; the rest comes from it.
    dgms_ok(&[
        "pretrain",
        "--resume",
        s(&last),
        "--epochs",
        "2",
        "--seed",
        "3",
    ]);
    assert_same_run(&straight, &split);

    // --force starts over.
    dgms_ok(&pretrain_args(s(&split), &["--force"]));
    assert_same_run(&straight, &split);
}

/// The issue's case: `--lr nan` once trained, counted NaN logits as right
/// and saved the epoch as best; now it is refused before anything runs.
#[test]
fn nan_learning_rate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let args = [
        "pretrain",
        "--lr",
        "nan",
        "--epochs",
        "1",
        "--max-batches",
        "1",
        "--batch-size",
        "16",
        "--max-eval",
        "64",
        "--out",
        s(&out),
    ];
    assert_eq!(
        first_error_line(&args, 1),
        "error: --lr NaN: must be a finite number > 0"
    );
    assert!(!out.join("best.safetensors").exists());
}

/// An lr finite in f64 but infinite in f32: the loss of the only step is
/// finite, its update is not; the run stops naming the step.
#[test]
fn divergence_in_the_last_step_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let line = first_error_line(
        &pretrain_args(
            s(&out),
            &[
                "--lr",
                "1e39",
                "--schedule",
                "constant",
                "--max-batches",
                "1",
                "--epochs",
                "1",
            ],
        ),
        1,
    );
    assert!(
        line.starts_with("error: ")
            && line.contains("is not finite after optimizer step 1 (epoch 1"),
        "{line}"
    );
    assert!(!out.join("last.safetensors").exists());
    assert!(!out.join("best.safetensors").exists());
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_with_130_and_resume_finishes_the_same_run() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let (straight, run) = (dir.path().join("straight"), dir.path().join("run"));
    let long = ["--epochs", "8"];
    dgms_ok(&pretrain_args(s(&straight), &long));

    let child = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(pretrain_args(s(&run), &long))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let last = run.join("last.safetensors");
    let start = Instant::now();
    while !last.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let mut lines = stderr.lines();
    assert_eq!(
        lines.next(),
        Some("interrupt: stopping at the next step (Ctrl-C again to exit at once)")
    );
    let message = lines.next().unwrap_or_default();
    let resume = format!("dgms pretrain --resume {}", last.display());
    assert!(
        message.starts_with("interrupted: training stopped at step")
            && message.contains(&format!("the last good checkpoint is {}", last.display()))
            && message.ends_with(&format!("resume with: {resume}")),
        "{message}"
    );
    // The command it names finishes the run as if never stopped.
    dgms_ok(&["pretrain", "--resume", s(&last)]);
    assert_same_run(&straight, &run);
}

/// A second Ctrl-C exits at once, also with 130; whatever was written is
/// whole (every write is atomic), and the run resumes from it.
#[cfg(unix)]
#[test]
fn a_second_ctrl_c_exits_at_once() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(pretrain_args(s(&run), &["--epochs", "8"]))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let last = run.join("last.safetensors");
    let start = Instant::now();
    while !last.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    // (Fails harmlessly if the run already stopped at a step boundary.)
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.starts_with("interrupt: stopping at the next step"),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted again: exiting now")
            || stderr.contains("interrupted: training stopped at step"),
        "{stderr}"
    );
    // Whichever came first (the second Ctrl-C or the step boundary), the
    // checkpoint is whole and resumes to the end.
    dgms_ok(&["pretrain", "--resume", s(&last)]);
}

/// `--ranks 2` trains with two in-process data-parallel ranks into one run
/// directory (rank 0 alone writes it); `--ranks 0` is refused by the
/// parser.
#[test]
fn ranks_train_into_one_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let outcome = dgms_ok(&pretrain_args(s(&out), &["--ranks", "2"]));
    assert!(outcome.contains("\"steps\": 4"), "{outcome}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let line = first_error_line(&pretrain_args(s(&out), &["--ranks", "0"]), 2);
    assert!(line.contains("--ranks"), "{line}");
}

/// `--ranks 2 --rank-processes` (rank 1 a child process, the gradients
/// reduced over local TCP) writes the run that `--ranks 2` (threads)
/// writes, bit for bit; so do two "machines" (`--nodes 2`, one rank
/// each, meeting at --rendezvous), of which only node 0 writes; the
/// multi-machine flags are checked before anything starts.
#[test]
fn rank_processes_reproduce_rank_threads_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (threads, processes) = (dir.path().join("threads"), dir.path().join("processes"));
    dgms_ok(&pretrain_args(s(&threads), &["--ranks", "2"]));
    let outcome = dgms_ok(&pretrain_args(
        s(&processes),
        &["--ranks", "2", "--rank-processes"],
    ));
    assert!(outcome.contains("\"steps\": 4"), "{outcome}");
    assert_same_run(&threads, &processes);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (node0, node1) = (dir.path().join("node0"), dir.path().join("node1"));
    let node = |rank: &str, out: &Path| {
        let mut args = pretrain_args(s(out), &["--nodes", "2", "--node-rank", rank]);
        args.extend(["--rendezvous", &addr]);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let (a0, a1) = (node("0", &node0), node("1", &node1));
    let second = std::thread::spawn(move || {
        let a1: Vec<&str> = a1.iter().map(String::as_str).collect();
        dgms(&a1)
    });
    let a0: Vec<&str> = a0.iter().map(String::as_str).collect();
    dgms_ok(&a0);
    let out1 = second.join().unwrap();
    assert!(
        out1.status.success(),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    assert_same_run(&threads, &node0);
    assert!(!node1.exists(), "node 1 wrote a run directory");

    let out = dir.path().join("bad");
    let cases: [(&[&str], &str); 3] = [
        (&["--nodes", "2"], "needs --rendezvous"),
        (
            &[
                "--nodes",
                "2",
                "--node-rank",
                "2",
                "--rendezvous",
                "127.0.0.1:1",
            ],
            "--node-rank 2: must be below --nodes 2",
        ),
        (&["--rendezvous", "127.0.0.1:1"], "belong to a run with"),
    ];
    for (extra, want) in cases {
        let line = first_error_line(&pretrain_args(s(&out), extra), 1);
        assert!(line.contains(want), "{extra:?}: {line}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}
