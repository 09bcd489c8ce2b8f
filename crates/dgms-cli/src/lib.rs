//! # dgms-cli
//!
//! The library behind the `dgms` command: run configuration, training loop
//! (SGD with momentum/Nesterov/weight decay, one-cycle/cosine/multi-step
//! schedules, checkpoints with exact resume) and the phases `pretrain`,
//! `dgms`, `harden`, `eval`, `report` and `quantize`; export to the packed
//! Q-SIMD format ([`export`]) and inference on it ([`infer`]).
//! `cargo xtask train` drives the same functions.

pub mod config;
pub mod export;
pub mod fsutil;
pub mod infer;
pub mod phases;
pub mod train;

/// Process set-up shared by the `dgms` binary and `cargo xtask`: pins the
/// rayon thread count (see [`pin_rayon_threads`]) and logs with tracing to
/// stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init_process() {
    pin_rayon_threads();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Sets `RAYON_NUM_THREADS` to the machine's parallelism when the user did
/// not set it. candle 0.11 re-reads /proc/cpuinfo on every CPU matmul when
/// the variable is unset (about 56 us per call, against 0.1 us when set), a
/// large cost for the many small products of a training step. Call first
/// thing in `main`, before any thread starts.
pub fn pin_rayon_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
