//! N ranks as threads of this process ([`run_in_process`]): the CPU
//! stand-in for one process per GPU. On one CPU it is no faster than one
//! process (the ranks share the cores); it exists to run and test the
//! data-parallel logic without a GPU.

use crate::error::{Result, TrainError};
use crate::parallel::all_reduce::{in_process_group, AllReduce, InProcessComm};
use crate::parallel::error::ParallelError;

/// Runs `f` once per rank of a new in-process group of `world` ranks, each
/// on its own thread, and returns the results by rank.
///
/// A rank whose `f` returns an error aborts the group, and a rank that
/// panics leaves it, so the other ranks' collectives fail instead of
/// waiting for it. The error returned is the one that started it: the
/// first (by rank) that is not a collective failing because of another
/// rank.
pub fn run_in_process<T, F>(world: usize, f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(&InProcessComm) -> Result<T> + Sync,
{
    let comms = in_process_group(world)?;
    let f = &f;
    let results: Vec<Result<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let rank = comm.rank();
                let handle = std::thread::Builder::new()
                    .name(format!("dgms-rank-{rank}"))
                    .spawn_scoped(scope, move || {
                        let out = f(&comm);
                        if let Err(e) = &out {
                            comm.abort(&error_chain(e));
                        }
                        out
                    });
                (rank, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(rank, handle)| match handle {
                Err(e) => Err(TrainError::io(
                    "starting the thread of rank",
                    format!("{rank}"),
                )(e)),
                Ok(h) => h
                    .join()
                    .unwrap_or(Err(ParallelError::Panicked { rank }.into())),
            })
            .collect()
    });
    if results.iter().all(Result::is_ok) {
        return Ok(results.into_iter().flatten().collect());
    }
    let mut errors: Vec<TrainError> = results.into_iter().filter_map(Result::err).collect();
    let root = errors
        .iter()
        .position(|e| !is_induced(e))
        .unwrap_or_default();
    Err(errors.swap_remove(root))
}

/// Whether `e` is a collective failing because another rank failed.
fn is_induced(e: &TrainError) -> bool {
    match e {
        TrainError::Parallel(p) => matches!(
            **p,
            ParallelError::Aborted { .. } | ParallelError::RankLeft { .. }
        ),
        _ => false,
    }
}

/// An error and its causes on one line, for the other ranks' messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
