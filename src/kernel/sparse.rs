//! The sparse kernel: a row's prediction gathers the weights of its features (and of the
//! crosses `--interactions` asks for) from a hashed table of 2^b slots; its update scatters
//! one optimizer step back into the same slots.
//!
//! **Layout.** A slot keeps a weight and its optimizer state side by side (fwumious_wabbit's
//! layout), so a feature costs one cache line, not two: `[w, t]` for SGD (the step at which
//! the weight was last touched, for lazy L2), `[w, Σg²]` for AdaGrad, `[w, z, n, ·]` for
//! FTRL-Proximal and `[w, Σg², s, ·]` for the normalized update (s = the largest |x| seen).
//! The bias is not in the table: each learner keeps its own (every row touches it; shared, its
//! cache line would bounce between cores on every row).
//!
//! **Sharing.** Every shard learns into the same table (Hogwild: Recht et al., 2011): slots
//! are relaxed atomics, which compile to plain loads and stores on x86-64 and ARM, so there
//! are no locks and no `unsafe`; when two shards update the same slot at once one step may be
//! lost, the design's accepted race (rare with millions of slots; measured in
//! docs/sparse.md).
//!
//! **Regularisation is lazy.** L2 and L1 act on a slot only when a row touches it (SGD applies
//! the decay of all the steps it missed then), so a step costs O(features of the row), never
//! O(table). The kernel is scalar: a row's features are scattered over the table, the cost is
//! the cache misses, and a gather would not remove them; prefetching the next row's slots
//! overlaps them instead. One `unsafe` call: the prefetch hint.

use crate::loss::Loss;
use crate::optim::{adaptive_coord, ftrl_coord, ftrl_z, soft_threshold, Kind, OptimConfig, Optimizer, Schedule};
use crate::source::hash::cross;
use crate::sparse::rows::Row;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The largest `--bits`: 2^30 slots of up to 16 bytes.
pub const MAX_BITS: u32 = 30;

/// The shared weight table.
#[derive(Debug)]
pub struct Table {
    slots: Box<[AtomicU32]>,
    stride: usize,
    mask: u32,
    kind: Kind,
}

/// f32s per slot for an optimizer.
fn stride_of(kind: Kind) -> usize {
    match kind {
        Kind::Sgd | Kind::Adagrad => 2,
        Kind::Ftrl | Kind::Normalized => 4,
    }
}

impl Table {
    /// An all-zero table of 2^`bits` slots laid out for `kind`.
    pub fn new(bits: u32, kind: Kind) -> Self {
        assert!((1..=MAX_BITS).contains(&bits), "bits {bits} out of range");
        let stride = stride_of(kind);
        let slots = (0..(stride << bits)).map(|_| AtomicU32::new(0)).collect();
        Table { slots, stride, mask: ((1u64 << bits) - 1) as u32, kind }
    }

    /// Bytes of memory a table of 2^`bits` slots for `kind` takes.
    pub fn bytes(bits: u32, kind: Kind) -> u64 {
        (stride_of(kind) as u64 * 4) << bits
    }

    /// Slots (2^bits).
    pub fn len(&self) -> usize {
        self.mask as usize + 1
    }

    /// Never empty (at least 2 slots).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slot of feature id `id`.
    #[inline]
    pub fn slot(&self, id: u32) -> u32 {
        id & self.mask
    }

    #[inline]
    fn get(&self, slot: u32, k: usize) -> f32 {
        f32::from_bits(self.slots[slot as usize * self.stride + k].load(Relaxed))
    }

    #[inline]
    fn set(&self, slot: u32, k: usize, v: f32) {
        self.slots[slot as usize * self.stride + k].store(v.to_bits(), Relaxed)
    }

    /// Asks the CPU to bring slot `slot` into the cache (a hint: no effect on the values).
    #[inline]
    pub fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = &self.slots[slot as usize * self.stride] as *const AtomicU32 as *const i8;
            // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has, and is a hint that
            // reads nothing the program sees: any address is allowed (this one is in bounds).
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The weight in slot `slot`.
    #[inline]
    pub fn weight(&self, slot: u32) -> f32 {
        self.get(slot, 0)
    }

    /// Every slot's weight, in slot order.
    pub fn weights(&self) -> Vec<f32> {
        self.slots.iter().step_by(self.stride).map(|a| f32::from_bits(a.load(Relaxed))).collect()
    }

    /// Sets every slot's weight (the optimizer state starts fresh).
    pub fn set_weights(&self, w: &[f32]) {
        for (slot, &v) in w.iter().enumerate().take(self.len()) {
            self.set(slot as u32, 0, v);
        }
    }

