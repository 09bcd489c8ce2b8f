//! [`NcclComm`]: the [`AllReduce`] of rank processes on CUDA devices,
//! NCCL through cudarc (feature `nccl`), one process per GPU as candle's
//! own multi-process examples run it.
//!
//! Forming the group: the ranks first meet over TCP ([`SocketComm`], the
//! rendezvous of every process group); rank 0 creates the NCCL unique id
//! and broadcasts its 128 bytes over that socket group
//! ([`SocketComm::broadcast_bytes`]); every rank then joins the NCCL
//! communicator with `ncclCommInitRank` on its device's stream. The
//! socket group stays open next to the communicator ([`NcclComm::host`])
//! for small host-side messages, and carries [`AllReduce::abort`] to
//! ranks still waiting at the rendezvous.
//!
//! An all-reduce of a CPU tensor (the step's small host-side tallies) goes
//! through the socket group. One of a CUDA tensor reads its buffer (made contiguous first),
//! has NCCL write the sum (`ncclSum`) or mean (`ncclAvg`) into a fresh
//! buffer of the same device, and returns that buffer as a new tensor. The
//! ring or tree order is NCCL's: the result may differ from
//! [`crate::parallel::InProcessComm`]'s rank-order sum in the last bits.
//!
//! This code is compiled (`scripts/check-cuda.sh`) but can only run on a
//! machine with GPUs.

use std::ffi::c_char;
use std::sync::{Mutex, MutexGuard};

use candle_core::cuda::cudarc::nccl::{Comm, Id, ReduceOp as NcclOp};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};

use crate::parallel::all_reduce::{AllReduce, ReduceOp};
use crate::parallel::error::ParallelError;
use crate::parallel::socket::broadcast::exact_blob;
use crate::parallel::socket::SocketComm;

/// Bytes of an NCCL unique id (`ncclUniqueId::internal`).
const ID_BYTES: usize = 128;

/// One rank of an NCCL group (see the module docs).
#[derive(Debug)]
pub struct NcclComm {
    /// `None` once aborted (dropping cudarc's `Comm` calls
    /// `ncclCommAbort`).
    comm: Mutex<Option<Comm>>,
    device: CudaDevice,
    host: SocketComm,
    /// Set by the first failure; every later collective returns it.
    failed: Mutex<Option<(usize, String)>>,
}

impl NcclComm {
    /// Forms the NCCL group of the ranks of `host` (already met over TCP),
    /// this rank computing on `device`, which must be a CUDA device of its
    /// own (NCCL refuses two ranks of one communicator on one GPU). Every
    /// rank of `host` calls this at the same point; it returns once all
    /// have joined.
    pub fn new(host: SocketComm, device: &Device) -> Result<NcclComm, ParallelError> {
        let Device::Cuda(dev) = device else {
            let err = ParallelError::NotCuda {
                device: format!("{:?}", device.location()),
            };
            host.abort(&err.to_string());
            return Err(err);
        };
        let (rank, world) = (host.rank(), host.world_size());
        // Rank 0 creates the id; the others receive its bytes.
        let mine: Vec<u8> = if rank == 0 {
            let id = Id::new().map_err(|e| {
                let err = nccl("creating the unique id", e);
                host.abort(&err.to_string());
                err
            })?;
            // c_char is i8 or u8 depending on the target: a byte either way.
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        let blob = host.broadcast_bytes(&mine)?;
        let bytes: [u8; ID_BYTES] = exact_blob(&blob)?;
        let id = Id::uninit(bytes.map(|b| b as c_char));
        // The device's own stream: NCCL's kernels are ordered after the
        // backward that produced the gradients and before the update that
        // reads the result (cudarc also records events on the buffers).
        let comm = Comm::from_rank(dev.cuda_stream(), rank, world, id).map_err(|e| {
            let err = nccl("joining the communicator (ncclCommInitRank)", e);
            host.abort(&err.to_string());
            err
        })?;
        Ok(NcclComm {
            comm: Mutex::new(Some(comm)),
            device: dev.clone(),
            host,
            failed: Mutex::new(None),
        })
    }

    /// The TCP group the ranks met over, for small host-side messages.
    pub fn host(&self) -> &SocketComm {
        &self.host
    }

    fn failure(&self) -> MutexGuard<'_, Option<(usize, String)>> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The all-reduce itself; errors are recorded by the caller.
    fn reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor, ParallelError> {
        if tensor.dtype() != DType::F32 {
            return Err(ParallelError::DType {
                dtype: tensor.dtype(),
            });
        }
        // Host-side values (the step's image count and loss, batch-norm
        // tallies) are CPU tensors: the socket group reduces them.
        if tensor.device().is_cpu() {
            return self.host.all_reduce(tensor, op);
        }
        if !tensor
            .device()
            .same_device(&Device::Cuda(self.device.clone()))
        {
            return Err(ParallelError::NotCuda {
                device: format!("{:?}", tensor.device().location()),
            });
        }
        let tensor = tensor.contiguous().map_err(ParallelError::Tensor)?;
        let (storage, layout) = tensor.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            return Err(ParallelError::NotCuda {
                device: format!("{:?}", tensor.device().location()),
            });
        };
        let all = cuda.as_cuda_slice::<f32>().map_err(ParallelError::Tensor)?;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| ParallelError::Nccl {
                what: "reading the tensor",
                reason: "not contiguous after contiguous()".into(),
            })?;
        let send = all.slice(start..end);
        let mut recv = self
            .device
            .alloc_zeros::<f32>(end - start)
            .map_err(ParallelError::Tensor)?;
        let nccl_op = match op {
            ReduceOp::Sum => NcclOp::Sum,
            ReduceOp::Mean => NcclOp::Avg,
        };
        {
            let guard = self.comm.lock().map_err(|_| ParallelError::StatePoisoned)?;
            let comm = guard.as_ref().ok_or_else(|| ParallelError::Aborted {
                rank: self.host.rank(),
                reason: "the NCCL communicator was aborted".into(),
            })?;
            comm.all_reduce(&send, &mut recv, &nccl_op)
                .map_err(|e| nccl("all-reducing a gradient (ncclAllReduce)", e))?;
        }
        drop(storage);
        let out = CudaStorage::wrap_cuda_slice(recv, self.device.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(out),
            tensor.shape().clone(),
            BackpropOp::none(),
            false,
        ))
    }
}

impl AllReduce for NcclComm {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn world_size(&self) -> usize {
        self.host.world_size()
    }

    /// One `ncclAllReduce` on the tensor's GPU, or through the socket
    /// group for a CPU tensor (see the module docs).
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor, ParallelError> {
        if let Some((rank, reason)) = self.failure().clone() {
            return Err(ParallelError::Aborted { rank, reason });
        }
        self.reduce(tensor, op).inspect_err(|e| {
            self.abort(&e.to_string());
        })
    }

    /// Records the failure, aborts the NCCL communicator (cudarc's `Comm`
    /// calls `ncclCommAbort` when dropped) so that NCCL tears down its
    /// connections to the other ranks, and tells the socket group.
    fn abort(&self, reason: &str) {
        {
            let mut f = self.failure();
            if f.is_none() {
                *f = Some((self.host.rank(), reason.to_string()));
            }
        }
        let comm = self
            .comm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(comm);
        self.host.abort(reason);
    }
}

fn nccl(what: &'static str, e: impl std::fmt::Debug) -> ParallelError {
    ParallelError::Nccl {
        what,
        reason: format!("{e:?}"),
    }
}
