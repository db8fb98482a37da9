//! The io_uring layer that the server's `uring` backend and loadgen's ring
//! both build on: a ring with the best setup flags the kernel has, one
//! provided buffer ring, submission batching, in-flight accounting and the
//! survival of rare enter errors.
//!
//! - [`Driver`]: a ring and its buffer ring; what it submits, it counts.
//! - [`setup`]: ring creation, kernel probing and the start-up self-tests.
//! - [`buf_ring`]: the provided buffer ring that receives land in.
//! - [`token`]: the `user_data` layout, generic over each user's own
//!   operation enum ([`token::OpKind`]), so that neither user knows the
//!   other's operations.
//! - `registered`: entering the ring by its registered index.
//!
//! The layer imports nothing from the server (`server`, `backend`): it takes
//! plain sizes and flags, so no import circle runs through it.
//!
//! Rare ring errors do not end a loop ([`EnterError`]): a submission the
//! kernel has no memory for is retried after a back-off, and dropped
//! completions (`EBADR`) are reported ([`Driver::take_dropped`]) so that the
//! owner can start over; both are counted ([`Driver::take_ring_errors`]).

pub mod buf_ring;
mod driver;
mod registered;
pub mod setup;
pub mod token;

pub use driver::{backoff_delay, Completion, Driver, EnterError, RingPart, SizeRefused, Wait, INJECT_ENTER_ERROR_ENV};
pub use setup::FORCE_SETUP_ENV;

/// The kernel's largest fixed file table (`IORING_MAX_FIXED_FILES`). A
/// ring's table is also bounded by `RLIMIT_NOFILE` when it is registered.
pub const MAX_FIXED_FILES: usize = 1 << 20;

/// The buffer group id of each ring's (only) provided buffer ring.
pub const BGID: u16 = 0;
