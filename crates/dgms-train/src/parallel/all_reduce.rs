//! The collective behind data-parallel training ([`AllReduce`]) and its
//! in-process implementation ([`InProcessComm`]): N ranks as threads of one
//! process sharing a reducer.
//!
//! The trait is shaped after NCCL as cudarc exposes it (`Comm::rank`,
//! `Comm::world_size`, `Comm::all_reduce(send, recv, op)` on device
//! buffers, one communicator per rank, `ReduceOp::{Sum, Avg}`), so that a
//! GPU backend implements [`AllReduce::all_reduce`] with one NCCL call on
//! the tensor's CUDA storage and [`AllReduce::abort`] with
//! `ncclCommAbort`.
//!
//! The in-process reducer sums the ranks' buffers in rank order
//! (`x0 + x1 + ... + x(N-1)`, then `/ N` for a mean), element by element
//! in f32, once, and hands every rank the same result: every rank gets the
//! same bits, and so does every run. NCCL's ring or tree order is its own,
//! so a GPU run may differ from this one in the last bits.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use crate::parallel::error::ParallelError;

/// How an all-reduce combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise sum divided by the number of ranks (NCCL's `ncclAvg`).
    Mean,
}

/// One rank's handle on a group of ranks that reduce buffers together.
///
/// Every rank must call the same collectives in the same order with
/// buffers of the same length; each call returns once every rank has
/// contributed. A rank that cannot go on calls [`Self::abort`], so that
/// the others get an error instead of waiting for it forever.
pub trait AllReduce {
    /// This rank's index, `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group.
    fn world_size(&self) -> usize;

    /// Whether this is rank 0, the one that writes checkpoints and logs.
    fn is_primary(&self) -> bool {
        self.rank() == 0
    }

    /// `tensor` (f32, any shape) reduced element-wise over the ranks, on
    /// `tensor`'s device; every rank receives the same values.
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor, ParallelError>;

    /// Marks the group failed because of this rank (`reason` is shown to
    /// the others): every pending and later collective of every rank
    /// returns [`ParallelError::Aborted`].
    fn abort(&self, reason: &str);
}

/// The reason a group can no longer reduce, as first recorded.
#[derive(Clone, Debug)]
enum Failure {
    Aborted {
        rank: usize,
        reason: String,
    },
    Left {
        rank: usize,
    },
    Timeout {
        rank: usize,
        timeout: Duration,
    },
    Length {
        rank: usize,
        len: usize,
        expected: usize,
    },
    Op {
        rank: usize,
        op: ReduceOp,
        expected: ReduceOp,
    },
}

impl Failure {
    fn error(&self) -> ParallelError {
        match self.clone() {
            Failure::Aborted { rank, reason } => ParallelError::Aborted { rank, reason },
            Failure::Left { rank } => ParallelError::RankLeft { rank },
            Failure::Timeout { rank, timeout } => ParallelError::Timeout { rank, timeout },
            Failure::Length {
                rank,
                len,
                expected,
            } => ParallelError::LengthMismatch {
                rank,
                len,
                expected,
            },
            Failure::Op { rank, op, expected } => ParallelError::OpMismatch { rank, op, expected },
        }
    }
}

/// The reducer's state, behind the group's mutex.
#[derive(Debug)]
struct State {
    /// Collectives completed (every rank collected the result).
    generation: u64,
    /// The contributions to the collective being formed, by rank.
    inputs: Vec<Option<Vec<f32>>>,
    /// Its reduction, as asked by the first rank to arrive.
    op: Option<ReduceOp>,
    arrived: usize,
    /// The result of the current collective while ranks collect it.
    output: Option<Arc<Vec<f32>>>,
    collected: usize,
    /// Set once; every collective fails from then on.
    failure: Option<Failure>,
}

#[derive(Debug)]
struct Shared {
    world: usize,
    timeout: Option<Duration>,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>, ParallelError> {
        self.state.lock().map_err(|_| ParallelError::StatePoisoned)
    }

