//! Hostile `.pth` files: each ends quickly in a typed error naming the file
//! and the limit, never a stack overflow, an absurd allocation or a hang;
//! legitimate torch.save layouts (bare state dicts, training checkpoints,
//! pickles of every protocol) still load.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dgms_models::pth_scan::{self, PthScanError};
use dgms_models::{read_pth, ModelError};
use dgms_test_support::fixtures;
use zip::write::SimpleFileOptions;

/// Every hostile case must be refused within this (a bounded scan of a few
/// MB takes milliseconds; a candle parse of them would not end or abort).
const QUICK: Duration = Duration::from_secs(5);

fn repo_fixture(rel: &str) -> PathBuf {
    fixtures::repo_fixture(Path::new("fixtures").join(rel))
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A zip laid out as torch.save's: `archive/data.pkl` plus one stored
/// storage entry.
fn pth_with_pickle(pickle: &[u8]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/data/0", stored).unwrap();
    zip.write_all(&[0u8; 16]).unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

/// Reads `bytes` as `<name>.pth`; checks the error is the pre-scan's, names
/// the file, and happened quickly; returns the scan error.
fn refused(name: &str, bytes: &[u8]) -> PthScanError {
    let path = temp_file(&format!("{name}.pth"), bytes);
    let start = Instant::now();
    let err = read_pth(&path).expect_err(name);
    let took = start.elapsed();
    assert!(took < QUICK, "{name}: took {took:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("checkpoint {}: cannot read it: ", path.display())),
        "{name}: {msg}"
    );
    match err {
        ModelError::PthRefused { source, .. } => source,
        other => panic!("{name}: not refused by the pre-scan: {other:?}"),
    }
}

fn assert_limit(err: PthScanError, expected_what: &str) {
    match &err {
        PthScanError::Limit { what, offset, .. } => {
            assert!(what.contains(expected_what), "{err}");
            assert!(
                err.to_string().contains(&format!("at byte {offset}")),
                "{err}"
            );
        }
        other => panic!("expected a `{expected_what}` limit, got {other}"),
    }
}

#[test]
fn deep_mark_nesting_is_refused() {
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b'(', 1_000_000));
    p.push(b'.');
    assert_limit(refused("deep_marks", &pth_with_pickle(&p)), "marks");
}

#[test]
fn deep_list_nesting_is_refused() {
    // 1e6 empty lists each appended into the one below: a stack of 1e6.
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', 1_000_000));
    p.extend(std::iter::repeat_n(b'a', 999_999));
    p.push(b'.');
    assert_limit(refused("deep_lists", &pth_with_pickle(&p)), "stack size");
}

#[test]
fn deep_nesting_on_a_short_stack_is_refused() {
    // None wrapped in 1e6 one-element tuples: stack depth 1, nesting 1e6,
    // which candle's recursive drop would overflow the stack on.
    let mut p = b"\x80\x02N".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.push(b'.');
    assert_limit(
        refused("deep_tuples", &pth_with_pickle(&p)),
        "nesting depth",
    );
}

#[test]
fn memo_blow_up_is_refused() {
    // x = []; x = (x, x) forty times via the memo: 2^40 objects if copied.
    let mut p = b"\x80\x02]q\x00".to_vec();
    for _ in 0..40 {
        p.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    p.push(b'.');
    assert_limit(
        refused("memo_blow_up", &pth_with_pickle(&p)),
        "bytes of objects",
    );
}

#[test]
fn many_memo_entries_are_refused() {
    let mut p = b"\x80\x02N".to_vec();
    for id in 0..(pth_scan::MAX_MEMO as u32 + 1) {
        p.push(b'r');
        p.extend_from_slice(&id.to_le_bytes());
    }
    p.push(b'.');
    assert_limit(
        refused("memo_entries", &pth_with_pickle(&p)),
        "memo entries",
    );
}

#[test]
fn huge_declared_strings_are_refused() {
    // BINUNICODE8 declaring 2^40 bytes, BINUNICODE declaring 4 GiB - 1,
    // BINBYTES8 likewise: each with a few bytes behind it.
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "unicode8",
            [&[0x8d][..], &(1u64 << 40).to_le_bytes()].concat(),
        ),
        ("unicode", [&b"X"[..], &u32::MAX.to_le_bytes()].concat()),
        (
            "bytes8",
            [&[0x8e][..], &(1u64 << 40).to_le_bytes()].concat(),
        ),
    ];
    for (name, op) in cases {
        let p = [&b"\x80\x02"[..], &op, b"abc."].concat();
        let err = refused(name, &pth_with_pickle(&p));
        assert_limit(err, "declared length");
    }
}

#[test]
fn truncated_and_malformed_pickles_are_refused() {
    let full = std::fs::read(repo_fixture("pth/nested.p2.pkl")).unwrap();
    for (name, p) in [
        ("cut_half", full[..full.len() / 2].to_vec()),
        ("no_stop", full[..full.len() - 1].to_vec()),
        ("unknown_op", b"\x80\x02\xff.".to_vec()),
        ("underflow", b"\x80\x02a.".to_vec()),
        (
            "wide_long",
            [&b"\x80\x02\x8a\xc8"[..], &[1u8; 200], b"."].concat(),
        ),
        ("missing_memo", b"\x80\x02h\x07.".to_vec()),
    ] {
        let err = refused(name, &pth_with_pickle(&p));
        assert!(
            matches!(
                err,
                PthScanError::Malformed { .. } | PthScanError::Limit { .. }
            ),
            "{name}: {err}"
        );
    }
}

