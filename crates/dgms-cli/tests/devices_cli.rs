//! `--devices LIST` of `pretrain` and `dgms` through the binary: a
//! malformed list or one naming a GPU twice is a usage error (exit 2), a
//! `--ranks` that disagrees with the list is refused (exit 1), and in a
//! build without CUDA any `--devices` is a clean error (exit 1); none of
//! them writes the run directory.

mod common;

use std::path::Path;

use common::{fails_with, path_str as s, pretrained};

/// A tiny run's flags.
const TINY: [&str; 8] = [
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--max-batches",
    "2",
    "--max-eval",
    "16",
];

/// `pretrain` and `dgms` with `extra` after the tiny run's flags.
fn both(run: &Path, fp: &Path, extra: &[&str]) -> [Vec<String>; 2] {
    let mut pre = vec!["pretrain", "--out", s(run)];
    pre.extend(TINY);
    pre.extend(extra);
    let mut fine = vec!["dgms", "--init", s(fp), "--k", "4", "--out", s(run)];
    fine.extend(TINY);
    fine.extend(extra);
    [pre, fine].map(|a| a.into_iter().map(String::from).collect())
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn malformed_device_lists_are_usage_errors_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let fp = pretrained();
    for (list, says) in [
        ("0,,1", "\"\" is not a GPU number"),
        ("cuda:0", "\"cuda:0\" is not a GPU number"),
        ("a,b", "\"a\" is not a GPU number"),
        ("1,0,1", "GPU 1 is listed twice"),
    ] {
        for args in both(&run, &fp, &["--devices", list]) {
            let stderr = fails_with(&refs(&args), 2);
            assert!(stderr.contains("--devices <LIST>"), "{list}: {stderr}");
            assert!(stderr.contains(says), "{list}: {stderr}");
        }
    }
    assert!(!run.exists(), "a refused run created its directory");
}

#[test]
fn ranks_that_disagree_with_the_devices_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let fp = pretrained();
    for args in both(&run, &fp, &["--devices", "0,1", "--ranks", "3"]) {
        let stderr = fails_with(&refs(&args), 1);
        assert_eq!(
            stderr.lines().next().unwrap_or_default(),
            "error: --ranks 3 --devices 0,1: --devices starts one rank per GPU (2); drop --ranks or make it 2",
            "{args:?}"
        );
    }
    assert!(!run.exists(), "a refused run created its directory");
}

/// With real inputs, so a binary that ignored the flag would train and
/// fail the test.
#[cfg(not(feature = "cuda"))]
#[test]
fn devices_without_cuda_is_a_clean_error_that_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let fp = pretrained();
    for extra in [
        &["--devices", "0,1"][..],
        &["--devices", "0"],
        &["--devices", "2,3", "--ranks", "2"],
    ] {
        for args in both(&run, &fp, extra) {
            let stderr = fails_with(&refs(&args), 1);
            assert_eq!(
                stderr.lines().next().unwrap_or_default(),
                format!(
                    "error: --devices {}: this dgms was built without CUDA: rebuild with --features cuda (and nccl for NCCL all-reduce)",
                    extra[1]
                ),
                "{args:?}"
            );
        }
    }
    assert!(!run.exists(), "a refused run created its directory");
}
