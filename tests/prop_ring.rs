//! Property tests of the ring and the SPSC protocol against a `VecDeque`
//! model, and a concurrent no-loss property.

#![allow(unsafe_code)] // one property drives the raw, unsafe RingBuffer API

use std::collections::VecDeque;
use std::thread;

use laminar_ring::{RingBuffer, TryPopError, spsc};
use proptest::prelude::*;

/// One step of a single-threaded schedule.
#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    Pop,
    PushBatch(Vec<u32>),
    PopBatch(usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u32>().prop_map(Op::Push),
        4 => Just(Op::Pop),
        1 => prop::collection::vec(any::<u32>(), 0..40).prop_map(Op::PushBatch),
        1 => (0_usize..40).prop_map(Op::PopBatch),
    ]
}

fn capacity_strategy() -> impl Strategy<Value = usize> {
    (0_u32..7).prop_map(|shift| 1 << shift)
}

/// Runs `ops` on a channel and a model; checks `check` after every step.
fn run_schedule(
    cap: usize,
    ops: &[Op],
    mut check: impl FnMut(&RingProbe, &VecDeque<u32>) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let (mut tx, mut rx) = spsc::channel::<u32>(cap);
    let mut model = VecDeque::new();
    for op in ops {
        match op {
            Op::Push(v) => {
                let ok = tx.try_push(*v).is_ok();
                prop_assert_eq!(ok, model.len() < cap, "push result vs model");
                if ok {
                    model.push_back(*v);
                }
            }
            Op::Pop => {
                let got = rx.try_pop();
                match model.pop_front() {
                    Some(v) => prop_assert_eq!(got, Ok(v), "pop returns the model's front"),
                    None => prop_assert_eq!(got, Err(TryPopError::Empty), "pop on empty"),
                }
            }
            Op::PushBatch(vs) => {
                let n = tx.push_slice(vs);
                prop_assert_eq!(n, vs.len().min(cap - model.len()), "batch push count");
                model.extend(&vs[..n]);
            }
            Op::PopBatch(k) => {
                let mut out = Vec::new();
                let n = rx.pop_into(&mut out, *k);
                let expected: Vec<u32> = model.drain(..(*k).min(model.len())).collect();
                prop_assert_eq!(n, expected.len(), "batch pop count");
                prop_assert_eq!(out, expected, "batch pop contents");
            }
        }
        let probe = RingProbe {
            len: rx.len(),
            free: tx.slots(),
            cap,
        };
        check(&probe, &model)?;
    }
    Ok(())
}

struct RingProbe {
    len: usize,
    free: usize,
    cap: usize,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_len_never_exceeds_capacity(
        cap in capacity_strategy(),
        ops in prop::collection::vec(op_strategy(), 0..300),
    ) {
        run_schedule(cap, &ops, |p, model| {
            prop_assert!(p.len <= p.cap, "len {} > capacity {}", p.len, p.cap);
            prop_assert_eq!(p.len, model.len(), "len matches the model");
            prop_assert_eq!(p.len + p.free, p.cap, "len + free == capacity");
            Ok(())
        })?;
    }

    #[test]
    fn prop_write_seq_always_gte_read_seq(
        cap in capacity_strategy(),
        ops in prop::collection::vec(op_strategy(), 0..300),
    ) {
        // Drive the raw RingBuffer API directly and watch the sequences.
        let ring: RingBuffer<u32> = RingBuffer::new(cap);
        let mut model = VecDeque::new();
        for op in &ops {
            let (w, r) = (ring.write_seq(), ring.read_seq());
            let push_value = match op {
                Op::Push(v) => Some(*v),
                Op::PushBatch(vs) => vs.first().copied(),
                _ => None,
            };
            match op {
                Op::Push(_) | Op::PushBatch(_) if push_value.is_some() && (w - r) < cap as u64 => {
                    let v = push_value.unwrap_or_default();
                    // SAFETY: single thread; slot `w` is free (w - r < cap).
                    unsafe { ring.write_slot(w, v); ring.advance_write_seq(w + 1); }
                    model.push_back(v);
                }
                Op::Pop | Op::PopBatch(_) if r < w => {
                    // SAFETY: single thread; slot `r` is published and unread.
                    let v = unsafe { let v = ring.read_slot(r); ring.advance_read_seq(r + 1); v };
                    prop_assert_eq!(Some(v), model.pop_front(), "raw pop order");
                }
                _ => {}
            }
            let (w, r) = (ring.write_seq(), ring.read_seq());
            prop_assert!(w >= r, "write_seq {} < read_seq {}", w, r);
            prop_assert!(w - r <= cap as u64, "more than capacity apart");
            prop_assert_eq!(ring.len(), model.len(), "len matches the model");
        }
    }

    #[test]
    fn prop_items_read_in_fifo_order(
        cap in capacity_strategy(),
        ops in prop::collection::vec(op_strategy(), 0..300),
    ) {
        // run_schedule asserts every popped value against the model's front.
        run_schedule(cap, &ops, |_, _| Ok(()))?;
    }

    #[test]
    fn prop_no_data_loss_under_concurrent_access(
        cap in capacity_strategy(),
        count in 0_u64..20_000,
        push_batch in 1_usize..64,
        pop_batch in 1_usize..64,
    ) {
        let (mut tx, mut rx) = spsc::channel::<u64>(cap);
        let producer = thread::spawn(move || {
            let mut next = 0;
            while next < count {
                let end = (next + push_batch as u64).min(count);
                let mut it = next..end;
                let n = tx.push_iter(&mut it);
                next += n as u64;
                if n == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        let mut out = Vec::with_capacity(pop_batch);
        while expected < count {
            out.clear();
            if rx.pop_into(&mut out, pop_batch) == 0 {
                thread::yield_now();
            }
            for &v in &out {
                prop_assert_eq!(v, expected, "lost, duplicated or reordered item");
                expected += 1;
            }
        }
        producer.join().unwrap();
        prop_assert_eq!(rx.try_pop(), Err(TryPopError::Disconnected), "nothing extra");
    }
}
