//! Which images each rank trains on: its part of every global batch.
//!
//! The single-process loader orders an epoch by a permutation drawn from
//! `(seed, epoch)` ([`Loader::order`]) and cuts it into batches of B
//! consecutive positions. With `world` ranks, B is the global batch: every
//! rank computes the same permutation and the same cuts, and rank `r`
//! takes block `r` of each batch ([`RankShard::range`]: `world` contiguous
//! blocks whose sizes differ by at most one, the larger ones first). The
//! union of the ranks' batches at step `i` is then exactly the single
//! process's batch `i`, the ranks' shards of an epoch are disjoint and
//! cover it, and a shard depends on nothing but `(seed, epoch, rank,
//! world)` and the batch size. Each image's augmentation is drawn from
//! `(seed, epoch, image index)` ([`Loader::batch_of`]), so an image is
//! augmented the same on whichever rank trains it.

use std::ops::Range;

use dgms_data::{Batch, Loader};

use crate::error::Result;
use crate::parallel::error::ParallelError;

/// A rank's place in a group: `rank` of `world`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankShard {
    rank: usize,
    world: usize,
}

impl RankShard {
    /// Rank `rank` of `world` (an error unless `rank < world`).
    pub fn new(rank: usize, world: usize) -> Result<Self, ParallelError> {
        if world == 0 {
            return Err(ParallelError::EmptyGroup);
        }
        if rank >= world {
            return Err(ParallelError::RankOutOfRange { rank, world });
        }
        Ok(Self { rank, world })
    }

    /// The single process: rank 0 of 1.
    pub fn single() -> Self {
        Self { rank: 0, world: 1 }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// This rank's block of `len` positions: the first `len % world` ranks
    /// take `len / world + 1`, the others `len / world` (empty when
    /// `len < world` for the last ranks).
    pub fn range(&self, len: usize) -> Range<usize> {
        let (base, extra) = (len / self.world, len % self.world);
        let start = self.rank * base + self.rank.min(extra);
        let size = base + usize::from(self.rank < extra);
        start..start + size
    }

    /// This rank's block of `items`.
    pub fn of<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        &items[self.range(items.len())]
    }
}

/// The batches of one rank over a loader whose batch size is the global
/// batch (`world` x the per-rank batch): step `i` of rank `r` is block `r`
/// of the loader's batch `i` (see the module docs).
#[derive(Clone, Debug)]
pub struct ShardedLoader {
    loader: Loader,
    shard: RankShard,
}

impl ShardedLoader {
    /// Rank `shard` of `loader`'s batches; the loader's batch size is the
    /// global batch.
    pub fn new(loader: Loader, shard: RankShard) -> Self {
        Self { loader, shard }
    }

    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    pub fn shard(&self) -> RankShard {
        self.shard
    }

    /// Optimizer steps per epoch: the loader's batches (the same on every
    /// rank, whatever its share).
    pub fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    /// The dataset indices of this rank's part of every batch of `epoch`,
    /// by step.
    pub fn epoch_indices(&self, epoch: u64) -> Vec<Vec<usize>> {
        split_epoch(
            &self.loader.order(epoch),
            self.loader.config().batch_size,
            self.batches_per_epoch(),
            self.shard,
        )
    }

    /// This rank's part of batch `step` of `epoch` (possibly empty: a last
    /// batch smaller than the group).
    pub fn batch(&self, epoch: u64, step: usize) -> Result<Batch> {
        let steps = self.epoch_indices(epoch);
        let indices = steps
            .get(step)
            .ok_or(dgms_data::DataError::BatchOutOfRange {
                index: step,
                batches: steps.len(),
            })?;
        Ok(self.loader.batch_of(epoch, step, indices)?)
    }

    /// This rank's batches of `epoch` from step `start`, `count` of them at
    /// most (cut to the epoch's end), built as they are asked for.
    pub fn epoch_from(
        &self,
        epoch: u64,
        start: usize,
        count: usize,
    ) -> impl Iterator<Item = Result<Batch>> + '_ {
        self.epoch_indices(epoch)
            .into_iter()
            .enumerate()
            .skip(start)
            .take(count)
            .map(move |(step, indices)| Ok(self.loader.batch_of(epoch, step, &indices)?))
    }
}

/// Rank `shard`'s part of each of the first `batches` batches of
/// `batch_size` consecutive positions of `order` (the last one may be
/// short), by step.
pub fn split_epoch(
    order: &[usize],
    batch_size: usize,
    batches: usize,
    shard: RankShard,
) -> Vec<Vec<usize>> {
    order
        .chunks(batch_size.max(1))
        .take(batches)
        .map(|batch| shard.of(batch).to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(n: usize) -> Vec<usize> {
        // A fixed scramble of 0..n.
        (0..n).map(|i| (i * 37 + 11) % n).collect()
    }

    #[test]
    fn ranges_are_contiguous_balanced_and_cover() {
        for len in 0..20 {
            for world in 1..6 {
                let ranges: Vec<Range<usize>> = (0..world)
                    .map(|r| RankShard::new(r, world).unwrap().range(len))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[world - 1].end, len);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                    assert!(pair[0].len() == pair[1].len() || pair[0].len() == pair[1].len() + 1);
                }
            }
        }
    }

    #[test]
    fn rank_batches_union_to_the_single_process_batches() {
        let (n, b) = (43, 8);
        let order = order(n);
        let single = split_epoch(&order, b, 6, RankShard::single());
        for world in 1..5 {
            let ranks: Vec<Vec<Vec<usize>>> = (0..world)
                .map(|r| split_epoch(&order, b, 6, RankShard::new(r, world).unwrap()))
                .collect();
            for (step, batch) in single.iter().enumerate() {
                let union: Vec<usize> = ranks.iter().flat_map(|r| r[step].clone()).collect();
                assert_eq!(&union, batch, "world {world} step {step}");
            }
        }
    }

    #[test]
    fn bad_ranks_are_errors() {
        assert!(matches!(
            RankShard::new(2, 2),
            Err(ParallelError::RankOutOfRange { rank: 2, world: 2 })
        ));
        assert!(matches!(
            RankShard::new(0, 0),
            Err(ParallelError::EmptyGroup)
        ));
    }
}
