//! loadgen: the load generator's library part, shared by the `loadgen` and
//! `compare` binaries and by their tests and benches.

pub mod result;
pub mod compare;
