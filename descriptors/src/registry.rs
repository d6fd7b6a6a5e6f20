//! The registry of named descriptor sets. Every change builds a complete new
//! [`Snapshot`] off to the side (pool, method index, route table) and swaps it
//! in atomically only if everything validated; readers never lock.
//!
//! Every snapshot's pool holds [`BUNDLED_DESCRIPTOR_SET`](crate::BUNDLED_DESCRIPTOR_SET)
//! (google.rpc status/details/code, google.api annotations/http/httpbody and
//! the protobuf well-known types) plus all registered sets.
//!
//! File sharing rules:
//! - A file whose name is in the bundled set is always taken from the bundled
//!   set; an uploaded copy is ignored (compilers disagree on the exact bytes
//!   of `google/protobuf/*.proto`).
//! - A file shipped by several sets must be byte-identical in all of them
//!   (prost-reflect then keeps one copy); otherwise the upload is a
//!   [`DescriptorError::Conflict`] naming the file and the other set.
//! - A message, enum, service or extension defined in another set (in a
//!   different file) or in the bundled set is a conflict too.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::{DescriptorProto, FileDescriptorProto};

use crate::{
    codec::Codec,
    error::DescriptorError,
    http_rule::HttpMatch,
    index::{MethodIndex, MethodInfo},
    pool::{LazyPool, RawFileSet, add_set},
};

/// Owner name reported in conflicts with the bundled protos.
const BUNDLED_OWNER: &str = "bundled";

/// Thread-safe registry of descriptor sets; cheap to read, writers serialized.
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
    writer: Mutex<WriterState>,
    bundled: Bundled,
}

/// An immutable view of all registered sets: the pool, the method index and
/// the HTTP routes. Hold the `Arc` for the duration of one request.
#[derive(Debug)]
pub struct Snapshot {
    /// The prost-reflect pool, built when asked for (see `pool.rs`).
    pool: Arc<LazyPool>,
    sets: BTreeMap<String, Arc<RegisteredSet>>,
    /// File name → sets shipping it, in pool order (first is the owner).
    file_sets: HashMap<String, Vec<String>>,
    /// Set names in the order their files were added to `pool`.
    order: Vec<String>,
    /// Shared with the next snapshot when a put leaves it unchanged.
    index: Arc<MethodIndex>,
    /// The JSON codec's plans of every message type of the pool.
    codec: Arc<Codec>,
}

/// Summary of one registered set, as listed by the admin API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SetInfo {
    /// The name it was registered under.
    pub name: String,
    /// 1 for the first `put` of this name, incremented by every later one
    /// (also across a `remove`).
    pub version: u64,
    /// Size of the uploaded `FileDescriptorSet` in bytes.
    pub size_bytes: usize,
    /// Files in the set, in upload order.
    pub files: Vec<String>,
    /// Full names of the services defined in those files.
    pub services: Vec<String>,
    /// gRPC paths (`/pkg.Service/Method`) of their methods.
    pub methods: Vec<String>,
    /// Their HTTP bindings, e.g. `GET /v1/{name=shelves/*}`.
    pub http_rules: Vec<String>,
    /// The cluster the set's services are bound to, if any (an opaque
    /// label to this crate; the gateway routes by it).
    pub cluster: Option<String>,
    /// When it was registered, in milliseconds since the Unix epoch.
    pub uploaded_at_unix_ms: u64,
}

/// What is registered with a set besides its descriptors.
#[derive(Clone, Debug, Default)]
pub struct SetMeta {
    /// Cluster binding (see [`SetInfo::cluster`]).
    pub cluster: Option<String>,
    /// Registration time in ms since the Unix epoch; 0 = now.
    pub uploaded_at_unix_ms: u64,
}

/// Result of a successful [`Registry::put`].
#[derive(Clone, Debug)]
pub struct PutOutcome {
    /// A set of the same name was replaced.
    pub replaced: bool,
    /// The set as now registered.
    pub set: SetInfo,
}

/// What a snapshot derives from its pool (see `Registry::compile`).
struct Compiled {
    codec: Arc<Codec>,
    pool: Arc<LazyPool>,
    index: Arc<MethodIndex>,
}

