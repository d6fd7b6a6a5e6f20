//! The data-plane worker threads (Envoy's workers, HAProxy's threads): each
//! runs a single-threaded tokio runtime. An accepted client connection is
//! handed to the worker with the fewest open connections and stays there
//! for its life, with every task it starts and the upstream connections its
//! requests use (the balancer keeps a connection pool per worker,
//! [`balancer::worker`]). A request therefore never wakes another thread:
//! on a multi-threaded work-stealing runtime, one JSON call at a time took
//! 13 system calls, 4 of them wake-ups between the threads (`futex`,
//! `eventfd`), against 7 here. The accept loops, the admin API, health
//! checks and registry work stay on the main runtime.

use std::{
    future::Future,
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    thread,
    time::Duration,
};

use tokio::{runtime, sync::oneshot};
use tracing::warn;

/// How long a stopping worker waits for its blocking tasks.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The longest a worker's timer driver goes without a timer due: tokio wakes
/// the driver (an `eventfd` write, then one more `epoll_wait`) whenever a
/// timer is set to fire before every armed one, which without another timer
/// is every request's (the header-read and request timeouts, seconds away).
/// With this one always due within half a second, they set nothing off:
/// one JSON call at a time takes 6 system calls instead of 8.
const TIMER_HEARTBEAT: Duration = Duration::from_millis(500);

/// The running workers; dropping this stops them (their tasks are dropped).
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: runtime::Handle,
    /// Connections this worker owns now.
    open: Arc<AtomicUsize>,
    /// Dropped to stop the worker.
    _stop: oneshot::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Counts a connection on its worker until dropped.
struct Owned(Arc<AtomicUsize>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Workers {
    /// Starts `count` worker threads (0: one per available core).
    pub(crate) fn start(count: usize) -> io::Result<Self> {
        let count = match count {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        balancer::worker::reserve(count);
        let workers = (0..count)
            .map(Worker::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { workers })
    }

    /// Worker threads running.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs a connection's task on the worker with the fewest connections.
    /// `task` is built on that worker (so the sockets and timers it makes
    /// register there).
    pub(crate) fn spawn_conn<F, Fut>(&self, task: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self.workers.iter().min_by_key(|w| w.open.load(Relaxed)) else {
            return;
        };
        worker.open.fetch_add(1, Relaxed);
        let owned = Owned(worker.open.clone());
        worker.handle.spawn(async move {
            let _owned = owned;
            task().await;
        });
    }
}

impl Worker {
    fn start(index: usize) -> io::Result<Self> {
        let rt = runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("gateway-blocking")
            .build()?;
        let handle = rt.handle().clone();
        handle.spawn(async {
            let mut beat = tokio::time::interval(TIMER_HEARTBEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("gateway-worker-{index}"))
            .spawn(move || {
                balancer::worker::enter(index);
                // A descriptor pool build would stall every connection here:
                // what needs one has it built on a blocking thread.
                descriptors::refuse_pool_builds_on_this_thread();
                // Returns when the sender is dropped.
                let _ = rt.block_on(stopped);
                rt.shutdown_timeout(STOP_GRACE);
            })?;
        Ok(Self {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
            thread: Some(thread),
        })
    }
}

impl Workers {
    /// Stops every worker and waits for its thread (off the async threads).
    pub(crate) async fn stop(mut self) {
        let threads: Vec<_> = self
            .workers
            .drain(..)
            .filter_map(|mut w| w.thread.take())
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    warn!("A worker thread panicked");
                }
            }
        });
        let _ = joined.await;
    }
}
