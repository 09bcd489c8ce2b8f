//! Helpers shared by dgms-train's integration tests.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;

use dgms_train::config::RunConfig;

/// A training run of a few seconds: ResNet-20 on the embedded data, 2
/// epochs of 2 batches of 16, evaluated on 64 test images.
pub fn tiny(out: &Path) -> RunConfig {
    let mut cfg = RunConfig::pretrain("resnet20", "embedded", out.to_path_buf());
    cfg.epochs = 2;
    cfg.batch_size = 16;
    cfg.max_batches = Some(2);
    cfg.max_eval = Some(64);
    cfg.lr = 0.05;
    cfg
}

/// An error and its chain of causes, as the binary prints them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}
