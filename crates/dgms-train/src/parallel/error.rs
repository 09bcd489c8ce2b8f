//! The errors of data-parallel training: a group that cannot be formed, a
//! collective that cannot complete (a rank failed, aborted, left or timed
//! out) or was called inconsistently.

use std::time::Duration;

use candle_core::DType;

/// Why a group or one of its collectives failed.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// A group of no ranks.
    #[error("a group needs at least one rank")]
    EmptyGroup,
    /// A rank index outside the group.
    #[error("rank {rank} is not in a group of {world}")]
    RankOutOfRange { rank: usize, world: usize },
    /// A rank called [`crate::parallel::AllReduce::abort`] (typically
    /// because its step failed); every pending and later collective of
    /// the group returns this.
    #[error("rank {rank} aborted the group: {reason}")]
    Aborted { rank: usize, reason: String },
    /// A rank dropped its handle (returned or panicked) while the others
    /// still needed it for a collective.
    #[error("rank {rank} left the group; its collectives cannot complete")]
    RankLeft { rank: usize },
    /// A collective waited longer than the group's timeout for the other
    /// ranks.
    #[error("rank {rank} waited more than {timeout:?} for the other ranks")]
    Timeout { rank: usize, timeout: Duration },
    /// Two ranks passed buffers of different lengths to one collective.
    #[error("rank {rank} passed {len} values to an all-reduce of {expected} values")]
    LengthMismatch {
        rank: usize,
        len: usize,
        expected: usize,
    },
    /// Two ranks asked for different reductions in one collective.
    #[error(
        "rank {rank} asked for {op:?} in an all-reduce where another rank asked for {expected:?}"
    )]
    OpMismatch {
        rank: usize,
        op: crate::parallel::ReduceOp,
        expected: crate::parallel::ReduceOp,
    },
    /// Only f32 tensors are reduced.
    #[error("all-reduce of a {dtype:?} tensor: only f32 tensors are reduced")]
    DType { dtype: DType },
    /// The group's shared state was poisoned by a panic while locked.
    #[error("the group's shared state is poisoned (a rank panicked inside a collective)")]
    StatePoisoned,
    /// A rank's thread panicked.
    #[error("rank {rank} panicked")]
    Panicked { rank: usize },
    /// The ranks of a socket group could not meet at the rendezvous
    /// address (nothing listening, wrong group size, a rank twice, ...).
    #[error("rendezvous at {addr} failed: {reason}")]
    Rendezvous { addr: String, reason: String },
    /// A socket group's connection to rank `peer` failed while `what`.
    #[error("the connection to rank {peer} failed while {what}")]
    Connection {
        peer: usize,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A socket group received bytes that are not a frame of its protocol
    /// (another program on the port, or a rank of another version).
    #[error("rank {peer} sent a malformed message: {reason}")]
    Protocol { peer: usize, reason: String },
    /// Moving a buffer between a tensor and the reducer failed.
    #[error("moving an all-reduce buffer")]
    Tensor(#[source] candle_core::Error),
    /// A broadcast of the socket group carried a blob of the wrong size
    /// (the NCCL unique id is 128 bytes).
    #[error("rank {peer} broadcast {len} bytes where {expected} were due")]
    BlobSize {
        peer: usize,
        len: usize,
        expected: usize,
    },
    /// The NCCL communicator needs a CUDA device: its own.
    #[error("NCCL all-reduce on {device}: a rank's communicator reduces tensors of its own GPU")]
    NotCuda { device: String },
    /// An NCCL or CUDA call failed while `what`.
    #[error("NCCL failed while {what}: {reason}")]
    Nccl { what: &'static str, reason: String },
}