    /// Records `failure` unless one is recorded already, and wakes every
    /// waiting rank.
    fn fail(&self, state: &mut State, failure: Failure) {
        if state.failure.is_none() {
            state.failure = Some(failure);
        }
        self.changed.notify_all();
    }

    /// Waits for a change of the state, or until `deadline`.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, State>, ParallelError> {
        match deadline {
            None => self
                .changed
                .wait(state)
                .map_err(|_| ParallelError::StatePoisoned),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let (state, _) = self
                    .changed
                    .wait_timeout(state, left)
                    .map_err(|_| ParallelError::StatePoisoned)?;
                Ok(state)
            }
        }
    }

    /// Fails the group with a timeout of `rank` if `deadline` has passed.
    fn check_deadline(
        &self,
        state: &mut State,
        rank: usize,
        deadline: Option<Instant>,
    ) -> Result<(), ParallelError> {
        match (deadline, self.timeout) {
            (Some(deadline), Some(timeout)) if Instant::now() >= deadline => {
                let failure = Failure::Timeout { rank, timeout };
                self.fail(state, failure.clone());
                Err(failure.error())
            }
            _ => Ok(()),
        }
    }
}

/// Rank `rank` of an in-process group (see [`in_process_group`]): threads
/// of one process reducing through shared memory. Dropping a handle leaves
/// the group: collectives of the other ranks that still need it fail with
/// [`ParallelError::RankLeft`] (so a rank whose thread returns early or
/// panics never leaves the others waiting).
#[derive(Debug)]
pub struct InProcessComm {
    rank: usize,
    shared: Arc<Shared>,
}

/// The `world` handles of a new in-process group, by rank; collectives
/// wait for the other ranks as long as it takes.
pub fn in_process_group(world: usize) -> Result<Vec<InProcessComm>, ParallelError> {
    in_process_group_with(world, None)
}

/// [`in_process_group`] whose collectives fail with
/// [`ParallelError::Timeout`] (failing the whole group) when the other
/// ranks do not arrive within `timeout`.
pub fn in_process_group_with(
    world: usize,
    timeout: Option<Duration>,
) -> Result<Vec<InProcessComm>, ParallelError> {
    if world == 0 {
        return Err(ParallelError::EmptyGroup);
    }
    let shared = Arc::new(Shared {
        world,
        timeout,
        state: Mutex::new(State {
            generation: 0,
            inputs: vec![None; world],
            op: None,
            arrived: 0,
            output: None,
            collected: 0,
            failure: None,
        }),
        changed: Condvar::new(),
    });
    Ok((0..world)
        .map(|rank| InProcessComm {
            rank,
            shared: Arc::clone(&shared),
        })
        .collect())
}

/// The element-wise reduction of `inputs` (all of one length), summed in
/// order: `inputs[0] + inputs[1] + ...`, then divided by their number for
/// a mean.
pub(crate) fn reduce(inputs: &[Option<Vec<f32>>], op: ReduceOp) -> Vec<f32> {
    let mut parts = inputs.iter().flatten();
    let mut out = parts.next().cloned().unwrap_or_default();
    for part in parts {
        for (o, &v) in out.iter_mut().zip(part) {
            *o += v;
        }
    }
    if op == ReduceOp::Mean {
        let n = inputs.len() as f32;
        for o in &mut out {
            *o /= n;
        }
    }
    out
}

