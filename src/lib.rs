//! sockbench: one echo server with interchangeable I/O backends, and the
//! pieces that the `loadgen` client shares with it.
//!
//! - [`sys`]: thin wrappers over the raw syscalls (the only place with most of the `unsafe`).
//! - [`net`]: transports, address parsing and socket setup, shared with `loadgen`.
//! - [`cpu`]: CPU-list parsing and thread pinning.
//! - [`duration`]: the one duration grammar of every binary's flags.
//! - [`machine`]: the machine probe, the source commit (`-dirty` included) and UTC time.
//! - [`procfs`]: CPU time, memory and descriptors of a process tree, from `/proc`.
//! - [`serve`]: what every backend serves with: configuration, counters, the stop request.
//! - [`server`]: the server's lifecycle: bind, run a backend, stop, print the summary.
//! - [`ring`]: the io_uring layer the uring backend and loadgen both build on.
//! - [`backend`]: the four backends behind one [`backend::Backend`] trait.

pub use libc;

pub mod sys;

pub mod backend;
pub mod cpu;
pub mod duration;
pub mod machine;
pub mod net;
pub mod procfs;
pub mod ring;
pub mod serve;
pub mod server;
