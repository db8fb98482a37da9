//! loadgen: the load generator's library part, shared by the `loadgen`
//! binary and its tests and benches. `compare` uses only [`result`].
//!
//! - [`cli`]: the command line, durations and rates.
//! - [`pattern`]: the per-connection, per-message payload and its checkers.
//! - [`worker`]: one epoll event loop per thread over its connections.
//! - [`stats`], [`report`]: histograms, the final report, units and `.hgrm`.
//! - [`result`]: the result file format, its one reader and writer.
//! - [`progress`]: the live display; [`out`]: where a result is written.
//! - [`run`]: a whole run, in stages: [`checks`] before it starts, the
//!   [`phase_clock`] while it runs, [`assemble`] of the result after it.
//! - [`merge`]: combining result files.
//! - [`conversation`]: `--conn-msgs`, a connection per conversation.
//! - [`source`]: source addresses (`--local-addrs`) and their port budget.
//! - [`kernel_counters`]: the kernel's drops and retransmissions over the measured phase.

pub mod assemble;
pub mod checks;
pub mod cli;
pub mod conversation;
pub mod kernel_counters;
pub mod merge;
pub mod out;
pub mod pattern;
pub mod phase_clock;
pub mod progress;
pub mod report;
pub mod result;
pub mod run;
pub mod source;
pub mod stats;
pub mod sys;
pub mod worker;
