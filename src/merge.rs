//! Parameter merging across shards, every K batches per shard (`--merge-every K`).
//!
//! - **Sync**: all shards stop at a barrier, the replicas are averaged weighted by the examples
//!   each learned since the last merge, and every shard adopts the average. Deterministic for
//!   a given routing; costs one barrier per merge.
//! - **Async**: a shard adds its *delta* since its last merge, divided by the shard count, to
//!   a global model (under a short lock no other shard waits for unless it is merging at the
//!   same moment) and continues from the result; nobody stops for anybody.
//!
//! Either way the merged model is published to a [`SharedModel`] that predictor threads read
//! without locks. Optimizer state (AdaGrad/FTRL sums) stays per shard.
//!
//! The trade-off K controls: small K keeps replicas close (quality near the single-thread
//! model) but merges often (barrier waits, cache traffic for d weights per shard); large K
//! lets replicas drift apart on their own shares of the stream (each sees 1/N of the data
//! between merges) in exchange for less synchronisation. No `unsafe` here.

use crate::learner::Learner;
use crate::model::{LinearModel, SharedModel};
use crossbeam::utils::{Backoff, CachePadded};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// The merge rule, shared by the shards of one process and the workers of a cluster: replicas
/// averaged, weighted by the examples each learned since the last merge (equal weights if
/// nobody learned), summed in the order given.
pub fn weighted_average<'a>(avg: &mut [f32], parts: impl Iterator<Item = (f64, &'a [f32])> + Clone) {
    let (total, count) = parts.clone().fold((0.0, 0usize), |(t, c), (e, _)| (t + e, c + 1));
    avg.fill(0.0);
    for (examples, w) in parts {
        let f = if total > 0.0 { (examples / total) as f32 } else { 1.0 / count as f32 };
        for (a, w) in avg.iter_mut().zip(w) {
            *a += f * w;
        }
    }
}

/// A reusable barrier whose waiters spin (then yield) instead of sleeping on a futex: a merge
/// every few batches must cost microseconds, and `std::sync::Barrier`'s condvar wake-ups cost
/// tens of them (measured: sync merges every 8 batches ran at 6 M rows/s with it, see the
/// closing notes). With more threads than cores, though, a spinning waiter takes the core the
/// threads it waits for need (1000 shards on 2 cores: 30 s for 10^5 rows): waiters then sleep
/// on a condition variable. The last thread to arrive is the leader. A thread that panics
/// [abandons](SpinBarrier::abandon) it, so the others panic too instead of waiting forever.
pub struct SpinBarrier {
    n: usize,
    arrived: CachePadded<AtomicUsize>,
    generation: CachePadded<AtomicUsize>,
    abandoned: AtomicBool,
    /// Waiters sleep here instead of spinning (more threads than cores).
    sleep: Option<(Mutex<()>, Condvar)>,
}

impl SpinBarrier {
    /// A barrier for `n` threads, which spin while there are as many cores.
    pub fn new(n: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        Self::with_sleep(n, n > cores)
    }

    /// A barrier for `n` threads whose waiters sleep (`sleep`) or spin.
    pub fn with_sleep(n: usize, sleep: bool) -> Self {
        SpinBarrier {
            n,
            arrived: CachePadded::new(AtomicUsize::new(0)),
            generation: CachePadded::new(AtomicUsize::new(0)),
            abandoned: AtomicBool::new(false),
            sleep: sleep.then(|| (Mutex::new(()), Condvar::new())),
        }
    }

