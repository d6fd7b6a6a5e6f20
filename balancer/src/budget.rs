//! A process-wide budget of buffered request bytes: JSON bodies being
//! collected, retry replay copies. Every buffer that a client can make the
//! gateway keep takes its bytes from here first; past the limit the
//! request is refused (or, for replay copies, simply not kept), never an
//! unbounded allocation. Lock-free: one atomic add per reservation.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// Default limit of buffered request bytes for the whole process.
pub const DEFAULT_MAX_BUFFERED_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// The shared budget; clones share it.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

/// Bytes taken from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    bytes: usize,
}

// === impl MemoryBudget ===

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, grown as bytes arrive.
    pub fn reserve_empty(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, n: usize) -> bool {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(n)
                    .filter(|&total| total <= self.inner.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.inner.used.fetch_sub(n, Ordering::AcqRel);
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BUFFERED_REQUEST_BYTES)
    }
}

// === impl Reservation ===

impl Reservation {
    /// Takes `n` more bytes; false (and nothing taken) when the budget
    /// would go over its limit.
    pub fn grow(&mut self, n: usize) -> bool {
        if self.budget.take(n) {
            self.bytes += n;
            true
        } else {
            false
        }
    }

    /// Holds exactly `n` bytes: grows (false, unchanged, when the budget
    /// has no room) or gives the difference back.
    pub fn set(&mut self, n: usize) -> bool {
        if n >= self.bytes {
            self.grow(n - self.bytes)
        } else {
            self.budget.give(self.bytes - n);
            self.bytes = n;
            true
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives everything back now.
    pub fn release(&mut self) {
        self.budget.give(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_limit_and_give_back_on_drop() {
        let b = MemoryBudget::new(100);
        let mut r1 = b.reserve_empty();
        assert!(r1.grow(60));
        let mut r2 = b.reserve_empty();
        assert!(!r2.grow(41), "would exceed the limit");
        assert!(r2.grow(40));
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 40);
        assert!(r2.set(10) && b.used() == 10);
        assert!(!r2.set(200) && r2.bytes() == 10);
        r2.release();
        assert_eq!((b.used(), r2.bytes()), (0, 0));
        drop(r2);
        assert_eq!(b.used(), 0);
    }
}
