//! [`SocketComm::broadcast_bytes`]: rank 0 sends a small blob to every
//! rank of a socket group. This is how the ranks of a GPU group learn the
//! NCCL unique id rank 0 created (`parallel::nccl`): the TCP rendezvous
//! forms the group, then rank 0 broadcasts the id's 128 bytes over it.
//!
//! Frame: `4, len u64, len bytes`, from the hub to every spoke. A spoke
//! waiting for it may instead receive an abort frame (rank 0 failed).

use std::io::{Read, Write};

use super::frame::{left_or, protocol, read_abort, read_u64, read_u8, ABORT};
use super::{Links, SocketComm};
use crate::parallel::error::ParallelError;

const BYTES: u8 = 4;
/// The largest blob a spoke accepts (a guard against a stray peer's
/// length field asking for gigabytes).
const MAX_BLOB: u64 = 1 << 20;

impl SocketComm {
    /// Every rank returns rank 0's `blob` (the others' arguments are
    /// ignored; pass an empty slice). Like a collective, every rank calls
    /// it at the same point.
    pub fn broadcast_bytes(&self, blob: &[u8]) -> Result<Vec<u8>, ParallelError> {
        if let Some((rank, reason)) = self.failure().clone() {
            return Err(ParallelError::Aborted { rank, reason });
        }
        match &self.links {
            Links::Hub(peers) => {
                let mut frame = vec![BYTES];
                frame.extend((blob.len() as u64).to_le_bytes());
                frame.extend(blob);
                for (i, p) in peers.iter().enumerate() {
                    let mut w = p;
                    w.write_all(&frame)
                        .map_err(|e| self.fail(left_or(i + 1, "broadcasting bytes", e)))?;
                }
                Ok(blob.to_vec())
            }
            Links::Spoke(hub) => receive_blob(hub).map_err(|e| self.fail(e)),
        }
    }
}

/// A spoke's side: the blob rank 0 sends.
fn receive_blob(mut r: &std::net::TcpStream) -> Result<Vec<u8>, ParallelError> {
    match read_u8(&mut r).map_err(|e| left_or(0, "waiting for a broadcast", e))? {
        BYTES => {}
        ABORT => return Err(read_abort(&mut r, 0)),
        tag => {
            return Err(protocol(
                0,
                format!("frame {tag} where a broadcast was due"),
            ))
        }
    }
    let len = read_u64(&mut r).map_err(|e| left_or(0, "reading a broadcast", e))?;
    if len > MAX_BLOB {
        return Err(protocol(0, format!("a broadcast of {len} bytes")));
    }
    let mut blob = vec![0u8; len as usize];
    r.read_exact(&mut blob)
        .map_err(|e| left_or(0, "reading a broadcast", e))?;
    Ok(blob)
}

#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
/// Checks that a broadcast blob has `expected` bytes (rank 0 sent it).
pub(crate) fn exact_blob<const N: usize>(blob: &[u8]) -> Result<[u8; N], ParallelError> {
    blob.try_into().map_err(|_| ParallelError::BlobSize {
        peer: 0,
        len: blob.len(),
        expected: N,
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::parallel::all_reduce::AllReduce;

    const T: Duration = Duration::from_secs(20);

    /// A group of `world` socket ranks as threads; `f` runs on each.
    fn group<R: Send + 'static>(
        world: usize,
        f: impl Fn(SocketComm) -> R + Send + Sync + Copy + 'static,
    ) -> Vec<R> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let spokes: Vec<_> = (1..world)
            .map(|r| {
                let addr = addr.clone();
                std::thread::spawn(move || f(SocketComm::connect(&addr, r, world, T).unwrap()))
            })
            .collect();
        let mut out = vec![f(SocketComm::hub(listener, world, T).unwrap())];
        out.extend(spokes.into_iter().map(|h| h.join().unwrap()));
        out
    }

    #[test]
    fn every_rank_receives_rank_0s_blob_and_can_reduce_after() {
        let got = group(3, |c| {
            let mine: Vec<u8> = (0..128).map(|i| (i * 7 + c.rank()) as u8).collect();
            let blob = c.broadcast_bytes(&mine).unwrap();
            let id: [u8; 128] = exact_blob(&blob).unwrap();
            let mut v = [c.rank() as f32 + 1.0];
            c.all_reduce_slice(&mut v, crate::parallel::ReduceOp::Sum)
                .unwrap();
            (id.to_vec(), v[0])
        });
        let want: Vec<u8> = (0..128).map(|i| (i * 7) as u8).collect();
        for (rank, (blob, sum)) in got.into_iter().enumerate() {
            assert_eq!(blob, want, "rank {rank}");
            assert_eq!(sum, 6.0, "rank {rank}");
        }
    }

    #[test]
    fn a_spoke_waiting_for_a_broadcast_learns_that_rank_0_aborted() {
        let got = group(2, |c| {
            if c.rank() == 0 {
                c.abort("no NCCL id");
                None
            } else {
                Some(c.broadcast_bytes(&[]).unwrap_err().to_string())
            }
        });
        let err = got[1].clone().unwrap();
        assert!(
            err.contains("rank 0 aborted the group: no NCCL id"),
            "{err}"
        );
    }

    #[test]
    fn a_blob_of_the_wrong_size_is_a_typed_error() {
        let err = exact_blob::<128>(&[1, 2, 3]).unwrap_err();
        assert!(matches!(
            err,
            ParallelError::BlobSize {
                len: 3,
                expected: 128,
                ..
            }
        ));
    }
}