    /// Every slot's weight, in slot order, as of `examples` learned with `cfg`: SGD with L2
    /// applies the decay each slot has pending (its lazy regularisation) first.
    pub fn settled_weights(&self, cfg: &OptimConfig, examples: u64) -> Vec<f32> {
        if self.kind != Kind::Sgd || cfg.l2 <= 0.0 {
            return self.weights();
        }
        let now = examples as u32;
        let decay = 1.0 - sgd_rate(cfg, examples as f64) * cfg.l2;
        (0..self.len() as u32)
            .map(|s| {
                let missed = now.wrapping_sub(self.get(s, 1).to_bits()).min(1 << 20);
                self.get(s, 0) * decay.powi(missed as i32)
            })
            .collect()
    }

    /// Takes the optimizer state from `opt`'s per-coordinate arrays (what
    /// [`Table::export_state`] wrote); SGD's slots count as touched at step `examples`.
    pub fn import_state(&self, opt: &Optimizer, examples: u64) {
        let col = |k: usize, from: &[f32]| {
            for (s, &v) in from.iter().enumerate().take(self.len()) {
                self.set(s as u32, k, v);
            }
        };
        match self.kind {
            Kind::Sgd => (0..self.len() as u32).for_each(|s| self.set(s, 1, f32::from_bits(examples as u32))),
            Kind::Adagrad => col(1, &opt.sum_sq),
            Kind::Normalized => {
                col(1, &opt.sum_sq);
                col(2, &opt.scale);
            }
            Kind::Ftrl => {
                col(1, &opt.z);
                col(2, &opt.sum_sq);
            }
        }
    }

    /// Copies the optimizer state into `opt`'s per-coordinate arrays (the dense optimizer's
    /// layout, d = [`Table::len`]; the bias's entries are left as they are).
    pub fn export_state(&self, opt: &mut Optimizer) {
        let col = |k: usize, to: &mut [f32]| {
            for (s, v) in to.iter_mut().enumerate().take(self.len()) {
                *v = self.get(s as u32, k);
            }
        };
        match self.kind {
            Kind::Sgd => {}
            Kind::Adagrad => col(1, &mut opt.sum_sq),
            Kind::Normalized => {
                col(1, &mut opt.sum_sq);
                col(2, &mut opt.scale);
            }
            Kind::Ftrl => {
                col(1, &mut opt.z);
                col(2, &mut opt.sum_sq);
            }
        }
    }

    /// Restarts every slot's adaptive state (a drift reset), keeping its weight: AdaGrad's and
    /// the normalized update's Σg² (and the latter's scales) start at zero; FTRL's n does, and
    /// its z is set to give the same weight; SGD has none. Slots shards
    /// update meanwhile keep the step they take (the table is shared as for learning).
    pub fn reset_state(&self, c: &OptimConfig) {
        for s in 0..self.len() as u32 {
            match self.kind {
                Kind::Sgd => {}
                Kind::Adagrad => self.set(s, 1, 0.0),
                Kind::Normalized => {
                    self.set(s, 1, 0.0);
                    self.set(s, 2, 0.0);
                }
                Kind::Ftrl => {
                    self.set(s, 1, ftrl_z(self.get(s, 0), 0.0, c.lr, c.beta, c.l1, c.l2));
                    self.set(s, 2, 0.0);
                }
            }
        }
    }

    /// Every slot as raw bits: the state replicas share after a merge ([`Table::merge`]).
    pub fn raw(&self) -> Vec<u32> {
        self.slots.iter().map(|a| a.load(Relaxed)).collect()
    }

