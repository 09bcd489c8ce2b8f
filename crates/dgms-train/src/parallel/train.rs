//! A whole training run over N in-process ranks ([`train_in_process`]):
//! what `dgms pretrain --ranks N` and `dgms dgms --ranks N` run.

use std::time::Instant;

use crate::config::RunConfig;
use crate::error::Result;
use crate::parallel::all_reduce::AllReduce;
use crate::parallel::error::ParallelError;
use crate::parallel::ranks::run_in_process;
use crate::train::run::Run;
use crate::train::trainer::{TrainOptions, TrainOutcome};

/// Trains as `cfg` and `opts` say ([`crate::train::trainer::train_with`])
/// with `ranks` data-parallel ranks as threads of this process.
///
/// `cfg.batch_size` is the global batch: at every step rank `r` trains on
/// block `r` of the single process's batch, and the gradients are
/// all-reduced, so the schedule, the steps per epoch and the configuration
/// saved are those of one process (a resume checks them as usual, and
/// recomputes the same shards when run with the same number of ranks).
/// After each epoch the ranks' batch-norm running statistics are averaged;
/// rank 0 then evaluates and writes the checkpoints and metrics, the other
/// ranks write nothing. Batch norm normalises each rank's part with its own
/// statistics (see [`crate::parallel::step`]), so with batch norm the run
/// is not the single process's bits.
///
/// On one CPU this is no faster than one process (the ranks share its
/// cores): it runs the data-parallel logic, end to end, without a GPU.
pub fn train_in_process(
    cfg: &RunConfig,
    opts: &TrainOptions,
    ranks: usize,
) -> Result<TrainOutcome> {
    let outcomes = run_in_process(ranks, |comm| train_rank(cfg, opts, comm))?;
    // Rank 0's: the one that evaluated.
    outcomes
        .into_iter()
        .next()
        .ok_or_else(|| ParallelError::EmptyGroup.into())
}

/// The run of one rank of the group `comm` (see [`train_in_process`]):
/// what a process per GPU calls with its NCCL communicator. Every rank of
/// the group calls it with the same `cfg` and `opts`; rank 0's outcome is
/// the run's (the others' have no test figures). A rank that fails aborts
/// the group, so the others fail at their next collective instead of
/// waiting for it.
pub fn train_rank(
    cfg: &RunConfig,
    opts: &TrainOptions,
    comm: &dyn AllReduce,
) -> Result<TrainOutcome> {
    let outcome = run_rank(cfg, opts, comm);
    if let Err(e) = &outcome {
        comm.abort(&e.to_string());
    }
    outcome
}

fn run_rank(cfg: &RunConfig, opts: &TrainOptions, comm: &dyn AllReduce) -> Result<TrainOutcome> {
    let start = Instant::now();
    let mut run = Run::start_rank(cfg, opts, Some(comm))?;
    let stop = opts.stop_after.map_or(cfg.epochs, |s| s.min(cfg.epochs));
    while run.epoch < stop {
        let epoch_start = Instant::now();
        let (train, lr) = run.train_epoch(opts.stop)?;
        run.epoch += 1;
        if run.is_primary() {
            let (test, improved) = run.evaluate()?;
            run.finish_epoch(&train, &test, lr, epoch_start, improved)?;
        }
    }
    Ok(run.outcome(start))
}
