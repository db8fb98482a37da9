//! The `summary` line's counters, kept per thread so that counting costs a
//! plain store to a cache line no other thread writes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One thread's counters. Only that thread writes them; `total` reads them.
#[derive(Default)]
#[repr(align(128))]
struct ThreadCounts {
    accepted: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

static ALL: Mutex<Vec<Arc<ThreadCounts>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<ThreadCounts> = {
        let mine = Arc::new(ThreadCounts::default());
        ALL.lock().unwrap_or_else(|p| p.into_inner()).push(mine.clone());
        mine
    };
}

/// Adds `n` to one of this thread's counters. A load and a store, not a
/// read-modify-write: this thread is the counter's only writer.
fn add(field: fn(&ThreadCounts) -> &AtomicU64, n: u64) {
    MINE.with(|c| {
        let counter = field(c);
        counter.store(counter.load(Relaxed) + n, Relaxed);
    });
}

pub fn accepted() {
    add(|c| &c.accepted, 1);
}

/// One echo operation (a datagram, or a read-then-write on a stream) of `bytes` bytes.
pub fn echoed(bytes: usize) {
    add(|c| &c.messages, 1);
    add(|c| &c.bytes, bytes as u64);
}

pub fn error() {
    add(|c| &c.errors, 1);
}

/// The `summary` line, in `server`'s format.
pub fn summary_line() -> String {
    let all = ALL.lock().unwrap_or_else(|p| p.into_inner());
    let sum = |field: fn(&ThreadCounts) -> &AtomicU64| all.iter().map(|c| field(c).load(Relaxed)).sum::<u64>();
    format!(
        "summary backend=tokio accepted={} messages={} bytes={} errors={}",
        sum(|c| &c.accepted),
        sum(|c| &c.messages),
        sum(|c| &c.bytes),
        sum(|c| &c.errors),
    )
}
