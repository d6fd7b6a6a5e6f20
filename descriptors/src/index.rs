//! The method index: gRPC path (`/pkg.Service/Method`) → [`MethodInfo`], built
//! from every service in a snapshot's pool, together with the HTTP route table
//! compiled from their `google.api.http` rules.

use std::{collections::HashSet, sync::Arc};

use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::{
    codec::Codec,
    error::DescriptorError,
    http_rule::{self, HttpBinding, RouteTable, RouteTableBuilder},
    pool::LazyPool,
};

/// Everything the gateway needs to call one gRPC method.
#[derive(Debug)]
pub struct MethodInfo {
    /// `/pkg.Service/Method`, the HTTP/2 `:path` of the call.
    pub grpc_path: String,
    /// Where the method name starts in `grpc_path` (after the second `/`).
    method_at: u32,
    /// The client sends a stream of messages.
    pub client_streaming: bool,
    /// The server answers with a stream of messages.
    pub server_streaming: bool,
    /// Name of the descriptor set that defines the service (the first one, if
    /// several sets ship the identical file).
    pub set_name: Arc<str>,
    /// HTTP bindings from the method's `google.api.http` rule, primary first.
    pub bindings: Vec<Arc<HttpBinding>>,
    /// The JSON codec's plans of the request and response types.
    plans: MethodPlans,
    /// The snapshot's prost-reflect pool, built when asked for.
    pool: Arc<LazyPool>,
    /// The file defining the service (it imports the message types' files).
    file: Arc<str>,
}

/// The codec of a method's pool and its two message types.
#[derive(Debug)]
pub(crate) struct MethodPlans {
    pub(crate) codec: Arc<Codec>,
    /// The request and response types' message indexes in `codec`.
    input_type: u32,
    output_type: u32,
    /// The same when the codec covers the type (no proto2 groups or
    /// extensions in it or in what it can contain).
    pub(crate) input: Option<u32>,
    pub(crate) output: Option<u32>,
}

impl MethodInfo {
    /// Full name of the service, e.g. `pkg.Service`.
    pub fn service(&self) -> &str {
        self.grpc_path
            .get(1..(self.method_at as usize).saturating_sub(1))
            .unwrap_or_default()
    }

    /// Method name, e.g. `Method`.
    pub fn name(&self) -> &str {
        self.grpc_path
            .get(self.method_at as usize..)
            .unwrap_or_default()
    }

    /// The method's codec plans.
    pub(crate) fn plans(&self) -> &MethodPlans {
        &self.plans
    }

    /// Full name of the request message type.
    pub fn input_name(&self) -> &str {
        self.plans.codec.program().messages[self.plans.input_type as usize].full_name()
    }

    /// Full name of the response message type.
    pub fn output_name(&self) -> &str {
        self.plans.codec.program().messages[self.plans.output_type as usize].full_name()
    }

    /// Whether converting this method's messages needs the snapshot's
    /// prost-reflect pool (the codec does not cover its request or reply
    /// type: proto2 groups, extensions) and it is not built: a caller on an
    /// event loop builds it elsewhere first ([`MethodInfo::build_pool`]).
    pub fn needs_pool_built(&self) -> bool {
        (self.plans.input.is_none() || self.plans.output.is_none()) && !self.pool.is_cached()
    }

    /// Builds the snapshot's pool if it is not cached (CPU proportional to
    /// every registered set: for a blocking thread).
    pub fn build_pool(&self) {
        let _ = self.pool.get();
    }

    /// The request message type's descriptor, from the snapshot's pool
    /// (built if not cached: not for the request path).
    pub fn input(&self) -> Result<MessageDescriptor, DescriptorError> {
        self.descriptor(self.input_name())
    }

    /// The response message type's descriptor (see [`MethodInfo::input`]).
    pub fn output(&self) -> Result<MessageDescriptor, DescriptorError> {
        self.descriptor(self.output_name())
    }

    /// The request message type's descriptor from a pool of the method's
    /// own file and its imports (or the whole pool if built): for naming
    /// the error in a refused request without building the whole pool. An
    /// `Any` in it resolves only types of those files.
    pub(crate) fn input_of_own_files(&self) -> Result<MessageDescriptor, DescriptorError> {
        let name = self.input_name();
        self.pool
            .partial(&self.file)?
            .get_message_by_name(name)
            .ok_or_else(|| DescriptorError::UnknownMessage(name.to_owned()))
    }

