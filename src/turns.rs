//! State that the shards update in stream order: batch `k`'s turn runs after batches
//! `0 .. k` had theirs, whichever shard holds each. The duplicate window lives here, so that
//! everything before it (fingerprinting the batch) runs in parallel in the shards and only the
//! window's few nanoseconds per row are sequential. No `unsafe` here.
//!
//! A waiting shard spins briefly then yields ([`crossbeam::utils::Backoff`]): the turn it waits
//! for is held by a shard that is running, never one blocked on the waiter (batches are
//! numbered in the order the producer hands them out, and every merge barrier a lower-numbered
//! batch's shard must pass has already been passed by the waiter). A shard that panics
//! [abandons](InOrder::abandon) the turns, so a waiter panics too instead of waiting forever.

use crossbeam::utils::Backoff;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// A `T` updated by turns numbered 0, 1, 2, … each taken exactly once.
#[derive(Debug)]
pub struct InOrder<T> {
    /// The next turn to run.
    next: AtomicU64,
    /// Only the thread whose turn it is locks it, so the lock is never contended; it makes
    /// the hand-over a plain happens-before edge without `unsafe`.
    state: Mutex<T>,
    /// Set when a turn will never be taken (its thread panicked).
    abandoned: AtomicBool,
}

impl<T> InOrder<T> {
    /// `state`, with turn 0 next.
    pub fn new(state: T) -> Self {
        InOrder { next: AtomicU64::new(0), state: Mutex::new(state), abandoned: AtomicBool::new(false) }
    }

    /// Marks the turns as never advancing again (a thread that was to take one has panicked):
    /// threads waiting for a turn, or arriving later, panic.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    /// Waits until every turn below `turn` has run, then runs `f` on the state as turn `turn`.
    /// Each turn must be taken exactly once (a skipped number makes its successors wait
    /// forever).
    pub fn turn<R>(&self, turn: u64, f: impl FnOnce(&mut T) -> R) -> R {
        let backoff = Backoff::new();
        while self.next.load(Ordering::Acquire) != turn {
            if self.abandoned.load(Ordering::Acquire) {
                panic!("turn {turn} never comes: a thread taking turns panicked");
            }
            backoff.snooze();
        }
        let r = f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.next.store(turn + 1, Ordering::Release);
        r
    }

    /// The state, once every thread is done with it.
    pub fn into_inner(self) -> T {
        self.state.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stress: threads take interleaved turns (thread i: i, i + n, …) in scrambled local order
    /// of arrival; the log must come out 0, 1, 2, … with no turn lost or repeated.
    #[test]
    fn turns_run_in_order_across_threads() {
        for threads in [1usize, 2, 3, 4, 8] {
            let turns = 4000u64;
            let log = InOrder::new(Vec::new());
            std::thread::scope(|s| {
                for i in 0..threads as u64 {
                    let log = &log;
                    s.spawn(move || {
                        let mut spin = i;
                        for t in (i..turns).step_by(threads) {
                            // Uneven work between turns, so threads arrive early and late.
                            spin = spin.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            for _ in 0..(spin >> 58) {
                                std::hint::spin_loop();
                            }
                            log.turn(t, |v: &mut Vec<u64>| v.push(t));
                        }
                    });
                }
            });
            assert_eq!(log.into_inner(), (0..turns).collect::<Vec<_>>(), "{threads} threads");
        }
    }

    #[test]
    fn abandoned_turns_release_their_waiters_by_panicking() {
        let turns = InOrder::new(());
        std::thread::scope(|s| {
            // Turn 0 is never taken (its thread panicked): the waiter for turn 1 must not hang.
            let waiter = s.spawn(|| turns.turn(1, |_| ()));
            std::thread::sleep(std::time::Duration::from_millis(20));
            turns.abandon();
            assert!(waiter.join().is_err());
        });
    }
}
