//! Fuzzes the packed-model reader: `PackedModel::from_bytes` must return a
//! model or a typed error for every input, never panic, and any model it
//! accepts must survive `to_bytes` -> `from_bytes` unchanged.
//!
//! Each input is tried twice: as is, and with its 8-byte header length
//! rewritten to the length of the JSON value that follows. Without the
//! second form almost every mutation that inserts or deletes a header byte
//! is stopped by the length check, so the metadata and layer checks behind
//! it would see little of the fuzzer's effort.
#![no_main]

use dgms_qsimd::format::PackedModel;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fn check(bytes: &[u8]) {
    if let Ok(model) = PackedModel::from_bytes(bytes) {
        let again = model.to_bytes().expect("a parsed model must serialize");
        let back = PackedModel::from_bytes(&again).expect("serialized model must parse");
        assert_eq!(back, model, "round trip changed the model");
        assert_eq!(
            back.to_bytes().expect("serialize twice"),
            again,
            "non-deterministic bytes"
        );
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
