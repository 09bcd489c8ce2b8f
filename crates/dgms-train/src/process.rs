//! Process set-up shared by the `dgms` binary and `cargo xtask`.

use std::io::IsTerminal as _;

/// Pins the rayon thread count (see [`pin_rayon_threads`]) and logs with
/// tracing to stderr at `info` unless `RUST_LOG` says otherwise. Colours
/// only when stderr is a terminal: a log redirected to a file or a pipe
/// (`cargo xtask train 2>log`) carries no ANSI escape sequences.
pub fn init_process() {
    pin_rayon_threads();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Sets `RAYON_NUM_THREADS` to the machine's parallelism when the user did
/// not set it. candle 0.11 re-reads /proc/cpuinfo on every CPU matmul when
/// the variable is unset (about 56 us per call, against 0.1 us when set), a
/// large cost for the many small products of a training step. Call first
/// thing in `main`, before any thread starts. (The thread count does not
/// change results: the training step's reductions have a fixed order.)
pub fn pin_rayon_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
