//! Fuzzes the `.pth` reader: `dgms_models::read_pth` must return tensors or
//! a typed error for every file, within libFuzzer's time and memory limits
//! (a hang, an allocation past `-rss_limit_mb` or a stack overflow is a
//! finding), and never panic outside the reader's own guard.
//!
//! candle reads `.pth` files by path, so each input is written to one file
//! per process first.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // read_pth turns a panic inside candle's pickle reader into an
        // error (catch_unwind); libfuzzer-sys's hook would abort on it
        // first. Any panic that escapes read_pth still aborts: libfuzzer-sys
        // catches it around the target.
        std::panic::set_hook(Box::new(|_| {}));
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("dgms-fuzz-{}.pth", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("writing the scratch file");
    if let Ok(tensors) = dgms_models::read_pth(path) {
        // Whatever was accepted fits in the file (torch.save stores
        // storages uncompressed).
        let bytes: usize = tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        assert!(bytes <= data.len() * 2 + 64, "{bytes} bytes of tensors from {} bytes", data.len());
    }
});
