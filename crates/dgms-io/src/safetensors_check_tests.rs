use super::*;

/// A safetensors file from a header and a data section.
pub(crate) fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

const TWO: &str = r#"{"__metadata__":{"k":"v"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}}"#;

#[test]
fn a_valid_file_gives_its_layout_in_data_order() {
    let layout = check_safetensors(&file(TWO, &[0; 12])).unwrap();
    assert_eq!(layout.header_len, TWO.len() as u64);
    assert_eq!(layout.data_start, 8 + TWO.len() as u64);
    let names: Vec<_> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(layout.tensors[1].shape, [2]);
    assert_eq!(layout.metadata.unwrap()["k"], "v");
}

#[test]
fn empty_and_padded_headers_are_valid() {
    let layout = check_safetensors(&file("{}", &[])).unwrap();
    assert!(layout.tensors.is_empty());
    assert!(check_safetensors(&file("{}   ", &[])).is_ok());
    // A zero-sized tensor holds no bytes.
    let h = r#"{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#;
    assert!(check_safetensors(&file(h, &[])).is_ok());
}

/// Each corrupt file and the words its error must contain.
pub(crate) fn corrupt_cases() -> Vec<(&'static str, Vec<u8>, &'static [&'static str])> {
    let over = |h: &str| file(h, &[0; 8]);
    let mut past_end = file(TWO, &[0; 12]);
    past_end[..8].copy_from_slice(&(TWO.len() as u64 + 100).to_le_bytes());
    let mut huge_header = file("{}", &[]);
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    vec![
        ("short", b"abc".to_vec(), &["too short"][..]),
        (
            "header_past_end",
            past_end,
            &["header length", "past the end"],
        ),
        (
            "header_over_limit",
            huge_header,
            &["header length", "limit"],
        ),
        (
            "not_json",
            file("{nope", &[]),
            &["not a safetensors header"],
        ),
        (
            "not_an_object",
            file("[1,2]", &[]),
            &["not a safetensors header"],
        ),
        (
            "overlapping",
            over(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            ),
            &["`b`", "overlap"],
        ),
        (
            "gap",
            over(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#),
            &["`a`", "gap"],
        ),
        (
            "shape_overflow",
            over(r#"{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#),
            &["`x`", "overflows"],
        ),
        (
            "shape_vs_offsets",
            over(r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#),
            &["`x`", "12 bytes", "hold 8"],
        ),
        (
            "unknown_dtype",
            over(r#"{"x":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}}"#),
            &["`x`", "unknown dtype `F128`"],
        ),
        (
            "offsets_past_data",
            over(r#"{"x":{"dtype":"U8","shape":[100],"data_offsets":[0,100]}}"#),
            &["`x`", "[0, 100)", "past the end of the 8-byte data section"],
        ),
        (
            "trailing_bytes",
            file(
                r#"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 5],
            ),
            &["trailing bytes"],
        ),
        (
            "duplicate_key",
            over(
                r#"{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
            ),
            &["`x`", "more than once"],
        ),
        (
            "bad_metadata",
            file(r#"{"__metadata__":{"k":1}}"#, &[]),
            &["__metadata__", "string map"],
        ),
        (
            "reversed_offsets",
            over(r#"{"x":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}"#),
            &["`x`", "end before they start"],
        ),
    ]
}

#[test]
fn corrupt_files_are_refused_naming_tensor_and_problem() {
    for (name, bytes, words) in corrupt_cases() {
        let msg = check_safetensors(&bytes).expect_err(name).to_string();
        for w in words {
            assert!(msg.contains(w), "{name}: `{msg}` lacks `{w}`");
        }
    }
}
