//! Atomic writes and the output-is-input guard.

use std::path::Path;

use dgms_io::{ensure_not_input, is_same_file, write_atomic, write_atomic_with, IoError};

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn writes_creates_parents_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/out.bin");
    write_atomic(&path, b"first").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
    write_atomic(&path, b"second, longer").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
    assert_eq!(entries(&dir.path().join("a/b")), ["out.bin"]);
}

#[test]
fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    write_atomic(&path, b"old").unwrap();
    let err = write_atomic_with(&path, |w| {
        w.write_all(b"partial new content")?;
        Err(std::io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert!(matches!(err, IoError::Io { .. }), "{err}");
    assert!(err.to_string().contains("out.bin"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(entries(dir.path()), ["out.bin"]);
}

#[cfg(unix)]
#[test]
fn new_files_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let atomic = dir.path().join("atomic");
    write_atomic(&atomic, b"x").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&atomic), mode(&plain));
}

#[test]
fn a_path_without_file_name_is_an_error() {
    let err = write_atomic(Path::new("/"), b"x").unwrap_err();
    assert!(err.to_string().contains("writing /"), "{err}");
}

#[test]
fn same_file_by_path_relative_path_and_missing_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"x").unwrap();
    assert!(is_same_file(&input, &input));
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    assert!(is_same_file(&dir.path().join("sub/../in.bin"), &input));
    assert!(!is_same_file(&dir.path().join("other.bin"), &input));
    // Neither exists: same when they name the same place.
    assert!(is_same_file(
        &dir.path().join("new.bin"),
        &dir.path().join("sub/../new.bin")
    ));
}

#[cfg(unix)]
#[test]
fn same_file_through_symlinks_and_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"x").unwrap();
    let link = dir.path().join("link.bin");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = dir.path().join("hard.bin");
    std::fs::hard_link(&input, &hard).unwrap();
    assert!(is_same_file(&link, &input));
    assert!(is_same_file(&hard, &input));
    let copy = dir.path().join("copy.bin");
    std::fs::copy(&input, &copy).unwrap();
    assert!(!is_same_file(&copy, &input));
}

#[test]
fn ensure_not_input_names_both_flags() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.dgms.safetensors");
    let input = dir.path().join("x.safetensors");
    std::fs::write(&model, b"m").unwrap();
    std::fs::write(&input, b"i").unwrap();
    let inputs = [("--packed", model.as_path()), ("--input", input.as_path())];
    ensure_not_input("--out", &dir.path().join("logits.safetensors"), &inputs).unwrap();
    let err = ensure_not_input("--out", &model, &inputs).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("--out "), "{msg}");
    assert!(msg.contains("--packed"), "{msg}");
    assert!(msg.contains("m.dgms.safetensors"), "{msg}");
}
