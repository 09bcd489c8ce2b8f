//! Fuzzes the checkpoint loader: `checkpoint::load_bytes` must return a
//! checkpoint or a typed error for every input and never panic; the
//! tensors of an accepted one fit in the input.
//!
//! Each input is tried twice: as is, and with its 8-byte header length
//! rewritten to the length of the JSON value that follows (as the packed
//! reader's target does), so that header edits reach the checks behind
//! the length check.
#![no_main]

use std::path::Path;

use dgms_train::train::checkpoint;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fn check(bytes: &[u8]) {
    if let Ok(ckpt) = checkpoint::load_bytes(Path::new("fuzz.safetensors"), bytes) {
        let total: usize = ckpt
            .tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        assert!(total <= bytes.len(), "{total} tensor bytes from {}", bytes.len());
    }
}

/// The input with its length prefix fixed to cover the first JSON value.
fn with_fixed_length(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.get(8..)?;
    let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<IgnoredAny>();
    stream.next()?.ok()?;
    let len = stream.byte_offset() as u64;
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(rest);
    (out != data).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(fixed) = with_fixed_length(data) {
        check(&fixed);
    }
});
