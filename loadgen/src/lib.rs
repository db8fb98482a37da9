//! loadgen: the load generator's library part, shared by the `loadgen` and
//! `compare` binaries and by their tests and benches.
//!
//! - [`cli`]: the command line, durations and rates.
//! - [`pattern`]: the per-connection, per-message payload and its checkers.
//! - [`worker`]: one epoll event loop per thread over its connections.
//! - [`stats`], [`report`]: histograms, the final report, units and `.hgrm`.
//! - [`progress`]: the live display; [`out`]: where a result is written.
//! - [`run`]: a whole run; [`merge`]: combining result files.

pub mod cli;
pub mod compare;
pub mod merge;
pub mod out;
pub mod pattern;
pub mod progress;
pub mod report;
pub mod result;
pub mod run;
pub mod stats;
pub mod sys;
pub mod worker;