/// Sets the sizes of every central-directory record of `zip` (and of the
/// local header of the entry it names) to `size`.
fn declare_size(zip: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 46 <= zip.len() {
        if zip[i..i + 4] == *b"PK\x01\x02" {
            zip[i + 20..i + 24].copy_from_slice(&size.to_le_bytes());
            zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
            let local = u32::from_le_bytes(zip[i + 42..i + 46].try_into().unwrap()) as usize;
            zip[local + 18..local + 22].copy_from_slice(&size.to_le_bytes());
            zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        }
        i += 1;
    }
}

#[test]
fn zip_entry_declaring_a_huge_size_is_refused() {
    let mut bytes = pth_with_pickle(b"\x80\x02}.");
    declare_size(&mut bytes, 0xFFFF_FFF0);
    let err = refused("huge_entry", &bytes);
    let msg = err.to_string();
    assert!(matches!(err, PthScanError::Entry { .. }), "{msg}");
    assert!(msg.contains("past the end of the"), "{msg}");
}

#[test]
fn compressed_entries_are_refused() {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    // The writer with no compressor features can still label an entry.
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(b"\x80\x02}.").unwrap();
    zip.finish().unwrap();
    let mut bytes = out.into_inner();
    // Method field: local header offset 8, central record offset 10.
    bytes[8] = 8;
    let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 10] = 8;
    let err = refused("deflated", &bytes);
    assert!(err.to_string().contains("compressed"), "{err}");
}

#[test]
fn pickles_of_every_protocol_pass_the_scan() {
    for protocol in 0..=5 {
        let name = format!("pth/nested.p{protocol}.pkl");
        let bytes = std::fs::read(repo_fixture(&name)).unwrap();
        pth_scan::scan_pickle(&name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn training_checkpoint_with_optimizer_state_loads() {
    // Laid out as the DGMS authors' training loop saves: the state dict
    // under `state_dict`, beside epoch, accuracies and optimizer state.
    let tensors = read_pth(repo_fixture("pth/checkpoint.pth.tar")).unwrap();
    let mu = &tensors["network.layer1.0.conv1.sub_distribution.mu"];
    assert_eq!(mu.dims(), &[3]);
    assert_eq!(tensors["network.conv1.weight"].dims(), &[4, 3, 3, 3]);
    assert_eq!(tensors.len(), 7, "the state dict's tensors only");
}

#[test]
fn shared_pth_fixture_still_loads() {
    let Some(path) = fixtures::shared_fixture("fixtures/models/resnet18.pth") else {
        return;
    };
    let tensors = read_pth(&path).unwrap();
    assert_eq!(tensors.len(), 102, "resnet18's parameters and statistics");
}

/// The bytes of the `*data.pkl` entry of a stored zip, found through its
/// central directory (the sizes of a torch.save local header may be 0).
fn stored_pickle(zip: &[u8]) -> &[u8] {
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(zip[i..i + 4].try_into().unwrap()) as usize;
    let mut i = 0;
    while i + 46 <= zip.len() {
        if zip[i..i + 4] == *b"PK\x01\x02" {
            let name = &zip[i + 46..i + 46 + u16_at(i + 28)];
            if name.ends_with(b"data.pkl") {
                let (size, local) = (u32_at(i + 20), u32_at(i + 42));
                let data = local + 30 + u16_at(local + 26) + u16_at(local + 28);
                return &zip[data..data + size];
            }
        }
        i += 1;
    }
    panic!("no data.pkl entry");
}

#[test]
fn dgms_authors_checkpoint_pickle_passes_the_scan() {
    // Their released code's torch.save output (mixture layers, 230 entries).
    // The zip crate's detection of prepended data refuses this archive
    // (zip 9.8: "Invalid Central Directory header"); read_pth opens it at
    // offset 0, so the pickle must pass the scan and the file must read.
    let rel = "fixtures/reference-checkpoints/resnet20_dgms_k16.pth.tar";
    let Some(path) = fixtures::shared_fixture(rel) else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    pth_scan::scan_pickle(rel, stored_pickle(&bytes)).unwrap();
    let tensors = read_pth(&path).unwrap();
    // 224 state-dict entries less 19 batch norms' num_batches_tracked.
    assert_eq!(tensors.len(), 205);
}

#[test]
fn many_tensors_sharing_one_storage_are_refused() {
    // 200 views of one 4 KB storage in a 17 KB file: 800 KB if read.
    let path = repo_fixture("pth/shared_storage.pth");
    let start = Instant::now();
    let err = read_pth(&path).unwrap_err();
    assert!(start.elapsed() < QUICK);
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("tensors sharing storages"), "{msg}");
}
