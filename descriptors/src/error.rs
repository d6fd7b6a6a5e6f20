//! [`DescriptorError`]: everything that can go wrong in this crate, with enough
//! context to tell the caller who is at fault ([`DescriptorError::kind`]).

/// Errors from the registry (bad uploads, conflicts), the rule compiler and the
/// JSON codec (bad requests, undecodable upstream messages).
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// The uploaded bytes are not an encoded `google.protobuf.FileDescriptorSet`.
    #[error("descriptor set `{name}` is not an encoded FileDescriptorSet")]
    Decode {
        /// Name of the uploaded set.
        name: String,
        /// What the protobuf decoder said.
        #[source]
        source: prost::DecodeError,
    },
    /// The upload contains no files.
    #[error("descriptor set `{name}` contains no files")]
    EmptySet {
        /// Name of the uploaded set.
        name: String,
    },
    /// The set decodes but is not a consistent schema (unresolved type names,
    /// duplicate definitions inside the set, bad options, ...).
    #[error("descriptor set `{name}` is invalid: {source}")]
    InvalidDescriptor {
        /// Name of the uploaded set.
        name: String,
        /// What prost-reflect said while building the pool.
        #[source]
        source: prost_reflect::DescriptorError,
    },
    /// A file declares a `syntax` other than `proto2` or `proto3` (refused
    /// before prost-reflect sees it: its error report for this case panics).
    #[error("file `{file}` has unsupported syntax `{syntax}`")]
    UnsupportedSyntax {
        /// The file.
        file: String,
        /// Its declared syntax.
        syntax: String,
    },
    /// A file imports a file that is neither in the same set nor bundled.
    #[error("file `{file}` imports `{dependency}`, which is neither in the set nor bundled")]
    MissingDependency {
        /// The importing file.
        file: String,
        /// The missing import.
        dependency: String,
    },
    /// A file, service, message, enum or extension is already defined by another set
    /// (or by the bundled googleapis/well-known types).
    #[error("`{what}` is already defined by descriptor set `{owner}`")]
    Conflict {
        /// Full name of the definition, or the file name.
        what: String,
        /// The set that defines it already (`bundled` for the built-in protos).
        owner: String,
    },
    /// Two `google.api.http` rules would match the same requests.
    #[error("HTTP rule {rule} collides with {other}")]
    RouteCollision {
        /// The rule being added, e.g. `GET /v1/{name=shelves/*} (/pkg.S/M)`.
        rule: String,
        /// The rule it collides with, with its method and set.
        other: String,
    },
    /// No set with that name is registered.
    #[error("no descriptor set named `{0}`")]
    UnknownSet(String),
    /// A `google.api.http` rule is malformed or names fields that do not exist.
    #[error("invalid google.api.http rule on {method}: {message}")]
    InvalidRule {
        /// The gRPC path of the annotated method.
        method: String,
        /// What is wrong with the rule.
        message: String,
    },
    /// The request JSON is malformed or does not fit the message.
    #[error("invalid JSON at `{path}`: {message}")]
    InvalidJson {
        /// Field path such as `book.pages` or `items[2].name`; empty for the root.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The request JSON nests objects/arrays deeper than allowed.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The configured limit (`JsonOptions::max_depth`).
        max: usize,
    },
    /// Protobuf bytes (normally from the upstream) that do not decode as the
    /// expected message, or that cannot be rendered as JSON.
    #[error("invalid protobuf message: {0}")]
    InvalidProto(String),
    /// A protobuf message (normally from the upstream) nests deeper than the
    /// limit: `JsonOptions::max_depth` JSON levels, or
    /// [`MAX_MESSAGE_NESTING`](crate::wire::MAX_MESSAGE_NESTING) message
    /// levels counted across `google.protobuf.Any` payloads. Refused before
    /// decoding it.
    #[error("protobuf message nested deeper than {max} levels")]
    TooDeepMessage {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The `google.protobuf.Any` payloads of a message add up to more bytes
    /// than allowed (each nested level is decoded again to render it).
    #[error("google.protobuf.Any payloads add up to more than {max} bytes")]
    AnyTooLarge {
        /// The budget, in bytes.
        max: usize,
    },
    /// The JSON rendering of a message is longer than
    /// `JsonOptions::max_json_output_bytes`.
    #[error("JSON rendering exceeds the limit of {max} bytes")]
    JsonTooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// A path or query parameter does not name a field or has a bad value.
    #[error("invalid parameter `{path}`: {message}")]
    InvalidPath {
        /// Field path of the parameter, e.g. `shelf.id`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A method's message type is missing from the pool rebuilt from the
    /// registered sets (never expected: the same bytes built the index).
    #[error("message type `{0}` is not in the registry")]
    UnknownMessage(String),
    /// The conversion needs the whole prost-reflect pool, which is not
    /// built, and the caller asked not to build it on its thread
    /// ([`crate::without_pool_builds`]).
    #[error("the descriptor pool is not built yet")]
    PoolNotBuilt,
    /// A `commit` hook (e.g. persisting an upload to disk) failed; nothing
    /// was changed.
    #[error("storing descriptor set `{name}` failed: {message}")]
    Storage {
        /// The set.
        name: String,
        /// What failed.
        message: String,
    },
    /// A `commit` hook refused the set for a reason of its caller's (e.g.
    /// a binding that would take a method away from the gateway's routes);
    /// nothing was changed.
    #[error("descriptor set `{name}` refused: {message}")]
    Refused {
        /// The set.
        name: String,
        /// Why.
        message: String,
    },
}

/// Coarse classification of a [`DescriptorError`], so callers can map it to a
/// status code in one table without matching every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A descriptor set upload is unusable (decode, schema, dependency or rule error): HTTP 400.
    InvalidUpload,
    /// An upload conflicts with what is registered (definition or route): HTTP 409.
    Conflict,
    /// The named set does not exist: HTTP 404.
    NotFound,
    /// A downstream request (JSON body, path or query) is invalid: HTTP 400 / `INVALID_ARGUMENT`.
    InvalidRequest,
    /// A message from the upstream could not be decoded or rendered: HTTP 502 / `INTERNAL`.
    InvalidResponse,
    /// The registry could not store a change (disk): HTTP 500.
    Internal,
}