    /// The slots `touched` marks, ascending, with their values as raw bits (`stride` each)
    /// appended to `slots` and `values`; the marks are cleared.
    pub fn changed(&self, touched: &mut [u64], slots: &mut Vec<u32>, values: &mut Vec<u32>) {
        for (i, word) in touched.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let s = (i * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                slots.push(s);
                let at = s as usize * self.stride;
                values.extend(self.slots[at..at + self.stride].iter().map(|a| a.load(Relaxed)));
            }
        }
    }

    /// Merges replicas that started from `base` (every slot as [`Table::raw`] gave it at the
    /// last merge) and sent the slots they changed ([`Table::changed`]), in a fixed order. A
    /// slot one replica changed takes its change whole (as if the replicas shared the table);
    /// one several changed takes the mean of their weight changes, each weighted by the
    /// squared gradients it added to the slot (Vowpal Wabbit's rule for averaging adaptive
    /// replicas, applied to the round's changes; SGD weighs them equally), while the sums of
    /// squared gradients add up, the normalized update's scales and SGD's step stamps take the
    /// largest, and FTRL's z is anchored to the merged weight. `self` and `base` both end as the
    /// merged state; the same replicas in the same order give the same bits everywhere.
    pub fn merge(&self, base: &mut [u32], replicas: &[(&[u32], &[u32])], c: &OptimConfig) {
        let (stride, f) = (self.stride, f32::from_bits);
        // The column of the squared gradients that weigh a replica's change (SGD: none).
        let mass = match self.kind {
            Kind::Sgd => None,
            Kind::Adagrad | Kind::Normalized => Some(1),
            Kind::Ftrl => Some(2),
        };
        let mut at = vec![0usize; replicas.len()];
        // The values each replica that changed the slot sent.
        let mut changes: Vec<&[u32]> = Vec::with_capacity(replicas.len());
        let mut merged = [0u32; 4];
        // The lowest slot any replica still has (their lists ascend): all its changes.
        while let Some(s) = replicas.iter().zip(&at).filter_map(|((slots, _), &i)| slots.get(i).copied()).min() {
            changes.clear();
            for ((slots, values), i) in replicas.iter().zip(at.iter_mut()) {
                if slots.get(*i) == Some(&s) {
                    changes.push(&values[*i * stride..(*i + 1) * stride]);
                    *i += 1;
                }
            }
            let b = &base[s as usize * stride..(s as usize + 1) * stride];
            if let [v] = changes[..] {
                merged[..stride].copy_from_slice(v);
            } else {
                merged[..stride].copy_from_slice(b);
                let (mut num, mut den) = (0.0f32, 0.0f32);
                for v in &changes {
                    let a = mass.map_or(1.0, |k| f(v[k]) - f(b[k])).max(0.0);
                    num += a * (f(v[0]) - f(b[0]));
                    den += a;
                    let add = |k: usize, m: u32| (f(m) + f(v[k]) - f(b[k])).to_bits();
                    match self.kind {
                        Kind::Sgd => merged[1] = merged[1].max(v[1]),
                        Kind::Adagrad => merged[1] = add(1, merged[1]),
                        Kind::Normalized => {
                            merged[1] = add(1, merged[1]);
                            merged[2] = f(merged[2]).max(f(v[2])).to_bits();
                        }
                        Kind::Ftrl => merged[2] = add(2, merged[2]),
                    }
                }
                let w = if den > 0.0 { f(b[0]) + num / den } else { f(b[0]) };
                merged[0] = w.to_bits();
                if self.kind == Kind::Ftrl {
                    merged[1] = ftrl_z(w, f(merged[2]), c.lr, c.beta, c.l1, c.l2).to_bits();
                }
            }
            let at = s as usize * stride;
            for k in 0..stride {
                self.slots[at + k].store(merged[k], Relaxed);
                base[at + k] = merged[k];
            }
        }
    }

    /// The optimizer this table is laid out for.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// The bias and its optimizer state (one learner's).
#[derive(Clone, Copy, Debug, Default)]
struct Bias {
    w: f32,
    sum_sq: f32,
    z: f32,
}

/// Crosses of namespaces learned without being stored: each is 2 or 3 namespace tags.
pub type Interactions = [Vec<u8>];

/// A [`SparseKernel`]'s row buffers, kept between kernels.
#[derive(Debug, Default)]
pub struct KernelBuffers {
    feats: Vec<(u32, f32)>,
    ahead: Vec<(u32, f32)>,
}

/// One shard's learner over a shared [`Table`]: progressive prediction, loss and update of a
/// row at a time.
pub struct SparseKernel<'t> {
    table: &'t Table,
    loss: Loss,
    cfg: OptimConfig,
    interactions: Vec<Vec<u8>>,
    bias: Bias,
    /// Rows this learner has stepped on.
    steps: u64,
    /// Learners sharing the table (SGD's schedule counts every shard's steps).
    shards: u64,
    /// The expanded row: (slot, value) of every feature and cross.
    feats: Vec<(u32, f32)>,
    /// The next row, expanded ahead and its slots prefetched ([`SparseKernel::learn_ahead`]).
    ahead: Vec<(u32, f32)>,
    ahead_ready: bool,
    /// A bit per slot this learner has stepped on since [`SparseKernel::changes`] (empty: not
    /// tracked).
    touched: Vec<u64>,
}

