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
        .map(|i| ((i * 7919 + rank * 104_729) % 1000) as f32 * 1e-3 + [1e8, -1e8, 0.5][rank % 3])
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