// === impl DescriptorError ===

impl DescriptorError {
    /// Which class of failure this is; see [`ErrorKind`] for the intended status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Decode { .. }
            | Self::EmptySet { .. }
            | Self::InvalidDescriptor { .. }
            | Self::MissingDependency { .. }
            | Self::UnsupportedSyntax { .. }
            | Self::InvalidRule { .. } => ErrorKind::InvalidUpload,
            Self::Conflict { .. } | Self::RouteCollision { .. } | Self::Refused { .. } => {
                ErrorKind::Conflict
            }
            Self::UnknownSet(_) => ErrorKind::NotFound,
            Self::InvalidJson { .. } | Self::TooDeep { .. } | Self::InvalidPath { .. } => {
                ErrorKind::InvalidRequest
            }
            Self::InvalidProto(_)
            | Self::TooDeepMessage { .. }
            | Self::AnyTooLarge { .. }
            | Self::JsonTooLarge { .. } => ErrorKind::InvalidResponse,
            Self::Storage { .. } | Self::UnknownMessage(_) | Self::PoolNotBuilt => {
                ErrorKind::Internal
            }
        }
    }

    /// True when the caller (uploader or downstream client) is at fault: every
    /// kind except [`ErrorKind::InvalidResponse`] and [`ErrorKind::Internal`].
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self.kind(),
            ErrorKind::InvalidResponse | ErrorKind::Internal
        )
    }

    pub(crate) fn invalid_path(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidPath {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_rule(method: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRule {
            method: method.into(),
            message: message.into(),
        }
    }
}
