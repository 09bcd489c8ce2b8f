//! Small data sets written to disk for tests that run a command end to
//! end.

use std::path::Path;

use crate::rng::Lcg64;

/// The file names of the CIFAR-10 binary version: five training batches,
/// then the test batch.
pub const CIFAR_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// Writes a CIFAR-10 binary data set of random images into `dir` (which
/// must exist): every file holds `per_file` records (a label byte 0..9,
/// then 3,072 pixel bytes), drawn from an LCG started at `state`.
pub fn write_random_cifar(dir: &Path, per_file: usize, state: u64) -> std::io::Result<()> {
    let mut rng = Lcg64::from_state(state);
    let mut byte = || (rng.next_u64() >> 33) as u8;
    for name in CIFAR_FILES {
        let mut bytes = Vec::with_capacity(per_file * 3073);
        for _ in 0..per_file {
            bytes.push(byte() % 10);
            bytes.extend((0..3072).map(|_| byte()));
        }
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