    /// Marks the barrier as never completing again (a thread meant to arrive has panicked):
    /// threads waiting at it, or arriving later, panic.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    /// Waits until `n` threads have called `wait`; true on exactly one of them (the last).
    pub fn wait(&self) -> bool {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            // Reset before releasing: a released thread may arrive at the next round at once.
            self.arrived.store(0, Ordering::Relaxed);
            match &self.sleep {
                Some((lock, cv)) => {
                    // Under the lock: a waiter checks the generation and sleeps atomically.
                    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
                    self.generation.fetch_add(1, Ordering::Release);
                    cv.notify_all();
                }
                None => {
                    self.generation.fetch_add(1, Ordering::Release);
                }
            }
            return true;
        }
        if let Some((lock, cv)) = &self.sleep {
            let mut held = lock.lock().unwrap_or_else(|p| p.into_inner());
            while self.generation.load(Ordering::Acquire) == gen {
                if self.abandoned.load(Ordering::Acquire) {
                    panic!("another thread at the merge barrier panicked");
                }
                // The timeout only re-checks for an abandoned barrier.
                held = cv.wait_timeout(held, std::time::Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
            }
            return false;
        }
        let backoff = Backoff::new();
        while self.generation.load(Ordering::Acquire) == gen {
            if self.abandoned.load(Ordering::Acquire) {
                panic!("another thread at the merge barrier panicked");
            }
            if backoff.is_completed() {
                std::thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
        false
    }
}

/// How replicas are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    /// Barrier and weighted average.
    Sync,
    /// Lock-light delta averaging, no barrier.
    Async,
}

struct Slot {
    weights: Vec<f32>,
    examples: f64,
}

/// Shared merge state for N shards.
pub struct Merger {
    mode: MergeMode,
    shards: usize,
    barrier: SpinBarrier,
    slots: Vec<Mutex<Slot>>,
    /// Sync: the average. Async: the global model.
    merged: Mutex<Vec<f32>>,
    shared: std::sync::Arc<SharedModel>,
    /// Sync: merges done (counted by the leader).
    merges: std::sync::atomic::AtomicU64,
}

/// Per-shard merge bookkeeping.
#[derive(Debug, Clone)]
pub struct ShardMergeState {
    /// Examples learned since the last merge.
    pub since: f64,
    /// Async: the weights at the last merge (the base of the delta).
    base: Vec<f32>,
}

impl Merger {
    /// Merge state for `shards` replicas starting from `initial` weights.
    pub fn new(mode: MergeMode, shards: usize, initial: &[f32], shared: std::sync::Arc<SharedModel>) -> Self {
        Merger {
            mode,
            shards,
            barrier: SpinBarrier::new(shards),
            slots: (0..shards).map(|_| Mutex::new(Slot { weights: initial.to_vec(), examples: 0.0 })).collect(),
            merged: Mutex::new(initial.to_vec()),
            shared,
            merges: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Bookkeeping for one shard.
    pub fn shard_state(&self, initial: &[f32]) -> ShardMergeState {
        ShardMergeState { since: 0.0, base: initial.to_vec() }
    }

    /// Merges done (sync: barrier rounds; async: shard merges).
    pub fn merges(&self) -> u64 {
        self.merges.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The merged weights now.
    pub fn merged_weights(&self) -> Vec<f32> {
        self.merged.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Called by a shard that panics: the others then panic at the merge barrier instead of
    /// waiting there forever.
    pub fn abandon(&self) {
        self.barrier.abandon();
    }

    /// Shard `id` takes part in a merge: every shard must call this for each merge marker
    /// (sync mode waits at a barrier). Returns true on the shard that published.
    pub fn merge(&self, id: usize, learner: &mut Learner, st: &mut ShardMergeState) -> bool {
        match self.mode {
            MergeMode::Sync => self.merge_sync(id, learner, st),
            MergeMode::Async => self.merge_async(learner, st),
        }
    }

    fn publish(&self, learner: &Learner, w: &[f32]) {
        self.shared.publish(LinearModel { loss: learner.model().loss, weights: w.to_vec() });
    }

    fn merge_sync(&self, id: usize, learner: &mut Learner, st: &mut ShardMergeState) -> bool {
        if self.shards == 1 {
            self.merges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.merged.lock().unwrap_or_else(|e| e.into_inner()).copy_from_slice(&learner.model().weights);
            self.publish(learner, &learner.model().weights);
            st.since = 0.0;
            return true;
        }
        {
            let mut slot = self.slots[id].lock().unwrap_or_else(|e| e.into_inner());
            slot.weights.copy_from_slice(&learner.model().weights);
            slot.examples = st.since;
        }
        let leader = self.barrier.wait();
        if leader {
            let mut avg = self.merged.lock().unwrap_or_else(|e| e.into_inner());
            let slots: Vec<_> = self.slots.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner())).collect();
            weighted_average(&mut avg, slots.iter().map(|s| (s.examples, &s.weights[..])));
            drop(slots);
            self.publish(learner, &avg);
            self.merges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.barrier.wait();
        learner.set_weights(&self.merged.lock().unwrap_or_else(|e| e.into_inner()));
        st.since = 0.0;
        leader
    }

    fn merge_async(&self, learner: &mut Learner, st: &mut ShardMergeState) -> bool {
        let mut global = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.shards as f32;
        for ((g, w), b) in global.iter_mut().zip(&learner.model().weights).zip(&st.base) {
            *g += (w - b) / n;
        }
        st.base.copy_from_slice(&global);
        learner.set_weights(&global);
        self.publish(learner, &global);
        drop(global);
        self.merges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        st.since = 0.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spin_barrier_stress() {
        // 3 threads × 20k rounds, spinning and sleeping: in every round exactly one leader, and
        // no thread enters round r+1 before all have finished round r.
        for sleep in [false, true] {
            barrier_rounds(SpinBarrier::with_sleep(3, sleep), 3, if sleep { 5_000 } else { 20_000 });
        }
        // More threads than cores: they sleep.
        barrier_rounds(SpinBarrier::new(64), 64, 200);
    }

    fn barrier_rounds(b: SpinBarrier, n: usize, rounds: usize) {
        let b = Arc::new(b);
        let phase = Arc::new(AtomicUsize::new(0));
        let leaders = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let (b, phase, leaders) = (b.clone(), phase.clone(), leaders.clone());
                std::thread::spawn(move || {
                    for r in 0..rounds {
                        phase.fetch_add(1, Ordering::AcqRel);
                        if b.wait() {
                            leaders.fetch_add(1, Ordering::Relaxed);
                        }
                        // Everyone arrived for round r: the counter is at least (r+1)·n.
                        assert!(phase.load(Ordering::Acquire) >= (r + 1) * n);
                        b.wait();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(leaders.load(Ordering::Relaxed), rounds);
        assert_eq!(phase.load(Ordering::Relaxed), rounds * n);
    }

    #[test]
    fn an_abandoned_barrier_releases_its_waiters_by_panicking() {
        for sleep in [false, true] {
            let b = SpinBarrier::with_sleep(3, sleep);
            std::thread::scope(|s| {
                let waiters: Vec<_> = (0..2).map(|_| s.spawn(|| b.wait())).collect();
                // The third thread never arrives: it panicked.
                std::thread::sleep(std::time::Duration::from_millis(20));
                b.abandon();
                for w in waiters {
                    assert!(w.join().is_err(), "a waiter panics instead of waiting forever (sleep {sleep})");
                }
            });
        }
    }
}
