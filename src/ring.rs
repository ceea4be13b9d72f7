//! Bounded lock-free rings between pipeline stages: crossbeam's `ArrayQueue` (a proven MPMC
//! ring; no home-made ring until a benchmark shows one wins) plus the waiting policy the
//! pipeline needs: a full ring makes the producer wait (spin, then park), never drop; an empty
//! ring makes the consumer wait the same way. Either side can close the ring: a consumer that
//! stops early (an error) closes it so the producer gets its value back instead of waiting
//! forever. No `unsafe` here.

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::{Backoff, CachePadded};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a waiter parks once spinning has not helped (bounds the wake-up delay).
const PARK: Duration = Duration::from_micros(20);

/// A bounded ring with blocking push/pop and close.
#[derive(Debug)]
pub struct Ring<T> {
    queue: ArrayQueue<T>,
    closed: CachePadded<AtomicBool>,
}

impl<T> Ring<T> {
    /// A ring holding at most `capacity` items (≥ 1).
    pub fn new(capacity: usize) -> Self {
        Ring { queue: ArrayQueue::new(capacity.max(1)), closed: CachePadded::new(AtomicBool::new(false)) }
    }

    /// Pushes, waiting while the ring is full. `Err(value)` if the ring is closed.
    pub fn push(&self, mut value: T) -> Result<(), T> {
        let backoff = Backoff::new();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(value);
            }
            match self.queue.push(value) {
                Ok(()) => return Ok(()),
                Err(back) => value = back,
            }
            wait(&backoff);
        }
    }

    /// Pops, waiting while the ring is empty; `None` once it is closed and drained.
    pub fn pop(&self) -> Option<T> {
        let backoff = Backoff::new();
        loop {
            if let Some(v) = self.queue.pop() {
                return Some(v);
            }
            if self.closed.load(Ordering::Acquire) {
                // Closed: items pushed before the close are still delivered.
                return self.queue.pop();
            }
            wait(&backoff);
        }
    }

    /// Pops without waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Pushes without waiting; `Err(value)` when full or closed.
    pub fn try_push(&self, value: T) -> Result<(), T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(value);
        }
        self.queue.push(value)
    }

    /// Closes the ring: pushes fail from now on, pops drain what is left then return `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`Ring::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Items in the ring now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the ring is empty now.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

fn wait(backoff: &Backoff) {
    if backoff.is_completed() {
        std::thread::park_timeout(PARK);
    } else {
        backoff.snooze();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stress_no_loss_no_duplication_in_order_per_producer() {
        // 4 producers × 50k items through a ring of 8 into 2 consumers; every item arrives
        // exactly once and each producer's items arrive in order at any one consumer.
        let ring = Arc::new(Ring::new(8));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let r = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        r.push(p << 32 | i).unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = ring.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut last = [None::<u64>; 4];
                    while let Some(v) = r.pop() {
                        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                        assert!(last[p].is_none_or(|l| l < i), "out of order");
                        last[p] = Some(i);
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        ring.close();
        let mut all: Vec<u64> = consumers.into_iter().flat_map(|c| c.join().unwrap()).collect();
        all.sort_unstable();
        let want: Vec<u64> = (0..4u64).flat_map(|p| (0..50_000u64).map(move |i| p << 32 | i)).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn closing_releases_a_blocked_producer() {
        let ring = Arc::new(Ring::new(1));
        ring.push(1).unwrap();
        let r = ring.clone();
        let blocked = std::thread::spawn(move || r.push(2));
        std::thread::sleep(Duration::from_millis(20));
        ring.close();
        assert_eq!(blocked.join().unwrap(), Err(2));
        assert_eq!(ring.pop(), Some(1));
        assert_eq!(ring.pop(), None);
    }
}