/// `tensor` (f32) reduced by a group's host-side slice collective
/// `reduce_slice`: its values copied out, reduced, and copied back to its
/// device in its shape. A tensor of another dtype, or one that cannot be
/// read, aborts `comm`'s group (the other ranks would wait for it).
pub(crate) fn reduce_through_host(
    comm: &dyn AllReduce,
    tensor: &Tensor,
    reduce_slice: impl FnOnce(&mut [f32]) -> Result<(), ParallelError>,
) -> Result<Tensor, ParallelError> {
    if tensor.dtype() != DType::F32 {
        comm.abort(&format!("all-reduce of a {:?} tensor", tensor.dtype()));
        return Err(ParallelError::DType {
            dtype: tensor.dtype(),
        });
    }
    let mut values: Vec<f32> = tensor
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(|e| {
            comm.abort("could not read its all-reduce buffer");
            ParallelError::Tensor(e)
        })?;
    reduce_slice(&mut values)?;
    Tensor::from_vec(values, tensor.shape(), tensor.device()).map_err(ParallelError::Tensor)
}

impl InProcessComm {
    /// Reduces `values` in place across the group (see [`AllReduce`]).
    pub fn all_reduce_slice(&self, values: &mut [f32], op: ReduceOp) -> Result<(), ParallelError> {
        let shared = &*self.shared;
        let rank = self.rank;
        let deadline = shared.timeout.map(|t| Instant::now() + t);
        let mut state = shared.lock()?;
        // The result of the previous collective must be collected by every
        // rank before this one forms.
        loop {
            if let Some(f) = &state.failure {
                return Err(f.error());
            }
            if state.output.is_none() {
                break;
            }
            shared.check_deadline(&mut state, rank, deadline)?;
            state = shared.wait(state, deadline)?;
        }
        if state.inputs[rank].is_some() {
            // The handle shared by two threads: one rank, two contributions.
            let failure = Failure::Aborted {
                rank,
                reason: "it entered one collective twice".to_string(),
            };
            shared.fail(&mut state, failure.clone());
            return Err(failure.error());
        }
        if let Some(expected) = state.inputs.iter().flatten().next().map(Vec::len) {
            if expected != values.len() {
                let failure = Failure::Length {
                    rank,
                    len: values.len(),
                    expected,
                };
                shared.fail(&mut state, failure.clone());
                return Err(failure.error());
            }
        }
        match state.op {
            Some(expected) if expected != op => {
                let failure = Failure::Op { rank, op, expected };
                shared.fail(&mut state, failure.clone());
                return Err(failure.error());
            }
            _ => state.op = Some(op),
        }
        state.inputs[rank] = Some(values.to_vec());
        state.arrived += 1;
        let generation = state.generation;
        if state.arrived == shared.world {
            let out = reduce(&state.inputs, op);
            state.inputs.iter_mut().for_each(|i| *i = None);
            (state.arrived, state.op, state.collected) = (0, None, 0);
            state.output = Some(Arc::new(out));
            shared.changed.notify_all();
        }
        loop {
            // A result ready for this collective wins over a failure
            // recorded after it formed (a rank that collected and left).
            if state.generation == generation {
                if let Some(out) = state.output.clone() {
                    values.copy_from_slice(&out);
                    state.collected += 1;
                    if state.collected == shared.world {
                        state.output = None;
                        state.generation += 1;
                        shared.changed.notify_all();
                    }
                    return Ok(());
                }
            }
            if let Some(f) = &state.failure {
                return Err(f.error());
            }
            shared.check_deadline(&mut state, rank, deadline)?;
            state = shared.wait(state, deadline)?;
        }
    }
}

impl AllReduce for InProcessComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    /// Through the host: the tensor's values are copied out, reduced and
    /// copied back to its device.
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor, ParallelError> {
        reduce_through_host(self, tensor, |values| self.all_reduce_slice(values, op))
    }

    fn abort(&self, reason: &str) {
        let failure = Failure::Aborted {
            rank: self.rank,
            reason: reason.to_string(),
        };
        // A poisoned lock: still record the failure, the state is plain data.
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shared.fail(&mut state, failure);
    }
}

impl Drop for InProcessComm {
    fn drop(&mut self) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shared
            .fail(&mut state, Failure::Left { rank: self.rank });
    }
}

#[cfg(test)]
mod tests;
