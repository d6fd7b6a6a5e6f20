//! A snapshot's prost-reflect [`DescriptorPool`], built from the registered
//! sets' bytes when something asks for it, and dropped once idle.
//!
//! The pool is most of a registry's memory (about 12 KiB per method: every
//! file decoded twice plus its name tables), and the request path does not
//! need it: the codec's plans, the method index and the REST routes are
//! compiled from it when a set is registered. What still asks for it is
//! rare: server reflection, message types with proto2 groups or
//! extensions, a request with an `Any` that the prost-reflect reader has to
//! read. The registry's own validation of the next upload reuses it while
//! it is cached.
//!
//! The other requests the plans leave to the prost-reflect reader (naming
//! the error in a refused one, a oneof member from the query, a `body`
//! field that is not a message) need only the files of one method:
//! [`LazyPool::partial`] builds a pool of those (a file and its imports,
//! under a millisecond), kept like the whole pool until idle, for at most
//! [`MAX_PARTIAL_POOLS`] files: a stream of bad requests neither builds
//! nor keeps the whole pool, and costs one such build per file.

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorProto;

use crate::error::DescriptorError;

/// The sets of one snapshot, in the order their files go into the pool,
/// and the pool when built.
#[derive(Debug)]
pub(crate) struct LazyPool {
    bundled: DescriptorPool,
    /// `(set name, FileDescriptorSet bytes)`, in pool order.
    sets: Vec<(String, Bytes)>,
    /// Every registered file but the bundled ones, by name: its bytes (a
    /// slice of its set's) and its imports. The first set shipping it wins,
    /// as in the pool.
    files: HashMap<String, RegisteredFile>,
    cached: Mutex<Option<Cached>>,
    /// Pools of one file and its imports, by file ([`LazyPool::partial`]).
    partials: Mutex<Vec<(Arc<str>, Cached)>>,
}

thread_local! {
    /// Inside [`without_pool_builds`] on this thread.
    static NO_BUILDS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with whole-pool builds refused on this thread: a conversion
/// that needs the prost-reflect pool while it is not built fails with
/// [`DescriptorError::PoolNotBuilt`] instead of building it here (CPU
/// proportional to every registered set). An event loop then builds it on
/// a blocking thread ([`crate::MethodInfo::build_pool`]) and runs `f` again.
pub fn without_pool_builds<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_BUILDS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(NO_BUILDS.with(|c| c.replace(true)));
    f()
}

/// Refuses whole-pool builds on this thread from now on, as
/// [`without_pool_builds`] does for one call: for the gateway's data-plane
/// worker threads, where a build (CPU proportional to every registered set)
/// would stall every connection the thread owns. Whatever runs there and
/// needs the pool gets [`DescriptorError::PoolNotBuilt`] and has it built
/// on a blocking thread.
pub fn refuse_pool_builds_on_this_thread() {
    NO_BUILDS.with(|c| c.set(true));
}

/// Most pools of one file kept at once; past that, the whole pool serves.
pub(crate) const MAX_PARTIAL_POOLS: usize = 8;

#[derive(Debug)]
struct RegisteredFile {
    bytes: Bytes,
    dependencies: Vec<String>,
}

/// `google.protobuf.FileDescriptorSet` with each file kept as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawFileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub(crate) file: Vec<Bytes>,
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
        let mut files = HashMap::new();
        for (_, bytes) in &sets {
            // Validated when the set was put: what does not decode is skipped.
            let Ok(raw) = RawFileSet::decode(bytes.clone()) else {
                continue;
            };
            for file in raw.file {
                let Ok(proto) = FileDescriptorProto::decode(file.clone()) else {
                    continue;
                };
                if bundled.get_file_by_name(proto.name()).is_some() {
                    continue;
                }
                files
                    .entry(proto.name().to_owned())
                    .or_insert(RegisteredFile {
                        bytes: file,
                        dependencies: proto.dependency,
                    });
            }
        }
        Self {
            bundled,
            sets,
            files,
            partials: Mutex::new(Vec::new()),
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
        if NO_BUILDS.with(Cell::get) {
            return Err(DescriptorError::PoolNotBuilt);
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

    /// The whole pool if cached, else a pool of the bundled protos plus
    /// `file` and the files it imports (transitively): the types of one
    /// method, for the requests the plans leave to prost-reflect. Kept until
    /// idle, for at most [`MAX_PARTIAL_POOLS`] files (then the whole pool).
    pub(crate) fn partial(&self, file: &Arc<str>) -> Result<Arc<DescriptorPool>, DescriptorError> {
        if let Some(cached) = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            cached.last_used = Instant::now();
            return Ok(cached.pool.clone());
        }
        let mut partials = self.partials.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cached)) = partials.iter_mut().find(|(f, _)| f == file) {
            cached.last_used = Instant::now();
            return Ok(cached.pool.clone());
        }
        if partials.len() >= MAX_PARTIAL_POOLS {
            drop(partials);
            return self.get();
        }
        let pool = Arc::new(self.build_partial(file)?);
        partials.push((
            file.clone(),
            Cached {
                pool: pool.clone(),
                last_used: Instant::now(),
            },
        ));
        Ok(pool)
    }

    /// The bundled protos plus `file` and its imports.
    fn build_partial(&self, file: &str) -> Result<DescriptorPool, DescriptorError> {
        // Imports before importers (a walk with an explicit stack: import
        // chains are as long as the registry allows).
        let mut ordered = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<(&str, bool)> = vec![(file, false)];
        while let Some((name, expanded)) = stack.pop() {
            let Some(entry) = self.files.get(name) else {
                continue; // bundled
            };
            if expanded {
                ordered.push(entry.bytes.clone());
                continue;
            }
            if !seen.insert(name) {
                continue;
            }
            stack.push((name, true));
            for dependency in &entry.dependencies {
                if !seen.contains(dependency.as_str()) {
                    stack.push((dependency, false));
                }
            }
        }
        let mut pool = self.bundled.clone();
        add_set(
            &mut pool,
            file,
            &Bytes::from(RawFileSet { file: ordered }.encode_to_vec()),
        )?;
        Ok(pool)
    }

    /// Drops the cached pool if unused for `idle` (callers holding it keep
    /// it until they finish), and the pools of one file likewise. True when
    /// the whole pool was dropped.
    pub(crate) fn release_if_idle(&self, idle: Duration) -> bool {
        self.partials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, c)| c.last_used.elapsed() < idle);
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
