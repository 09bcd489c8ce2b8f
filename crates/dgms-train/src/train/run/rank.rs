//! One rank's epoch of a data-parallel run (`crate::parallel`): its part
//! of every batch, the group's gradient step, the same checks as one
//! process.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{dropout_seed, Run};
use crate::error::Result;
use crate::parallel::{
    data_parallel_step, reduce_tally, sync_batch_norm_stats, AllReduce, RankShard, ShardedLoader,
};
use crate::train::metrics::Tally;
use crate::train::session::batch_on;
use crate::train::trainer::progress_bar;

impl Run<'_> {
    /// [`Self::train_epoch`] for a rank of a data-parallel group: its part
    /// of every batch ([`ShardedLoader`]: `cfg.batch_size` is the global
    /// batch), [`data_parallel_step`], the same checks; the tally returned
    /// is the group's. A step whose global batch has no image passes
    /// without an update, as in one process.
    pub(super) fn train_epoch_rank(
        &mut self,
        stop: Option<&AtomicBool>,
        comm: &dyn AllReduce,
    ) -> Result<(Tally, f64)> {
        let bar = if comm.is_primary() {
            progress_bar(self.steps_per_epoch, self.epoch, self.cfg.epochs)?
        } else {
            indicatif::ProgressBar::hidden()
        };
        let shards = ShardedLoader::new(
            self.loader.clone(),
            RankShard::new(comm.rank(), comm.world_size())?,
        );
        let mut tally = Tally::default();
        let mut lr = self.schedule.lr(self.step);
        for batch in shards.epoch_from(self.epoch as u64, 0, self.steps_per_epoch) {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                bar.abandon();
                return Err(self.interrupted());
            }
            let batch = batch_on(batch?, &self.device)?;
            lr = self.schedule.lr(self.step);
            let momentum = self.schedule.momentum(self.step);
            self.model
                .net
                .set_dropout_seed(dropout_seed(self.cfg.seed, self.step));
            let step = data_parallel_step(
                self.model.net.as_ref(),
                &mut self.sgd,
                &batch,
                (lr, momentum),
                comm,
                &mut tally,
            )?;
            if step.samples == 0 {
                self.step += 1;
                bar.inc(1);
                continue;
            }
            if !step.loss.is_finite() {
                bar.abandon();
                return Err(self.non_finite_loss(step.loss, batch.index));
            }
            self.step += 1;
            if let Err(e) = self.check_finite(batch.index) {
                bar.abandon();
                return Err(e);
            }
            self.project_parameters()?;
            bar.inc(1);
            bar.set_message(format!("loss {:.4} lr {lr:.2e}", step.loss));
        }
        bar.finish_and_clear();
        // Every rank the same model before evaluating and saving.
        sync_batch_norm_stats(&self.model, comm)?;
        Ok((reduce_tally(&tally, comm)?, lr))
    }
}