    fn descriptor(&self, full_name: &str) -> Result<MessageDescriptor, DescriptorError> {
        self.pool
            .get()?
            .get_message_by_name(full_name)
            .ok_or_else(|| DescriptorError::UnknownMessage(full_name.to_owned()))
    }
}

impl MethodPlans {
    /// The request type's message index (covered by the codec or not).
    pub(crate) fn input_type(&self) -> u32 {
        self.input_type
    }

    fn new(
        codec: &Arc<Codec>,
        input: &MessageDescriptor,
        output: &MessageDescriptor,
    ) -> Result<Self, DescriptorError> {
        let find = |d: &MessageDescriptor| {
            codec
                .find(d.full_name())
                .ok_or_else(|| DescriptorError::UnknownMessage(d.full_name().to_owned()))
        };
        Ok(Self {
            codec: codec.clone(),
            input_type: find(input)?,
            output_type: find(output)?,
            input: codec.root(input.full_name()),
            output: codec.root(output.full_name()),
        })
    }
}

/// A method, found in a set by its gRPC path (no second copy of the path).
#[derive(Debug)]
struct ByPath(Arc<MethodInfo>);

impl PartialEq for ByPath {
    fn eq(&self, other: &Self) -> bool {
        self.0.grpc_path == other.0.grpc_path
    }
}

impl Eq for ByPath {}

impl std::hash::Hash for ByPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: lookups borrow the path as a `str`.
        self.0.grpc_path.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for ByPath {
    fn borrow(&self) -> &str {
        &self.0.grpc_path
    }
}

/// Methods by gRPC path, in pool order, plus the HTTP route table.
#[derive(Debug, Default)]
pub(crate) struct MethodIndex {
    by_path: HashSet<ByPath>,
    ordered: Vec<Arc<MethodInfo>>,
    services: HashSet<String>,
    routes: RouteTable,
}

// === impl MethodIndex ===

impl MethodIndex {
    /// Indexes every service of `pool`. `set_of_file` names the set that owns a
    /// file. Services are visited in pool order, so when a rule collides, the
    /// rule reported as `rule` is the one from the file added last.
    pub(crate) fn build<'a>(
        pool: &DescriptorPool,
        codec: &Arc<Codec>,
        lazy: &Arc<LazyPool>,
        set_of_file: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, DescriptorError> {
        let extension = pool.get_extension_by_name(http_rule::HTTP_EXTENSION);
        let mut index = Self::default();
        let mut routes = RouteTableBuilder::default();
        for service in pool.services() {
            index.services.insert(service.full_name().to_owned());
            let set_name: Arc<str> = set_of_file(service.parent_file().name())
                .unwrap_or("bundled")
                .into();
            let file: Arc<str> = service.parent_file().name().into();
            for method in service.methods() {
                let grpc_path = format!("/{}/{}", service.full_name(), method.name());
                let bindings = match &extension {
                    Some(ext) => http_rule::bindings_for(&method, &grpc_path, ext)?,
                    None => Vec::new(),
                };
                // Not collected in place: that would keep the `HttpBinding`
                // buffer (4 of them, ~1 KiB) for a few pointers.
                let mut bindings: Vec<Arc<HttpBinding>> =
                    bindings.into_iter().map(Arc::new).collect();
                bindings.shrink_to_fit();
                let info = Arc::new(MethodInfo {
                    method_at: (service.full_name().len() + 2) as u32,
                    client_streaming: method.is_client_streaming(),
                    server_streaming: method.is_server_streaming(),
                    set_name: set_name.clone(),
                    bindings,
                    grpc_path,
                    plans: MethodPlans::new(codec, &method.input(), &method.output())?,
                    pool: lazy.clone(),
                    file: file.clone(),
                });
                for binding in &info.bindings {
                    routes.add(&info, binding)?;
                }
                index.by_path.insert(ByPath(info.clone()));
                index.ordered.push(info);
            }
        }
        index.routes = routes.finish();
        Ok(index)
    }

    pub(crate) fn has_service(&self, full_name: &str) -> bool {
        self.services.contains(full_name)
    }

    pub(crate) fn get(&self, grpc_path: &str) -> Option<&Arc<MethodInfo>> {
        self.by_path.get(grpc_path).map(|m| &m.0)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<MethodInfo>> {
        self.ordered.iter()
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        &self.routes
    }
}