#[derive(Debug)]
struct RegisteredSet {
    info: SetInfo,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct WriterState {
    versions: HashMap<String, u64>,
}

#[derive(Debug)]
struct Bundled {
    pool: DescriptorPool,
    files: HashSet<String>,
}

/// A decoded upload, before validation against the registry.
struct Upload {
    /// Each file, in upload order.
    files: Vec<UploadedFile>,
}

/// What validation needs of one uploaded file: the decoded
/// `FileDescriptorProto` is dropped as soon as this is taken from it, so a
/// large upload is not held decoded while its pool is built.
struct UploadedFile {
    name: String,
    /// The file's raw bytes, compared byte for byte with other sets' copies.
    bytes: Bytes,
    dependencies: Vec<String>,
    /// Full names of its messages, enums, services and extensions.
    definitions: Vec<String>,
}

// === impl Registry ===

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry whose snapshots know only the bundled protos.
    pub fn new() -> Self {
        // Invariant: BUNDLED_DESCRIPTOR_SET is produced by build.rs with protox
        // from a fixed file list, so it always decodes (tested in `tests`).
        let pool = DescriptorPool::decode(crate::BUNDLED_DESCRIPTOR_SET)
            .expect("bundled descriptor set decodes");
        let files = pool.files().map(|f| f.name().to_owned()).collect();
        let bundled = Bundled { pool, files };
        let codec = Arc::new(Codec::compile(&bundled.pool));
        let pool = Arc::new(LazyPool::new(bundled.pool.clone(), Vec::new(), None));
        let snapshot = Snapshot {
            // The bundled protos define no services, so this cannot fail; an
            // empty index is the right answer either way.
            index: Arc::new(
                MethodIndex::build(&bundled.pool, &codec, &pool, |_| None).unwrap_or_default(),
            ),
            pool,
            sets: BTreeMap::new(),
            file_sets: HashMap::new(),
            order: Vec::new(),
            codec,
        };
        Self {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(WriterState::default()),
            bundled,
        }
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Validates and swaps in atomically (all or nothing). Replacing a set of the same name is allowed.
    ///
    /// `fds` is an encoded `google.protobuf.FileDescriptorSet` that must contain
    /// every file it imports (apart from the bundled ones). This is CPU-bound
    /// work proportional to all registered sets: call it off async runtime threads.
    pub fn put(&self, name: &str, fds: &[u8]) -> Result<PutOutcome, DescriptorError> {
        self.put_with(name, fds, SetMeta::default(), |_| Ok(()))
    }

    /// Like [`Registry::put`], with metadata, and a `commit` hook run after
    /// validation, under the writer lock, before the new snapshot becomes
    /// visible: if it fails (e.g. persisting the upload), nothing changes
    /// and its error is returned.
    pub fn put_with(
        &self,
        name: &str,
        fds: &[u8],
        meta: SetMeta,
        commit: impl FnOnce(&SetInfo) -> Result<(), DescriptorError>,
    ) -> Result<PutOutcome, DescriptorError> {
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        let version = state.versions.get(name).copied().unwrap_or(0) + 1;
        let replaced = current.sets.contains_key(name);
        let mut order: Vec<String> = current
            .order
            .iter()
            .filter(|n| *n != name)
            .cloned()
            .collect();
        if replaced {
            // A replace rebuilds the pool from the other sets in name order.
            order.sort_unstable();
        }
        order.push(name.to_owned());

        // The same bytes again (a redeploy): if the rebuilt pool would add
        // the same files in the same order, it and everything derived from
        // it (index, codec plans) would equal the current ones, so they are
        // shared rather than built a second time next to the old snapshot.
        let reuse = current.sets.get(name).filter(|set| {
            set.bytes.as_ref() == fds
                && order == current.order
                && file_sets_with(&current.file_sets, name, &set.info.files) == current.file_sets
        });
        let (mut info, bytes, pool, file_sets, index, codec) = match reuse {
            Some(set) => (
                set.info.clone(),
                set.bytes.clone(),
                current.pool.clone(),
                current.file_sets.clone(),
                current.index.clone(),
                current.codec.clone(),
            ),
            None => {
                let bytes = Bytes::copy_from_slice(fds);
                let upload = Upload::decode(name, bytes.clone())?;
                upload.check_dependencies(&self.bundled)?;
                upload.check_conflicts(name, &current, &self.bundled)?;

                // The new set is added to the pool last, so rule collisions name it as `rule`.
                let pool = if replaced {
                    let mut pool = self.bundled.pool.clone();
                    for (other, set) in current.sets.iter().filter(|(n, _)| *n != name) {
                        add_set(&mut pool, other, &set.bytes)?;
                    }
                    add_set(&mut pool, name, &bytes)?;
                    pool
                } else {
                    let mut pool = (*current.pool.get()?).clone();
                    add_set(&mut pool, name, &bytes)?;
                    pool
                };

                let file_sets = file_sets_with(
                    &current.file_sets,
                    name,
                    upload.files.iter().map(|f| &f.name),
                );

                let sets = order
                    .iter()
                    .map(|n| {
                        let bytes = match current.sets.get(n) {
                            Some(set) if n != name => set.bytes.clone(),
                            _ => bytes.clone(),
                        };
                        (n.clone(), bytes)
                    })
                    .collect();
                let compiled = self.compile(&pool, sets, &file_sets)?;
                let info = set_info(name, version, &bytes, &upload, &pool, &compiled.index);
                let Compiled { codec, pool, index } = compiled;
                (info, bytes, pool, file_sets, index, codec)
            }
        };
        info.version = version;
        info.cluster = meta.cluster;
        info.uploaded_at_unix_ms = uploaded_at(meta.uploaded_at_unix_ms);
        commit(&info)?;
        let mut sets = current.sets.clone();
        sets.insert(
            name.to_owned(),
            Arc::new(RegisteredSet {
                info: info.clone(),
                bytes,
            }),
        );
        self.current.store(Arc::new(Snapshot {
            codec,
            pool,
            sets,
            file_sets,
            order,
            index,
        }));
        state.versions.insert(name.to_owned(), version);
        Ok(PutOutcome {
            replaced,
            set: info,
        })
    }

    /// Removes a set; [`DescriptorError::UnknownSet`] if absent.
    pub fn remove(&self, name: &str) -> Result<(), DescriptorError> {
        self.remove_with(name, || Ok(()))
    }

    /// Like [`Registry::remove`], with a `commit` hook run under the writer
    /// lock before the new snapshot becomes visible.
    pub fn remove_with(
        &self,
        name: &str,
        commit: impl FnOnce() -> Result<(), DescriptorError>,
    ) -> Result<(), DescriptorError> {
        let _state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        if !current.sets.contains_key(name) {
            return Err(DescriptorError::UnknownSet(name.to_owned()));
        }
        let mut sets = current.sets.clone();
        sets.remove(name);
        let mut pool = self.bundled.pool.clone();
        for (other, set) in &sets {
            add_set(&mut pool, other, &set.bytes)?;
        }
        let order: Vec<String> = sets.keys().cloned().collect();
        let mut file_sets = current.file_sets.clone();
        for owners in file_sets.values_mut() {
            owners.retain(|o| o != name);
        }
        file_sets.retain(|_, owners| !owners.is_empty());
        let Compiled { codec, pool, index } = self.compile(
            &pool,
            sets.iter()
                .map(|(n, set)| (n.clone(), set.bytes.clone()))
                .collect(),
            &file_sets,
        )?;
        commit()?;
        self.current.store(Arc::new(Snapshot {
            codec,
            pool,
            sets,
            file_sets,
            order,
            index,
        }));
        Ok(())
    }
}

impl Registry {
    /// What a new snapshot derives from its freshly built `pool`: the codec's
    /// plans, the lazy pool over `sets` (in pool order, seeded with `pool`
    /// until idle) and the method index, each method owned by the first set
    /// shipping its file.
    fn compile(
        &self,
        pool: &DescriptorPool,
        sets: Vec<(String, Bytes)>,
        file_sets: &HashMap<String, Vec<String>>,
    ) -> Result<Compiled, DescriptorError> {
        let codec = Arc::new(Codec::compile(pool));
        let lazy = Arc::new(LazyPool::new(
            self.bundled.pool.clone(),
            sets,
            Some(pool.clone()),
        ));
        let index = MethodIndex::build(pool, &codec, &lazy, |file| {
            file_sets
                .get(file)
                .and_then(|o| o.first())
                .map(String::as_str)
        })?;
        Ok(Compiled {
            codec,
            pool: lazy,
            index: Arc::new(index),
        })
    }

