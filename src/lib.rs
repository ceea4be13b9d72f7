//! streamsgd: a performance-first streaming-learning kernel.
//!
//! Sources (memory-mapped `.ssgd` replay, text, the generator) feed columnar micro-batches to
//! SIMD SGD kernels. The modules are named for the pipeline stage they implement:
//! [`dataset`] (the native format), [`source`] (text parsers, generator), [`convert`].
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod batch;
pub mod cluster;
pub mod convert;
pub mod dataset;
pub mod dedup;
pub mod feed;
pub mod kernel;
pub mod latency;
pub mod learner;
pub mod loss;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod online;
pub mod optim;
pub mod pipeline;
pub mod predictor;
pub mod ring;
#[cfg(feature = "serve")]
pub mod serve;
pub mod shard;
pub mod source;
pub mod sparse;
pub mod train_file;
pub mod transform;
pub mod turns;
pub mod window;
