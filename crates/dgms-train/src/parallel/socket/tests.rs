use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::parallel::all_reduce::in_process_group;

const T: Duration = Duration::from_secs(10);

/// Runs `f` on every rank of a new socket group of `world` (threads of this
/// process, connected over 127.0.0.1), results by rank; panics if a rank is
/// still running after 20 s, so a deadlock fails instead of hanging.
fn on_ranks<R: Send + 'static>(
    world: usize,
    f: impl Fn(SocketComm) -> R + Send + Sync + 'static,
) -> Vec<R> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let f = std::sync::Arc::new(f);
    let (tx, rx) = mpsc::channel();
    {
        let (f, tx) = (f.clone(), tx.clone());
        std::thread::spawn(move || {
            let comm = SocketComm::hub(listener, world, T).unwrap();
            let _ = tx.send((0, f(comm)));
        });
    }
    for rank in 1..world {
        let (f, tx, addr) = (f.clone(), tx.clone(), addr.clone());
        std::thread::spawn(move || {
            let comm = SocketComm::connect(&addr, rank, world, T).unwrap();
            let _ = tx.send((rank, f(comm)));
        });
    }
    let mut out: Vec<Option<R>> = (0..world).map(|_| None).collect();
    for _ in 0..world {
        let (rank, r) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a rank hung");
        out[rank] = Some(r);
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Values whose sums depend on the order of addition in f32.
fn values(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i * 7 + rank * 13) % 23) as f32 * 1.0e-3
                + [1.0e8, -1.0e8, 3.0][rank % 3] * ((i % 2) as f32)
        })
        .collect()
}

fn in_process(world: usize, len: usize, op: ReduceOp) -> Vec<f32> {
    let comms = in_process_group(world).unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let mut v = values(c.rank(), len);
                    c.all_reduce_slice(&mut v, op).unwrap();
                    v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).next().unwrap()
    })
}

#[test]
fn a_socket_group_gives_the_in_process_groups_bits_on_every_rank() {
    for world in [1, 2, 3] {
        for op in [ReduceOp::Sum, ReduceOp::Mean] {
            let want = in_process(world, 10_001, op);
            let got = on_ranks(world, move |c| {
                let mut v = values(c.rank(), 10_001);
                c.all_reduce_slice(&mut v, op).unwrap();
                v
            });
            for (rank, g) in got.iter().enumerate() {
                let same = g.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "world {world} {op:?}: rank {rank} differs from the in-process group"
                );
            }
        }
    }
}

#[test]
fn tensors_keep_their_shape_and_many_collectives_stay_in_step() {
    let got = on_ranks(3, |c| {
        let mut last = Vec::new();
        for step in 0..50 {
            let t =
                Tensor::full((c.rank() + step) as f32, (2, 3), &candle_core::Device::Cpu).unwrap();
            let r = c.all_reduce(&t, ReduceOp::Sum).unwrap();
            assert_eq!(r.dims(), &[2, 3]);
            last = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        }
        last
    });
    // Step 49: 49 + 50 + 51.
    for g in got {
        assert_eq!(g, vec![150.0; 6]);
    }
}

#[test]
fn an_aborting_rank_fails_the_others_with_its_reason() {
    for culprit in [0, 2] {
        let got = on_ranks(3, move |c| {
            let mut v = vec![1.0f32; 8];
            c.all_reduce_slice(&mut v, ReduceOp::Sum).unwrap();
            if c.rank() == culprit {
                c.abort("out of memory");
                return None;
            }
            Some(c.all_reduce_slice(&mut v, ReduceOp::Sum))
        });
        for (rank, r) in got.into_iter().enumerate() {
            if rank == culprit {
                continue;
            }
            match r.unwrap() {
                Err(ParallelError::Aborted { rank: who, reason }) => {
                    assert_eq!(who, culprit);
                    assert!(reason.contains("out of memory"), "{reason}");
                }
                other => panic!("rank {rank}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_rank_that_leaves_fails_the_others() {
    let got = on_ranks(3, |c| {
        if c.rank() == 1 {
            return None; // drops its connection
        }
        let mut v = vec![1.0f32; 4];
        Some(c.all_reduce_slice(&mut v, ReduceOp::Mean).unwrap_err())
    });
    match &got[0] {
        Some(ParallelError::RankLeft { rank: 1 }) => {}
        other => panic!("rank 0: {other:?}"),
    }
    match &got[2] {
        Some(ParallelError::Aborted { rank: 1, .. }) | Some(ParallelError::RankLeft { .. }) => {}
        other => panic!("rank 2: {other:?}"),
    }
}

#[test]
fn mismatched_lengths_and_ops_are_errors() {
    let got = on_ranks(2, |c| {
        let mut v = vec![1.0f32; 4 + c.rank()];
        c.all_reduce_slice(&mut v, ReduceOp::Sum).unwrap_err()
    });
    assert!(
        matches!(
            got[0],
            ParallelError::LengthMismatch {
                rank: 1,
                len: 5,
                expected: 4
            }
        ),
        "{:?}",
        got[0]
    );
    let got = on_ranks(2, |c| {
        let op = [ReduceOp::Sum, ReduceOp::Mean][c.rank()];
        c.all_reduce_slice(&mut [1.0f32; 3], op).unwrap_err()
    });
    assert!(
        matches!(got[0], ParallelError::OpMismatch { rank: 1, .. }),
        "{:?}",
        got[0]
    );
}

#[test]
fn the_rendezvous_refuses_wrong_groups_and_gives_up_in_time() {
    // A rank claiming another group size is refused, on both sides.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hub = std::thread::spawn(move || SocketComm::hub(listener, 2, T).unwrap_err());
    let spoke = SocketComm::connect(&addr, 1, 3, T).unwrap_err();
    let hub = hub.join().unwrap();
    for e in [hub.to_string(), spoke.to_string()] {
        assert!(e.contains("expects a group of 3"), "{e}");
    }
    // Nobody listening: an error naming the address, after the timeout.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let e = SocketComm::connect(&free, 1, 2, Duration::from_millis(300)).unwrap_err();
    assert!(e.to_string().contains(&free), "{e}");
    // A hub whose ranks never come.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = SocketComm::hub(listener, 3, Duration::from_millis(200)).unwrap_err();
    assert!(e.to_string().contains("ranks [1, 2] did not arrive"), "{e}");
    // Rank 0 cannot connect; a rank outside the group is refused.
    assert!(SocketComm::connect(&free, 0, 2, T).is_err());
    assert!(SocketComm::connect(&free, 2, 2, T).is_err());
}
