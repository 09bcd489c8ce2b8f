//! Batches built ahead of the consumer on their own thread, at most
//! `depth` at a time, so that decoding overlaps the training step while
//! memory stays bounded (`depth` batches plus the one being built).

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use crate::error::{DataError, Result};
use crate::loader::{Batch, Loader};

/// An iterator over batches that a background thread builds in order.
/// Dropping it stops the thread after the batch in progress.
#[derive(Debug)]
pub struct Prefetch {
    receiver: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    left: usize,
}

impl Loader {
    /// Batches `start..start + count` of `epoch` (cut to the epoch's end),
    /// identical to those of [`Loader::epoch_from`], built up to `depth`
    /// (at least 1) ahead on a background thread.
    pub fn prefetch(
        &self,
        epoch: u64,
        start: usize,
        count: usize,
        depth: usize,
    ) -> Result<Prefetch> {
        let batches = self.epoch_from(epoch, start)?.take(count).len();
        let loader = self.clone();
        let (sender, receiver) = sync_channel(depth.max(1));
        let worker = std::thread::Builder::new()
            .name("dgms-prefetch".to_string())
            .spawn(move || {
                let Ok(iter) = loader.epoch_from(epoch, start) else {
                    return;
                };
                for batch in iter.take(batches) {
                    let failed = batch.is_err();
                    // A closed channel: the consumer is gone, stop.
                    if sender.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| DataError::InvalidConfig {
                dataset: self.split().name().to_string(),
                reason: format!("cannot start the prefetch thread: {e}"),
            })?;
        Ok(Prefetch {
            receiver: Some(receiver),
            worker: Some(worker),
            left: batches,
        })
    }
}

impl Iterator for Prefetch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let item = self.receiver.as_ref()?.recv().ok();
        match &item {
            Some(Ok(_)) => self.left -= 1,
            // After an error (or a worker that died) nothing more comes.
            _ => self.left = 0,
        }
        item.or_else(|| {
            Some(Err(DataError::InvalidConfig {
                dataset: "prefetch".to_string(),
                reason: "the prefetch thread ended early".to_string(),
            }))
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Close the channel first so a blocked sender returns, then wait.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
