//! Metrics and logging.

pub mod logging;
pub mod metrics;

pub use metrics::{CacheGauges, Metrics};