    /// Drops the current snapshot's prost-reflect pool if nothing asked for
    /// it for `idle` (see `pool.rs`; older snapshots drop theirs with their
    /// last request). True when it was dropped. The gateway calls this
    /// periodically.
    pub fn release_idle_pool(&self, idle: std::time::Duration) -> bool {
        self.current.load().pool.release_if_idle(idle)
    }

    /// Whether the current snapshot's pool is built (for tests and metrics).
    pub fn pool_is_built(&self) -> bool {
        self.current.load().pool.is_cached()
    }
}

/// `file_sets` with `name` as the last owner of `files` and of no other file.
fn file_sets_with<'a>(
    file_sets: &HashMap<String, Vec<String>>,
    name: &str,
    files: impl IntoIterator<Item = &'a String>,
) -> HashMap<String, Vec<String>> {
    let mut file_sets = file_sets.clone();
    for owners in file_sets.values_mut() {
        owners.retain(|o| o != name);
    }
    for file in files {
        file_sets
            .entry(file.clone())
            .or_default()
            .push(name.to_owned());
    }
    file_sets.retain(|_, owners| !owners.is_empty());
    file_sets
}

/// `ms`, or now (ms since the Unix epoch) if it is 0.
fn uploaded_at(ms: u64) -> u64 {
    if ms != 0 {
        return ms;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn set_info(
    name: &str,
    version: u64,
    bytes: &Bytes,
    upload: &Upload,
    pool: &DescriptorPool,
    index: &MethodIndex,
) -> SetInfo {
    let mut info = SetInfo {
        name: name.to_owned(),
        version,
        size_bytes: bytes.len(),
        files: Vec::with_capacity(upload.files.len()),
        services: Vec::new(),
        methods: Vec::new(),
        http_rules: Vec::new(),
        cluster: None,
        uploaded_at_unix_ms: 0,
    };
    for file in &upload.files {
        info.files.push(file.name.clone());
        let Some(descriptor) = pool.get_file_by_name(&file.name) else {
            continue;
        };
        for service in descriptor.services() {
            info.services.push(service.full_name().to_owned());
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                if let Some(m) = index.get(&path) {
                    info.http_rules
                        .extend(m.bindings.iter().map(|b| b.to_string()));
                }
                info.methods.push(path);
            }
        }
    }
    info
}

// === impl Upload ===

impl Upload {
    fn decode(name: &str, bytes: Bytes) -> Result<Self, DescriptorError> {
        let decode_err = |source| DescriptorError::Decode {
            name: name.to_owned(),
            source,
        };
        let raw = RawFileSet::decode(bytes).map_err(decode_err)?;
        if raw.file.is_empty() {
            return Err(DescriptorError::EmptySet {
                name: name.to_owned(),
            });
        }
        let files = raw
            .file
            .into_iter()
            .map(|file| {
                let proto = FileDescriptorProto::decode(file.clone()).map_err(decode_err)?;
                // prost-reflect 0.16 panics (index out of bounds) reporting
                // an unknown syntax; found by fuzz/fuzz_targets/registry_put.rs.
                if !matches!(proto.syntax(), "" | "proto2" | "proto3") {
                    return Err(DescriptorError::UnsupportedSyntax {
                        file: proto.name().to_owned(),
                        syntax: proto.syntax().to_owned(),
                    });
                }
                let mut definitions = Vec::new();
                self::definitions(&proto, &mut definitions);
                Ok(UploadedFile {
                    name: proto.name().to_owned(),
                    bytes: file,
                    dependencies: proto.dependency,
                    definitions,
                })
            })
            .collect::<Result<Vec<_>, DescriptorError>>()?;
        Ok(Self { files })
    }

    fn check_dependencies(&self, bundled: &Bundled) -> Result<(), DescriptorError> {
        let own: HashSet<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        for file in &self.files {
            if bundled.files.contains(&file.name) {
                continue; // replaced by the bundled copy
            }
            for dependency in &file.dependencies {
                if !own.contains(dependency.as_str()) && !bundled.files.contains(dependency) {
                    return Err(DescriptorError::MissingDependency {
                        file: file.name.clone(),
                        dependency: dependency.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_conflicts(
        &self,
        name: &str,
        current: &Snapshot,
        bundled: &Bundled,
    ) -> Result<(), DescriptorError> {
        let current_pool = current.pool.get()?;
        // The first set other than `name` that ships `file`.
        let other_owner = |file: &str| -> Option<&str> {
            current
                .file_sets
                .get(file)?
                .iter()
                .find(|o| *o != name)
                .map(String::as_str)
        };
        for file in &self.files {
            if bundled.files.contains(&file.name) {
                continue;
            }
            if let Some(owner) = other_owner(&file.name) {
                let same = current
                    .sets
                    .get(owner)
                    .and_then(|set| RawFileSet::decode(set.bytes.clone()).ok())
                    .is_some_and(|raw| raw.file.contains(&file.bytes));
                if same {
                    continue; // identical copy: its definitions are shared, not duplicated
                }
                return Err(DescriptorError::Conflict {
                    what: file.name.clone(),
                    owner: owner.to_owned(),
                });
            }
            for full_name in &file.definitions {
                let file_of = definition_file(&current_pool, full_name);
                let Some(defining_file) = file_of else {
                    continue;
                };
                let owner = if bundled.files.contains(&defining_file) {
                    Some(BUNDLED_OWNER)
                } else {
                    other_owner(&defining_file)
                };
                if let Some(owner) = owner {
                    return Err(DescriptorError::Conflict {
                        what: full_name.clone(),
                        owner: owner.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Full names of the messages, enums, services and extensions defined in `file`.
fn definitions(file: &FileDescriptorProto, out: &mut Vec<String>) {
    fn scoped(scope: &str, name: &str) -> String {
        if scope.is_empty() {
            name.to_owned()
        } else {
            format!("{scope}.{name}")
        }
    }
    fn message(scope: &str, m: &DescriptorProto, out: &mut Vec<String>) {
        let full = scoped(scope, m.name());
        for nested in &m.nested_type {
            message(&full, nested, out);
        }
        out.extend(m.enum_type.iter().map(|e| scoped(&full, e.name())));
        out.extend(m.extension.iter().map(|e| scoped(&full, e.name())));
        out.push(full);
    }
    let package = file.package();
    for m in &file.message_type {
        message(package, m, out);
    }
    out.extend(file.enum_type.iter().map(|e| scoped(package, e.name())));
    out.extend(file.service.iter().map(|s| scoped(package, s.name())));
    out.extend(file.extension.iter().map(|e| scoped(package, e.name())));
}

/// The file defining `full_name` in `pool`, if it is a message, enum, service or extension.
fn definition_file(pool: &DescriptorPool, full_name: &str) -> Option<String> {
    if let Some(m) = pool.get_message_by_name(full_name) {
        return Some(m.parent_file().name().to_owned());
    }
    if let Some(e) = pool.get_enum_by_name(full_name) {
        return Some(e.parent_file().name().to_owned());
    }
    if let Some(s) = pool.get_service_by_name(full_name) {
        return Some(s.parent_file().name().to_owned());
    }
    pool.get_extension_by_name(full_name)
        .map(|e| e.parent_file().name().to_owned())
}

// === impl Snapshot ===

impl Snapshot {
    /// The prost-reflect pool: bundled protos plus every registered set,
    /// built from the sets' bytes if not cached (see
    /// [`Registry::release_idle_pool`]); not for the request path. (The
    /// bytes decoded when the sets were registered; should that ever fail,
    /// the bundled protos alone.)
    pub fn pool(&self) -> Arc<DescriptorPool> {
        self.pool
            .get()
            .unwrap_or_else(|_| Arc::new(self.pool.bundled().clone()))
    }

    /// The JSON codec: the plans of every message type of the pool.
    pub fn codec(&self) -> &Arc<Codec> {
        &self.codec
    }

    /// Whether a registered set defines the service `full_name`.
    pub fn has_service(&self, full_name: &str) -> bool {
        self.index.has_service(full_name)
    }

    /// The method with this gRPC path (`/pkg.Service/Method`).
    pub fn method(&self, grpc_path: &str) -> Option<&Arc<MethodInfo>> {
        self.index.get(grpc_path)
    }

    /// Every method of every registered service, in pool order.
    pub fn methods(&self) -> impl Iterator<Item = &Arc<MethodInfo>> {
        self.index.iter()
    }

    /// The registered sets, by name.
    pub fn sets(&self) -> impl Iterator<Item = &SetInfo> {
        self.sets.values().map(|s| &s.info)
    }

    /// One registered set's summary.
    pub fn set(&self, name: &str) -> Option<&SetInfo> {
        self.sets.get(name).map(|s| &s.info)
    }

    /// The cluster the method's set is bound to, if any.
    pub fn cluster_for(&self, grpc_path: &str) -> Option<&str> {
        let method = self.index.get(grpc_path)?;
        self.sets.get(&*method.set_name)?.info.cluster.as_deref()
    }

    /// The original bytes of the set named `name`.
    pub fn set_bytes(&self, name: &str) -> Option<&[u8]> {
        self.sets.get(name).map(|s| s.bytes.as_ref())
    }

    /// Matches an HTTP request against the google.api.http rules (not the default POST route; the caller handles that via method()).
    ///
    /// `path` is the request path (anything from `?` on is ignored). The most
    /// specific matching binding wins (see `template` for the ordering), then
    /// declaration order.
    pub fn match_http(&self, method: &http::Method, path: &str) -> Option<HttpMatch> {
        self.index.routes().find(method, path)
    }
}
