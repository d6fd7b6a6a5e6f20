//! A snapshot's prost-reflect [`DescriptorPool`], built from the registered
//! sets' bytes when something asks for it, and dropped once idle.
//!
//! The pool is most of a registry's memory (about 12 KiB per method: every
//! file decoded twice plus its name tables), and the request path does not
//! need it: the codec's plans, the method index and the REST routes are
//! compiled from it when a set is registered. What still asks for it is
//! rare: server reflection, naming the error in a refused JSON document or
//! parameter, proto2 groups and extensions, a oneof member or a non-message
//! field set from the query or the body. The registry's own validation of
//! the next upload reuses it while it is cached.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use prost_reflect::DescriptorPool;

use crate::error::DescriptorError;

/// The sets of one snapshot, in the order their files go into the pool,
/// and the pool when built.
#[derive(Debug)]
pub(crate) struct LazyPool {
    bundled: DescriptorPool,
    /// `(set name, FileDescriptorSet bytes)`, in pool order.
    sets: Vec<(String, Bytes)>,
    cached: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    pool: Arc<DescriptorPool>,
    last_used: Instant,
}

impl LazyPool {
    /// The sets, to be added to `bundled` in this order; `built` is their
    /// pool if at hand (kept until idle).
    pub(crate) fn new(
        bundled: DescriptorPool,
        sets: Vec<(String, Bytes)>,
        built: Option<DescriptorPool>,
    ) -> Self {
        Self {
            bundled,
            sets,
            cached: Mutex::new(built.map(|pool| Cached {
                pool: Arc::new(pool),
                last_used: Instant::now(),
            })),
        }
    }

    /// The pool, built now if it is not cached (the sets' bytes decoded
    /// again: CPU proportional to all of them, under a lock, so concurrent
    /// callers wait for one build).
    pub(crate) fn get(&self) -> Result<Arc<DescriptorPool>, DescriptorError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cached.as_mut() {
            cached.last_used = Instant::now();
            return Ok(cached.pool.clone());
        }
        let mut pool = self.bundled.clone();
        for (name, bytes) in &self.sets {
            add_set(&mut pool, name, bytes)?;
        }
        let pool = Arc::new(pool);
        *cached = Some(Cached {
            pool: pool.clone(),
            last_used: Instant::now(),
        });
        Ok(pool)
    }

    /// Drops the cached pool if unused for `idle` (callers holding it keep
    /// it until they finish). True when dropped.
    pub(crate) fn release_if_idle(&self, idle: Duration) -> bool {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if cached
            .as_ref()
            .is_some_and(|c| c.last_used.elapsed() >= idle)
        {
            *cached = None;
            return true;
        }
        false
    }

    /// The bundled protos' pool.
    pub(crate) fn bundled(&self) -> &DescriptorPool {
        &self.bundled
    }

    /// Whether the pool is built and cached.
    pub(crate) fn is_cached(&self) -> bool {
        self.cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// Adds the files of set `name` to `pool`.
pub(crate) fn add_set(
    pool: &mut DescriptorPool,
    name: &str,
    bytes: &Bytes,
) -> Result<(), DescriptorError> {
    // decode_file_descriptor_set (unlike add_file_descriptor_set) keeps extension
    // options such as google.api.http, and skips files already in the pool.
    pool.decode_file_descriptor_set(bytes.clone())
        .map_err(|source| DescriptorError::InvalidDescriptor {
            name: name.to_owned(),
            source,
        })
}
