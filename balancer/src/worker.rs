//! Data-plane worker threads as the balancer sees them. Each worker owns
//! its own connections to every endpoint (Envoy's per-worker connection
//! pools), so a request, the client connection it came on and the upstream
//! connection it goes out on are driven by one thread: no task is woken
//! across threads on the way. A worker thread calls [`enter`] once; every
//! other thread (health checks, tests) shares slot 0.

use std::{
    cell::Cell,
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Pool slots of endpoints created from now on: the workers, plus slot 0.
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// Makes room for `workers` worker threads in endpoints created after this
/// call (a process running several gateways keeps the largest count).
pub fn reserve(workers: usize) {
    SLOTS.fetch_max(workers.saturating_add(1), Relaxed);
}

/// Marks this thread as worker `index` (0-based) for the rest of its life.
pub fn enter(index: usize) {
    SLOT.with(|s| s.set(index.saturating_add(1)));
}

/// This thread's pool slot: 1 + its worker index, or 0.
pub(crate) fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// Pool slots an endpoint created now has.
pub(crate) fn slots() -> usize {
    SLOTS.load(Relaxed)
}
