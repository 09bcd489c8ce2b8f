//! Every safetensors reader of the project (checkpoints, `--init` weights,
//! `infer --input`, packed models, `export --weights`) refuses each corrupt
//! file through the shared structural check, with a message naming the file
//! and the problem.

mod common;

use common::chain;
use std::error::Error;
use std::path::{Path, PathBuf};

use dgms_train::infer::{read_input, read_packed};
use dgms_train::train::checkpoint;

/// A safetensors file from a header and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Each corrupt file and words its message must contain.
fn corrupt_files() -> Vec<(&'static str, Vec<u8>, &'static [&'static str])> {
    let x = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut past_end = file(x, &[0; 8]);
    past_end[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    vec![
        (
            "header_past_end",
            past_end,
            &["header length 1000000", "past the end"][..],
        ),
        (
            "overlapping",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0; 8],
            ),
            &["tensor `b`", "overlap"],
        ),
        (
            "shape_overflow",
            file(
                r#"{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            &["tensor `x`", "overflows"],
        ),
        (
            "unknown_dtype",
            file(
                r#"{"x":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            &["tensor `x`", "unknown dtype `Q7`"],
        ),
        ("trailing_bytes", file(x, &[0; 12]), &["4 trailing bytes"]),
    ]
}

type Reader = fn(&Path) -> Option<String>;

fn readers() -> [(&'static str, Reader); 6] {
    fn err<T, E: Error>(r: Result<T, E>) -> Option<String> {
        r.err().map(|e| chain(&e))
    }
    [
        ("checkpoint::load", |p| err(checkpoint::load(p))),
        ("checkpoint::load_tensors (--init)", |p| {
            err(checkpoint::load_tensors(p))
        }),
        ("infer --input", |p| err(read_input(p))),
        ("infer --packed", |p| err(read_packed(p))),
        ("PackedModel::read", |p| {
            err(dgms_qsimd::format::PackedModel::read(p))
        }),
        ("dgms_models::load_tensors (export --weights)", |p| {
            err(dgms_models::load_tensors(p))
        }),
    ]
}

#[test]
fn every_reader_refuses_every_corrupt_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (case, bytes, words) in corrupt_files() {
        let path: PathBuf = dir.path().join(format!("{case}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        for (reader, read) in readers() {
            let msg = read(&path).unwrap_or_else(|| panic!("{reader} accepted {case}"));
            assert!(
                msg.contains(&path.display().to_string()),
                "{reader}, {case}: `{msg}` does not name the file"
            );
            for w in words {
                assert!(msg.contains(w), "{reader}, {case}: `{msg}` lacks `{w}`");
            }
        }
    }
}

#[test]
fn a_valid_file_passes_the_check_in_every_reader() {
    // The input reader accepts a well-formed `input`; the check is not what
    // refuses the corrupt files above for some unrelated reason.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.safetensors");
    let header = r#"{"input":{"dtype":"F32","shape":[1,1,1,2],"data_offsets":[0,8]}}"#;
    let mut bytes = file(header, &[]);
    bytes.extend(1.5f32.to_le_bytes());
    bytes.extend((-2f32).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (data, dims) = read_input(&path).unwrap();
    assert_eq!(dims, [1, 1, 1, 2]);
    assert_eq!(data, [1.5, -2.0]);
    assert_eq!(checkpoint::load_tensors(&path).unwrap().len(), 1);
    assert_eq!(dgms_models::load_tensors(&path).unwrap().len(), 1);
}
