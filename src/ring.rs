//! Bounded lock-free rings between pipeline stages: crossbeam's `ArrayQueue` (a proven MPMC
//! ring; no home-made ring until a benchmark shows one wins) plus the waiting policy the
//! pipeline needs: a full ring makes the producer wait, an empty ring the consumer — spinning
//! briefly, then parking until the other side wakes it — and never drops. Either side can close
//! the ring: a consumer that stops early (an error) closes it so the producer gets its value
//! back instead of waiting forever. No `unsafe` here.
//!
//! Wake-ups: a side about to park registers its thread and raises a flag, re-checks the ring,
//! then parks; the other side unparks it only if the flag is up (one load on the hot path) —
//! a consumer as soon as an item arrives, a producer once the ring has drained to half.
//! Parking tokens make the order race-free; the park timeout is only a safety net.

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::{Backoff, CachePadded};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Longest park before re-checking (a safety net: waiters are woken explicitly; long enough
/// that a thousand parked shards on two cores do not keep them busy waking up).
const PARK: Duration = Duration::from_millis(20);
/// How long an empty ring's consumer keeps polling (yielding its core to anyone runnable)
/// before it parks: a wake-up from park costs 20–50 µs on a VM, more than the gap between
/// batches at a steady rate, so a consumer that is about to get work should not sleep.
const POLL: Duration = Duration::from_micros(200);

/// One side's parked thread.
#[derive(Debug, Default)]
struct Waiter {
    waiting: CachePadded<AtomicBool>,
    thread: Mutex<Option<Thread>>,
}

impl Waiter {
    /// Parks the current thread unless `ready()` turns true after registering.
    fn park_unless(&self, ready: impl Fn() -> bool) {
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
        self.waiting.store(true, Ordering::SeqCst);
        if !ready() {
            std::thread::park_timeout(PARK);
        }
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// Wakes the parked thread, if any.
    #[inline]
    fn wake(&self) {
        // The change to the queue before this must be visible before `waiting` is read (a
        // store then a load of another location may otherwise be reordered, and a waiter that
        // has just raised `waiting` but still sees the old queue would sleep out its timeout).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                t.unpark();
            }
        }
    }
}

/// A bounded ring with blocking push/pop and close.
#[derive(Debug)]
pub struct Ring<T> {
    queue: ArrayQueue<T>,
    closed: CachePadded<AtomicBool>,
    producer: Waiter,
    consumer: Waiter,
}

impl<T> Ring<T> {
    /// A ring holding at most `capacity` items (≥ 1).
    pub fn new(capacity: usize) -> Self {
        Ring {
            queue: ArrayQueue::new(capacity.max(1)),
            closed: CachePadded::new(AtomicBool::new(false)),
            producer: Waiter::default(),
            consumer: Waiter::default(),
        }
    }

    /// Pushes, waiting while the ring is full. `Err(value)` if the ring is closed.
    pub fn push(&self, mut value: T) -> Result<(), T> {
        let backoff = Backoff::new();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(value);
            }
            match self.queue.push(value) {
                Ok(()) => {
                    self.consumer.wake();
                    return Ok(());
                }
                Err(back) => value = back,
            }
            if backoff.is_completed() {
                self.producer.park_unless(|| self.half_empty() || self.is_closed());
            } else {
                backoff.snooze();
            }
        }
    }

    /// Pops, waiting while the ring is empty; `None` once it is closed and drained.
    pub fn pop(&self) -> Option<T> {
        let backoff = Backoff::new();
        let mut poll_until = None;
        loop {
            if let Some(v) = self.queue.pop() {
                self.wake_producer();
                return Some(v);
            }
            if self.closed.load(Ordering::Acquire) {
                // Closed: items pushed before the close are still delivered.
                return self.queue.pop();
            }
            if !backoff.is_completed() {
                backoff.snooze();
            } else if Instant::now() < *poll_until.get_or_insert_with(|| Instant::now() + POLL) {
                std::thread::yield_now();
            } else {
                self.consumer.park_unless(|| !self.queue.is_empty() || self.is_closed());
            }
        }
    }

    /// At most half full: where a parked producer is worth waking (hysteresis: one wake-up
    /// refills half a ring, instead of a wake-up per item on the consumer's critical path).
    #[inline]
    fn half_empty(&self) -> bool {
        self.queue.len() <= self.queue.capacity() / 2
    }

    #[inline]
    fn wake_producer(&self) {
        if self.half_empty() {
            self.producer.wake();
        }
    }

    /// Closes the ring: pushes fail from now on, pops drain what is left then return `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.producer.wake();
        self.consumer.wake();
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
    fn slow_sides_are_woken_not_timed_out() {
        // Ping-pong through a ring of 1: each hand-off needs a wake-up. With only the 20 ms
        // timeout, 2000 hand-offs would take ≥ 40 s; woken explicitly they take some 0.25 s.
        // The bound leaves room for a loaded machine (CI, tests in parallel) and still fails
        // if a quarter of the hand-offs wait for the timeout.
        let ring = Arc::new(Ring::new(1));
        let r = ring.clone();
        let t = std::time::Instant::now();
        let consumer = std::thread::spawn(move || {
            let mut n = 0u64;
            while let Some(v) = r.pop() {
                n += v;
                std::thread::sleep(Duration::from_micros(50)); // let the producer park
            }
            n
        });
        for _ in 0..2000 {
            ring.push(1u64).unwrap();
        }
        ring.close();
        assert_eq!(consumer.join().unwrap(), 2000);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
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
