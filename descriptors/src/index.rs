//! The method index: gRPC path (`/pkg.Service/Method`) → [`MethodInfo`], built
//! from every service in a snapshot's pool, together with the HTTP route table
//! compiled from their `google.api.http` rules.

use std::{collections::HashMap, sync::Arc};

use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::{
    codec::Codec,
    error::DescriptorError,
    http_rule::{self, HttpBinding, RouteTable, RouteTableBuilder},
};

/// Everything the gateway needs to call one gRPC method.
#[derive(Debug)]
pub struct MethodInfo {
    /// `/pkg.Service/Method`, the HTTP/2 `:path` of the call.
    pub grpc_path: String,
    /// Full name of the service, e.g. `pkg.Service`.
    pub service: String,
    /// Method name, e.g. `Method`.
    pub name: String,
    /// Request message type.
    pub input: MessageDescriptor,
    /// Response message type.
    pub output: MessageDescriptor,
    /// The client sends a stream of messages.
    pub client_streaming: bool,
    /// The server answers with a stream of messages.
    pub server_streaming: bool,
    /// Name of the descriptor set that defines the service (the first one, if
    /// several sets ship the identical file).
    pub set_name: String,
    /// HTTP bindings from the method's `google.api.http` rule, primary first.
    pub bindings: Vec<Arc<HttpBinding>>,
    /// The JSON codec's plans of the request and response types.
    plans: MethodPlans,
}

/// The codec of a method's pool and the plans of its two message types
/// (none for a type the plans do not cover: proto2 groups, extensions).
#[derive(Debug)]
pub(crate) struct MethodPlans {
    pub(crate) codec: Arc<Codec>,
    /// The request and response types' message indexes in `codec`.
    pub(crate) input: Option<u32>,
    pub(crate) output: Option<u32>,
}

impl MethodInfo {
    /// The method's codec plans.
    pub(crate) fn plans(&self) -> &MethodPlans {
        &self.plans
    }
}

/// Methods by gRPC path, in pool order, plus the HTTP route table.
#[derive(Debug, Default)]
pub(crate) struct MethodIndex {
    by_path: HashMap<String, Arc<MethodInfo>>,
    ordered: Vec<Arc<MethodInfo>>,
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
        set_of_file: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, DescriptorError> {
        let extension = pool.get_extension_by_name(http_rule::HTTP_EXTENSION);
        let mut index = Self::default();
        let mut routes = RouteTableBuilder::default();
        for service in pool.services() {
            let set_name = set_of_file(service.parent_file().name()).unwrap_or("bundled");
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
                    service: service.full_name().to_owned(),
                    name: method.name().to_owned(),
                    input: method.input(),
                    output: method.output(),
                    client_streaming: method.is_client_streaming(),
                    server_streaming: method.is_server_streaming(),
                    set_name: set_name.to_owned(),
                    bindings,
                    grpc_path,
                    plans: MethodPlans {
                        codec: codec.clone(),
                        input: codec.root(method.input().full_name()),
                        output: codec.root(method.output().full_name()),
                    },
                });
                for binding in &info.bindings {
                    routes.add(&info, binding)?;
                }
                index.by_path.insert(info.grpc_path.clone(), info.clone());
                index.ordered.push(info);
            }
        }
        index.routes = routes.finish();
        Ok(index)
    }

    pub(crate) fn get(&self, grpc_path: &str) -> Option<&Arc<MethodInfo>> {
        self.by_path.get(grpc_path)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<MethodInfo>> {
        self.ordered.iter()
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        &self.routes
    }
}
