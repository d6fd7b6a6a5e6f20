//! A scripted server stream: `count` messages, `interval` apart, optionally
//! failing with a status after `fail_after` of them. Shared by Echo's
//! `ServerStream` and LibraryService's `Watch`.

use std::time::Duration;

use futures_util::{Stream, stream};
use tokio::time::sleep;
use tonic::Status;

/// Where a scripted stream is; `make` builds message number `seq`.
pub(crate) struct StreamPlan<F> {
    pub(crate) count: u64,
    pub(crate) interval: Duration,
    /// Fail after this many messages (0 = never).
    pub(crate) fail_after: u64,
    pub(crate) failure: Option<Status>,
    pub(crate) make: F,
    pub(crate) seq: u64,
}

impl<T, F: FnMut(u64) -> T> StreamPlan<F> {
    /// The stream; dropping it (client gone) stops it, with no task to clean up.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<T, Status>> {
        stream::unfold(self, Self::next)
    }

    async fn next(mut self) -> Option<(Result<T, Status>, Self)> {
        if self.fail_after > 0 && self.seq == self.fail_after {
            // `take` ends the stream after the status.
            let status = self.failure.take()?;
            return Some((Err(status), self));
        }
        if self.seq >= self.count {
            return None;
        }
        if self.seq > 0 && !self.interval.is_zero() {
            sleep(self.interval).await;
        }
        let item = (self.make)(self.seq);
        self.seq += 1;
        Some((Ok(item), self))
    }
}