impl<'t> SparseKernel<'t> {
    /// A learner of `loss` with `cfg` into `table`, one of `shards` sharing it.
    pub fn new(table: &'t Table, loss: Loss, cfg: OptimConfig, interactions: &Interactions, shards: usize) -> Self {
        assert_eq!(table.kind, cfg.kind, "the table's layout is for another optimizer");
        SparseKernel {
            table,
            loss,
            cfg,
            interactions: interactions.to_vec(),
            bias: Bias::default(),
            steps: 0,
            shards: shards.max(1) as u64,
            feats: Vec::new(),
            ahead: Vec::new(),
            ahead_ready: false,
            touched: Vec::new(),
        }
    }

    /// Takes `bufs` (from [`SparseKernel::into_buffers`]) as its row buffers: a caller that
    /// makes a kernel per row allocates nothing.
    pub fn reuse(&mut self, bufs: KernelBuffers) {
        (self.feats, self.ahead) = (bufs.feats, bufs.ahead);
        self.ahead_ready = false;
    }

    /// Its row buffers, for the next kernel's [`SparseKernel::reuse`].
    pub fn into_buffers(self) -> KernelBuffers {
        KernelBuffers { feats: self.feats, ahead: self.ahead }
    }

    /// The loss.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// The table it learns into.
    pub fn table(&self) -> &'t Table {
        self.table
    }

    /// The bias.
    pub fn bias(&self) -> f32 {
        self.bias.w
    }

    /// Sets the bias (its optimizer state starts fresh).
    pub fn set_bias(&mut self, b: f32) {
        self.bias = Bias { w: b, ..Bias::default() };
    }

    /// The bias's optimizer state: (Σg² or FTRL's n, FTRL's z).
    pub fn bias_state(&self) -> (f32, f32) {
        (self.bias.sum_sq, self.bias.z)
    }

    /// Continues a saved model: its bias `b` with optimizer state `state` (see
    /// [`SparseKernel::bias_state`]), after `examples` rows learned by all its shards (the
    /// schedules' clock).
    pub fn resume(&mut self, b: f32, state: (f32, f32), examples: u64) {
        self.bias = Bias { w: b, sum_sq: state.0, z: state.1 };
        self.steps = examples / self.shards;
    }

    /// Marks the slots its steps change from now on (a replica that sends only those).
    pub fn track_changes(&mut self) {
        self.touched = vec![0; self.table.len().div_ceil(64)];
    }

    /// The slots changed since the last call (or [`SparseKernel::track_changes`]), ascending,
    /// and their values as raw bits (see [`Table::changed`]).
    pub fn changes(&mut self, slots: &mut Vec<u32>, values: &mut Vec<u32>) {
        self.table.changed(&mut self.touched, slots, values);
    }

    /// Restarts the bias's adaptive state, keeping the bias (see [`Table::reset_state`]).
    pub fn reset_state(&mut self) {
        let c = self.cfg;
        let z = if c.kind == Kind::Ftrl { ftrl_z(self.bias.w, 0.0, c.lr, c.beta, 0.0, 0.0) } else { 0.0 };
        self.bias = Bias { w: self.bias.w, sum_sq: 0.0, z };
    }

    /// Features (crosses included) of the last row predicted or learned.
    pub fn expanded(&self) -> usize {
        self.feats.len()
    }

    /// Fills `feats` with the row's features and its crosses.
    #[inline]
    fn expand(&mut self, row: &Row<'_>) {
        expand_into(self.table, &self.interactions, row, &mut self.feats);
        self.ahead_ready = false;
    }

    #[inline]
    fn margin(&self) -> f32 {
        let t = self.table;
        // Four running sums: one would chain every feature's add on the last.
        let mut acc = [0.0f32; 4];
        let quads = self.feats.chunks_exact(4);
        let tail: f32 = quads.remainder().iter().map(|&(s, x)| t.weight(s) * x).sum();
        for q in quads {
            for (a, &(s, x)) in acc.iter_mut().zip(q) {
                *a += t.weight(s) * x;
            }
        }
        self.bias.w + (((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail)
    }

    /// The margin of `row` under the current weights.
    pub fn predict(&mut self, row: &Row<'_>) -> f32 {
        self.expand(row);
        self.margin()
    }

    /// Predicts `row` (its margin, returned with the loss), then learns it with converted label
    /// `y` and importance `w`.
    pub fn learn(&mut self, row: &Row<'_>, y: f32, w: f32) -> (f32, f32) {
        self.expand(row);
        self.learn_expanded(y, w)
    }

    /// [`SparseKernel::learn`] for a stream of rows: `row` must be the `next` of the previous
    /// call (or the first). While `row` is learned, the slots of `next` are already on their
    /// way to the cache: the table's misses, which are most of a sparse row's cost, overlap.
    pub fn learn_ahead(&mut self, row: &Row<'_>, next: Option<&Row<'_>>, y: f32, w: f32) -> (f32, f32) {
        if self.ahead_ready {
            std::mem::swap(&mut self.feats, &mut self.ahead);
        } else {
            expand_into(self.table, &self.interactions, row, &mut self.feats);
        }
        self.ahead_ready = false;
        if let Some(n) = next {
            expand_into(self.table, &self.interactions, n, &mut self.ahead);
            for &(s, _) in &self.ahead {
                self.table.prefetch(s);
            }
            self.ahead_ready = true;
        }
        self.learn_expanded(y, w)
    }

    /// The row expanded ahead will not be learned next (it was rejected): forget it.
    pub fn skip_ahead(&mut self) {
        self.ahead_ready = false;
    }

    fn learn_expanded(&mut self, y: f32, w: f32) -> (f32, f32) {
        let p = self.margin();
        let (l, d) = self.loss.eval(p, y);
        if w > 0.0 && d != 0.0 {
            self.step(d * w, w);
        }
        self.steps += 1;
        (p, l)
    }

    /// One step with ∂loss/∂p × importance `g`, over the expanded features.
    #[inline]
    fn step(&mut self, g: f32, n: f32) {
        let (t, c) = (self.table, self.cfg);
        if !self.touched.is_empty() {
            for &(s, _) in &self.feats {
                self.touched[(s >> 6) as usize] |= 1 << (s & 63);
            }
        }
        let (l1, l2) = (c.l1 * n, c.l2 * n);
        // FTRL's λ are per coordinate, not per example (as the dense optimizer has them).
        let (ftrl_l1, ftrl_l2) = (c.l1, c.l2);
        match c.kind {
            Kind::Sgd => {
                let now = (self.steps * self.shards) as u32;
                let eta = sgd_rate(&c, (self.steps * self.shards) as f64);
                let decay = 1.0 - eta * c.l2;
                for &(s, x) in &self.feats {
                    let mut w = t.get(s, 0);
                    if c.l2 > 0.0 {
                        let missed = now.wrapping_sub(t.get(s, 1).to_bits()).min(1 << 20);
                        w *= decay.powi(missed as i32);
                        t.set(s, 1, f32::from_bits(now));
                    }
                    let v = w - eta * g * x;
                    t.set(s, 0, if c.l1 > 0.0 { soft_threshold(v, eta * l1) } else { v });
                }
                self.bias.w -= eta * g;
            }
            Kind::Adagrad => {
                for &(s, x) in &self.feats {
                    let gi = g * x;
                    let mut sum = t.get(s, 1);
                    let w = if c.l1 > 0.0 {
                        adaptive_coord::<false, true>(t.get(s, 0), &mut sum, 0.0, gi, gi * gi, c.lr, l1, l2)
                    } else {
                        adaptive_coord::<false, false>(t.get(s, 0), &mut sum, 0.0, gi, gi * gi, c.lr, l1, l2)
                    };
                    t.set(s, 0, w);
                    t.set(s, 1, sum);
                }
                self.adaptive_bias(g);
            }
            Kind::Normalized => {
                for &(s, x) in &self.feats {
                    let (mut w, mut sum, mut scale) = (t.get(s, 0), t.get(s, 1), t.get(s, 2));
                    let ax = x.abs();
                    if ax > scale {
                        if scale > 0.0 {
                            w *= scale / ax;
                        }
                        scale = ax;
                        t.set(s, 2, scale);
                    }
                    let gi = g * x;
                    w = if c.l1 > 0.0 {
                        adaptive_coord::<true, true>(w, &mut sum, scale, gi, gi * gi, c.lr, l1, l2)
                    } else {
                        adaptive_coord::<true, false>(w, &mut sum, scale, gi, gi * gi, c.lr, l1, l2)
                    };
                    t.set(s, 0, w);
                    t.set(s, 1, sum);
                }
                self.adaptive_bias(g);
            }
            Kind::Ftrl => {
                for &(s, x) in &self.feats {
                    let gi = g * x;
                    let (mut z, mut n) = (t.get(s, 1), t.get(s, 2));
                    let w = ftrl_coord(c.lr, c.beta, &mut z, &mut n, t.get(s, 0), gi, gi * gi, ftrl_l1, ftrl_l2);
                    t.set(s, 0, w);
                    t.set(s, 1, z);
                    t.set(s, 2, n);
                }
                let b = &mut self.bias;
                b.w = ftrl_coord(c.lr, c.beta, &mut b.z, &mut b.sum_sq, b.w, g, g * g, 0.0, 0.0);
            }
        }
    }

    fn adaptive_bias(&mut self, g: f32) {
        let b = &mut self.bias;
        b.w = adaptive_coord::<false, false>(b.w, &mut b.sum_sq, 0.0, g, g * g, self.cfg.lr, 0.0, 0.0);
    }
}

/// Fills `out` with `row`'s (slot, value) pairs and those of its crosses.
#[inline]
fn expand_into(t: &Table, interactions: &[Vec<u8>], row: &Row<'_>, out: &mut Vec<(u32, f32)>) {
    out.clear();
    match row.values {
        Some(v) => out.extend(row.ids.iter().zip(v).map(|(&id, &x)| (t.slot(id), x))),
        None => out.extend(row.ids.iter().map(|&id| (t.slot(id), 1.0))),
    }
    for inter in interactions {
        cross_features(row, inter, t, out);
    }
}

/// SGD's rate after `t` examples (the same schedules as the dense optimizer).
fn sgd_rate(c: &OptimConfig, t: f64) -> f32 {
    match c.schedule {
        Schedule::Constant => c.lr,
        Schedule::InvScaling => (c.lr as f64 / (1.0 + t).powf(c.power as f64)) as f32,
        Schedule::Optimal => (1.0 / (c.l2 as f64 * (1.0 / (c.lr as f64 * c.l2 as f64) + t))) as f32,
    }
}

/// Appends the (slot, value) of the crosses of `row`'s features in the namespaces `inter`
/// names.
#[inline]
fn cross_features(row: &Row<'_>, inter: &[u8], t: &Table, out: &mut Vec<(u32, f32)>) {
    for_each_cross(row, inter, |id, x, _| out.push((t.slot(id), x)));
}

/// Calls `f(id, value, members)` for each cross of `row`'s features in the namespaces `inter`
/// names (2 or 3 tags): one feature from each (`members`: their positions in the row), a pair
/// within one namespace taken once (i < j). What the kernel learns, and what `inspect` names.
#[inline]
pub fn for_each_cross(row: &Row<'_>, inter: &[u8], mut f: impl FnMut(u32, f32, &[usize])) {
    let pick = |tag: u8| row.ns.iter().enumerate().filter(move |&(_, &n)| n == tag).map(|(i, _)| i);
    match *inter {
        [a, b] => {
            for i in pick(a) {
                for j in pick(b).filter(|&j| a != b || j > i) {
                    f(cross(row.ids[i], row.ids[j]), row.value(i) * row.value(j), &[i, j]);
                }
            }
        }
        [a, b, c] => {
            for i in pick(a) {
                for j in pick(b).filter(|&j| a != b || j > i) {
                    let ij = cross(row.ids[i], row.ids[j]);
                    for k in pick(c).filter(|&k| (b != c || k > j) && (a != c || k > i)) {
                        f(cross(ij, row.ids[k]), row.value(i) * row.value(j) * row.value(k), &[i, j, k]);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(ids: &'a [u32], values: &'a [f32], ns: &'a [u8]) -> Row<'a> {
        Row { ids, values: Some(values), ns }
    }

    #[test]
    fn replicas_merge_whole_where_alone_and_weighted_where_together() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        // AdaGrad, [w, Σg²]: slot 1 changed by replica A alone, slot 2 by both, slot 3 by B.
        let table = Table::new(2, Kind::Adagrad);
        let cfg = OptimConfig::new(Kind::Adagrad);
        table.set(2, 0, 1.0);
        table.set(2, 1, 4.0);
        let mut base = table.raw();
        let a = (vec![1u32, 2], bits(&[0.5, 1.0, 2.0, 5.0]));
        let b = (vec![2u32, 3], bits(&[4.0, 7.0, -1.0, 2.0]));
        table.merge(&mut base, &[(&a.0, &a.1), (&b.0, &b.1)], &cfg);
        let slot = |s: u32| (table.get(s, 0), table.get(s, 1));
        assert_eq!(slot(1), (0.5, 1.0));
        assert_eq!(slot(3), (-1.0, 2.0));
        // Slot 2: A added Σg² 1 and moved w by +1, B added 3 and moved it by +3.
        assert_eq!(slot(2), (1.0 + (1.0 * 1.0 + 3.0 * 3.0) / 4.0, 4.0 + 1.0 + 3.0));
        assert_eq!(slot(0), (0.0, 0.0));
        assert_eq!(base, table.raw());
        // FTRL, [w, z, n, ·]: n adds up and z is anchored to the merged weight.
        let cfg = OptimConfig { l1: 0.01, ..OptimConfig::new(Kind::Ftrl) };
        let table = Table::new(2, Kind::Ftrl);
        let mut base = table.raw();
        let a = (vec![1u32], bits(&[0.3, -2.0, 1.0, 0.0]));
        let b = (vec![1u32], bits(&[0.1, -1.0, 3.0, 0.0]));
        table.merge(&mut base, &[(&a.0, &a.1), (&b.0, &b.1)], &cfg);
        let (w, z, n) = (table.get(1, 0), table.get(1, 1), table.get(1, 2));
        assert_eq!(n, 4.0);
        assert!((w - (1.0 * 0.3 + 3.0 * 0.1) / 4.0).abs() < 1e-6, "{w}");
        let again = crate::optim::ftrl_weight(z, n, cfg.lr, cfg.beta, cfg.l1, cfg.l2);
        assert!((again - w).abs() < 1e-6, "{again} vs {w}");
    }

    #[test]
    fn a_reset_restarts_the_adaptive_state_and_keeps_the_weights() {
        for kind in [Kind::Sgd, Kind::Adagrad, Kind::Normalized, Kind::Ftrl] {
            let cfg = OptimConfig { l1: 0.001, l2: 0.01, ..OptimConfig::new(kind) };
            let table = Table::new(6, kind);
            let mut k = SparseKernel::new(&table, Loss::Logistic, cfg, &[], 1);
            for i in 0..50u32 {
                let y = if i % 3 == 0 { 1.0 } else { -1.0 };
                k.learn(&row(&[i % 7, 10 + i % 5, 20], &[1.0, 0.5 + (i % 4) as f32, 2.0], b"aab"), y, 1.0);
            }
            let probe = [0u32, 3, 11, 20];
            let margin = |k: &mut SparseKernel<'_>| k.predict(&row(&probe, &[1.0, 1.0, 3.0, 2.0], b"aaab"));
            let before = margin(&mut k);
            table.reset_state(&cfg);
            k.reset_state();
            assert_eq!(margin(&mut k), before, "{kind:?}");
            for s in 0..table.len() as u32 {
                let w = table.weight(s);
                match kind {
                    Kind::Sgd => {}
                    Kind::Adagrad => assert_eq!(table.get(s, 1), 0.0),
                    Kind::Normalized => assert_eq!((table.get(s, 1), table.get(s, 2)), (0.0, 0.0)),
                    Kind::Ftrl => {
                        // The anchored z gives back the weight the slot has.
                        let (mut z, mut n) = (table.get(s, 1), table.get(s, 2));
                        assert_eq!(n, 0.0);
                        let again = ftrl_coord(cfg.lr, cfg.beta, &mut z, &mut n, w, 0.0, 0.0, cfg.l1, cfg.l2);
                        assert!((again - w).abs() <= 1e-6 * w.abs().max(1e-3), "slot {s}: {again} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_row_matches_the_dense_optimizer() {
        // Features in distinct slots: the sparse step must equal the dense optimizer's online
        // step on the same coordinates (the dense optimizer is the reference).
        for kind in [Kind::Sgd, Kind::Adagrad, Kind::Normalized, Kind::Ftrl] {
            for (l1, l2) in [(0.0, 0.0), (0.01, 0.1)] {
                let cfg = OptimConfig { l1, l2, schedule: Schedule::Constant, ..OptimConfig::new(kind) };
                let table = Table::new(4, kind);
                let mut k = SparseKernel::new(&table, Loss::Squared, cfg, &[], 1);
                let mut dense = Optimizer::new(cfg, 3);
                let mut w = vec![0.0f32; 4];
                let (ids, xs) = ([1u32, 5, 9], [0.5f32, -2.0, 1.5]);
                for (y, scale) in [(1.0f32, 1.0f32), (-2.0, 2.0), (0.5, 1.0)] {
                    let x: Vec<f32> = xs.iter().map(|v| v * scale).collect();
                    // Predict, then (normalized) rescale the weights of grown features in
                    // the update, as Vowpal Wabbit does.
                    let p = w[..3].iter().zip(&x).map(|(a, b)| a * b).sum::<f32>() + w[3];
                    if kind == Kind::Normalized {
                        let m: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                        dense.observe_scale(&m, &mut w);
                    }
                    let (pk, _) = k.learn(&row(&ids, &x, b"   "), y, 1.0);
                    assert!((p - pk).abs() < 1e-5, "{kind:?} {p} {pk}");
                    let d = p - y;
                    let g: Vec<f32> = x.iter().map(|v| d * v).chain([d]).collect();
                    let h: Vec<f32> = g.iter().map(|v| v * v).collect();
                    dense.step(&mut w, &g, &h, 1.0);
                }
                for (j, &id) in ids.iter().enumerate() {
                    let got = table.weight(table.slot(id));
                    assert!((got - w[j]).abs() < 1e-5 * w[j].abs().max(1.0), "{kind:?} l1 {l1} l2 {l2} feature {j}: {got} vs {}", w[j]);
                }
                assert!((k.bias() - w[3]).abs() < 1e-5, "{kind:?} bias {} vs {}", k.bias(), w[3]);
            }
        }
    }

    #[test]
    fn learning_ahead_is_learning_row_by_row() {
        let cfg = OptimConfig::new(Kind::Adagrad);
        let (a, b) = (Table::new(6, Kind::Adagrad), Table::new(6, Kind::Adagrad));
        let inter = [b"ab".to_vec()];
        let (mut ka, mut kb) =
            (SparseKernel::new(&a, Loss::Logistic, cfg, &inter, 1), SparseKernel::new(&b, Loss::Logistic, cfg, &inter, 1));
        let rows: Vec<(Vec<u32>, Vec<f32>, Vec<u8>)> =
            (0..50u32).map(|i| (vec![i % 7, 7 + i % 5, i * 31 % 64], vec![1.0, 0.5, -1.0], b"aab".to_vec())).collect();
        let row = |i: usize| row(&rows[i].0, &rows[i].1, &rows[i].2);
        for i in 0..rows.len() {
            let y = if i % 3 == 0 { 1.0 } else { -1.0 };
            if i % 11 == 5 {
                // A rejected row: not learned, and the next must not reuse its expansion.
                kb.skip_ahead();
                continue;
            }
            let next = (i + 1 < rows.len()).then(|| row(i + 1));
            assert_eq!(ka.learn(&row(i), y, 1.0), kb.learn_ahead(&row(i), next.as_ref(), y, 1.0), "row {i}");
        }
        assert_eq!(a.weights(), b.weights());
    }

    #[test]
    fn crosses_pair_namespaces_once() {
        let table = Table::new(20, Kind::Adagrad);
        let (ids, xs, ns) = ([1u32, 2, 3, 4], [1.0f32, 2.0, 3.0, 4.0], *b"aabb");
        let r = row(&ids, &xs, &ns);
        let mut out = Vec::new();
        cross_features(&r, b"ab", &table, &mut out);
        assert_eq!(out.len(), 4);
        assert!(out.contains(&(table.slot(cross(2, 4)), 8.0)));
        out.clear();
        cross_features(&r, b"aa", &table, &mut out);
        assert_eq!(out, [(table.slot(cross(1, 2)), 2.0)]);
        out.clear();
        cross_features(&r, b"abb", &table, &mut out);
        assert_eq!(out.len(), 2, "a × the one pair within b");
        out.clear();
        cross_features(&r, b"zb", &table, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn lazy_l2_decays_untouched_steps() {
        // SGD with L2 and a constant rate: a weight untouched for k rows is multiplied by
        // (1 − ηλ)^k when it is next touched, as k eager steps would have done.
        let cfg = OptimConfig { l2: 0.1, schedule: Schedule::Constant, ..OptimConfig::new(Kind::Sgd) };
        let table = Table::new(4, Kind::Sgd);
        let mut k = SparseKernel::new(&table, Loss::Squared, cfg, &[], 1);
        k.learn(&row(&[3], &[1.0], b" "), 1.0, 1.0);
        let w0 = table.weight(3);
        for _ in 0..9 {
            k.learn(&row(&[5], &[1.0], b" "), 0.0, 1.0);
        }
        // Touch it with a zero gradient: only the decay of the 10 steps since its last touch.
        k.learn(&row(&[3], &[0.0], b" "), 0.0, 1.0);
        let want = w0 * (1.0 - 0.1f32 * 0.1).powi(10);
        assert!((table.weight(3) - want).abs() < 1e-6, "{} vs {want}", table.weight(3));
    }
}
