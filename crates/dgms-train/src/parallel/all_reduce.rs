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
        if tensor.dtype() != DType::F32 {
            let failure = Failure::Aborted {
                rank: self.rank,
                reason: format!("all-reduce of a {:?} tensor", tensor.dtype()),
            };
            if let Ok(mut state) = self.shared.lock() {
                self.shared.fail(&mut state, failure);
            }
            return Err(ParallelError::DType {
                dtype: tensor.dtype(),
            });
        }
        let mut values: Vec<f32> = tensor
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| {
                self.abort("could not read its all-reduce buffer");
                ParallelError::Tensor(e)
            })?;
        self.all_reduce_slice(&mut values, op)?;
        Tensor::from_vec(values, tensor.shape(), tensor.device()).map_err(ParallelError::Tensor)
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
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Runs `f` on every rank of a new group of `world` in its own thread;
    /// the results by rank, or a panic if any rank is still running after
    /// ten seconds (a guard: a deadlock fails the test instead of hanging
    /// it).
    fn on_ranks<T: Send + 'static>(
        world: usize,
        f: impl Fn(InProcessComm) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for comm in in_process_group(world).unwrap() {
            let (f, tx) = (Arc::clone(&f), tx.clone());
            std::thread::spawn(move || {
                let rank = comm.rank();
                let out = f(comm);
                let _ = tx.send((rank, out));
            });
        }
        let mut out: Vec<Option<T>> = (0..world).map(|_| None).collect();
        for _ in 0..world {
            let (rank, v) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a rank hung: the group deadlocked");
            out[rank] = Some(v);
        }
        out.into_iter().map(Option::unwrap).collect()
    }

    /// Values whose sum depends on the order of addition in f32.
    fn values(rank: usize) -> Vec<f32> {
        (0..257)
            .map(|i| {
                ((i * 7919 + rank * 104_729) % 1000) as f32 * 1e-3 + [1e8, -1e8, 0.5][rank % 3]
            })
            .collect()
    }

    #[test]
    fn every_rank_gets_the_rank_order_sum_bit_for_bit() {
        for world in [1, 2, 3, 4] {
            let expected: Vec<u32> = {
                let mut s = values(0);
                for r in 1..world {
                    for (a, b) in s.iter_mut().zip(values(r)) {
                        *a += b;
                    }
                }
                s.iter().map(|v| v.to_bits()).collect()
            };
            for _run in 0..3 {
                let got = on_ranks(world, |comm| {
                    let mut v = values(comm.rank());
                    // Ranks arrive in scrambled order.
                    std::thread::sleep(Duration::from_millis(((comm.rank() * 7) % 5) as u64));
                    comm.all_reduce_slice(&mut v, ReduceOp::Sum).unwrap();
                    v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
                });
                for g in got {
                    assert_eq!(g, expected, "world {world}");
                }
            }
        }
    }

    #[test]
    fn mean_of_tensors_keeps_shape_and_divides_by_the_world() {
        let got = on_ranks(2, |comm| {
            let t = Tensor::new(
                &[[1f32, 2.0], [3.0, comm.rank() as f32]],
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let out = comm.all_reduce(&t, ReduceOp::Mean).unwrap();
            (out.dims().to_vec(), out.to_vec2::<f32>().unwrap())
        });
        for (dims, v) in got {
            assert_eq!(dims, vec![2, 2]);
            assert_eq!(v, vec![vec![1.0, 2.0], vec![3.0, 0.5]]);
        }
    }

    #[test]
    fn many_collectives_in_a_row_stay_in_step() {
        let got = on_ranks(3, |comm| {
            let mut last = 0.0;
            for step in 0..200 {
                let mut v = [(comm.rank() + step) as f32];
                comm.all_reduce_slice(&mut v, ReduceOp::Sum).unwrap();
                assert_eq!(v[0], (3 * step + 3) as f32);
                last = v[0];
            }
            last
        });
        assert_eq!(got, vec![600.0; 3]);
    }

    #[test]
    fn an_aborting_rank_makes_the_others_fail_instead_of_waiting() {
        let got = on_ranks(3, |comm| {
            if comm.rank() == 1 {
                comm.abort("its batch failed to load");
                return Ok(());
            }
            let mut v = [1.0f32];
            comm.all_reduce_slice(&mut v, ReduceOp::Sum)
        });
        for (rank, r) in got.iter().enumerate() {
            if rank != 1 {
                let msg = r.as_ref().unwrap_err().to_string();
                assert!(
                    msg.contains("rank 1 aborted") && msg.contains("failed to load"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn a_rank_that_returns_early_makes_the_others_fail() {
        let got = on_ranks(2, |comm| {
            if comm.rank() == 0 {
                // Leaves after one collective, by dropping its handle.
                let mut v = [1.0f32];
                return comm.all_reduce_slice(&mut v, ReduceOp::Sum).map(|_| 1);
            }
            let mut steps = 0;
            for _ in 0..3 {
                let mut v = [1.0f32];
                comm.all_reduce_slice(&mut v, ReduceOp::Sum)?;
                steps += 1;
            }
            Ok(steps)
        });
        assert_eq!(got[0].as_ref().unwrap(), &1);
        assert!(matches!(got[1], Err(ParallelError::RankLeft { rank: 0 })));
    }

    #[test]
    fn a_panicking_rank_makes_the_others_fail() {
        let got = on_ranks(2, |comm| {
            if comm.rank() == 1 {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _comm = comm;
                    panic!("rank 1 fails");
                }));
                return result.is_err();
            }
            let mut v = [1.0f32];
            matches!(
                comm.all_reduce_slice(&mut v, ReduceOp::Sum),
                Err(ParallelError::RankLeft { rank: 1 })
            )
        });
        assert_eq!(got, vec![true, true]);
    }

    #[test]
    fn mismatched_lengths_fail_every_rank() {
        let got = on_ranks(2, |comm| {
            let mut v = vec![1.0f32; 3 + comm.rank()];
            comm.all_reduce_slice(&mut v, ReduceOp::Sum)
                .unwrap_err()
                .to_string()
        });
        for msg in got {
            assert!(msg.contains("values to an all-reduce of"), "{msg}");
        }
    }

    #[test]
    fn a_timeout_fails_the_group_when_a_rank_never_arrives() {
        let comms = in_process_group_with(2, Some(Duration::from_millis(50))).unwrap();
        let mut v = [1.0f32];
        let err = comms[0]
            .all_reduce_slice(&mut v, ReduceOp::Sum)
            .unwrap_err();
        assert!(
            matches!(err, ParallelError::Timeout { rank: 0, .. }),
            "{err}"
        );
        let err = comms[1]
            .all_reduce_slice(&mut v, ReduceOp::Sum)
            .unwrap_err();
        assert!(
            matches!(err, ParallelError::Timeout { rank: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn one_handle_used_by_two_threads_fails_instead_of_counting_twice() {
        let mut comms = in_process_group(2).unwrap();
        let _rank1 = comms.pop();
        let rank0 = Arc::new(comms.pop().unwrap());
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let (comm, tx) = (Arc::clone(&rank0), tx.clone());
            std::thread::spawn(move || {
                let mut v = [1.0f32];
                let _ = tx.send(comm.all_reduce_slice(&mut v, ReduceOp::Sum));
            });
        }
        for _ in 0..2 {
            let r = rx.recv_timeout(Duration::from_secs(10)).expect("deadlock");
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("entered one collective twice"), "{msg}");
        }
    }

    #[test]
    fn an_empty_group_is_an_error() {
        assert!(matches!(
            in_process_group(0),
            Err(ParallelError::EmptyGroup)
        ));
    }

    #[test]
    fn non_f32_tensors_are_refused() {
        let comms = in_process_group(1).unwrap();
        let t = Tensor::new(&[1u32, 2], &candle_core::Device::Cpu).unwrap();
        assert!(matches!(
            comms[0].all_reduce(&t, ReduceOp::Sum),
            Err(ParallelError::DType { .. })
        ));
    }
}
