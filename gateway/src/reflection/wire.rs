//! Version-independent reflection requests and answers. `v1` and `v1alpha`
//! define the same messages with the same field numbers in two packages; the
//! server and the client work on [`Query`] and [`Answer`] and convert at the
//! edge, once per version (the `versions!` macro below).

use tonic_reflection::pb::{v1, v1alpha};

/// `grpc.reflection.v1.ServerReflection`.
pub(super) const V1_SERVICE: &str = "grpc.reflection.v1.ServerReflection";
/// `grpc.reflection.v1alpha.ServerReflection`.
pub(super) const V1ALPHA_SERVICE: &str = "grpc.reflection.v1alpha.ServerReflection";

/// gRPC `NOT_FOUND`, as carried in an `ErrorResponse`.
pub(super) const NOT_FOUND: i32 = 5;
/// gRPC `INVALID_ARGUMENT`, as carried in an `ErrorResponse`.
pub(super) const INVALID_ARGUMENT: i32 = 3;
/// `INTERNAL`, for a lookup that failed in the gateway.
pub(super) const INTERNAL: i32 = 13;

/// One request on a reflection stream (`ServerReflectionRequest.message_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Query {
    /// `file_by_filename`
    FileByFilename(String),
    /// `file_containing_symbol`
    FileContainingSymbol(String),
    /// `file_containing_extension`
    FileContainingExtension {
        /// Full name of the extended message.
        containing_type: String,
        /// The extension's field number.
        number: i32,
    },
    /// `all_extension_numbers_of_type`
    AllExtensionNumbersOfType(String),
    /// `list_services` (its string content is ignored, as the spec says).
    ListServices,
}

/// One answer (`ServerReflectionResponse.message_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// Encoded `FileDescriptorProto`s: the one asked for first, then its
    /// transitive imports.
    Files(Vec<Vec<u8>>),
    /// Full service names.
    Services(Vec<String>),
    /// Extension field numbers of a message type.
    ExtensionNumbers {
        /// The message type.
        base_type_name: String,
        /// Its extensions' numbers.
        numbers: Vec<i32>,
    },
    /// An `ErrorResponse`: the stream goes on.
    Error {
        /// gRPC status code.
        code: i32,
        /// Human-readable reason.
        message: String,
    },
}

// === impl Query ===

impl Query {
    /// What was asked, for error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::FileByFilename(f) => format!("file_by_filename {f}"),
            Self::FileContainingSymbol(s) => format!("file_containing_symbol {s}"),
            Self::FileContainingExtension {
                containing_type,
                number,
            } => format!("file_containing_extension {containing_type}({number})"),
            Self::AllExtensionNumbersOfType(t) => format!("all_extension_numbers_of_type {t}"),
            Self::ListServices => "list_services".to_owned(),
        }
    }
}

// === impl Answer ===

impl Answer {
    /// A `NOT_FOUND` error answer.
    pub(super) fn not_found(message: String) -> Self {
        Self::Error {
            code: NOT_FOUND,
            message,
        }
    }
}

/// Conversions between [`Query`]/[`Answer`] and one version's messages.
macro_rules! versions {
    ($($pb:ident),+) => {$(
        impl From<$pb::server_reflection_request::MessageRequest> for Query {
            fn from(m: $pb::server_reflection_request::MessageRequest) -> Self {
                use $pb::server_reflection_request::MessageRequest as M;
                match m {
                    M::FileByFilename(f) => Self::FileByFilename(f),
                    M::FileContainingSymbol(s) => Self::FileContainingSymbol(s),
                    M::FileContainingExtension(e) => Self::FileContainingExtension {
                        containing_type: e.containing_type,
                        number: e.extension_number,
                    },
                    M::AllExtensionNumbersOfType(t) => Self::AllExtensionNumbersOfType(t),
                    M::ListServices(_) => Self::ListServices,
                }
            }
        }

        impl From<Query> for $pb::ServerReflectionRequest {
            fn from(q: Query) -> Self {
                use $pb::server_reflection_request::MessageRequest as M;
                let m = match q {
                    Query::FileByFilename(f) => M::FileByFilename(f),
                    Query::FileContainingSymbol(s) => M::FileContainingSymbol(s),
                    Query::FileContainingExtension {
                        containing_type,
                        number,
                    } => M::FileContainingExtension($pb::ExtensionRequest {
                        containing_type,
                        extension_number: number,
                    }),
                    Query::AllExtensionNumbersOfType(t) => M::AllExtensionNumbersOfType(t),
                    Query::ListServices => M::ListServices(String::new()),
                };
                Self {
                    host: String::new(),
                    message_request: Some(m),
                }
            }
        }

        impl From<Answer> for $pb::server_reflection_response::MessageResponse {
            fn from(a: Answer) -> Self {
                use $pb::server_reflection_response::MessageResponse as M;
                match a {
                    Answer::Files(file_descriptor_proto) => {
                        M::FileDescriptorResponse($pb::FileDescriptorResponse {
                            file_descriptor_proto,
                        })
                    }
                    Answer::Services(names) => M::ListServicesResponse($pb::ListServiceResponse {
                        service: names
                            .into_iter()
                            .map(|name| $pb::ServiceResponse { name })
                            .collect(),
                    }),
                    Answer::ExtensionNumbers {
                        base_type_name,
                        numbers,
                    } => M::AllExtensionNumbersResponse($pb::ExtensionNumberResponse {
                        base_type_name,
                        extension_number: numbers,
                    }),
                    Answer::Error { code, message } => M::ErrorResponse($pb::ErrorResponse {
                        error_code: code,
                        error_message: message,
                    }),
                }
            }
        }

        impl From<$pb::server_reflection_response::MessageResponse> for Answer {
            fn from(m: $pb::server_reflection_response::MessageResponse) -> Self {
                use $pb::server_reflection_response::MessageResponse as M;
                match m {
                    M::FileDescriptorResponse(f) => Self::Files(f.file_descriptor_proto),
                    M::ListServicesResponse(l) => {
                        Self::Services(l.service.into_iter().map(|s| s.name).collect())
                    }
                    M::AllExtensionNumbersResponse(e) => Self::ExtensionNumbers {
                        base_type_name: e.base_type_name,
                        numbers: e.extension_number,
                    },
                    M::ErrorResponse(e) => Self::Error {
                        code: e.error_code,
                        message: e.error_message,
                    },
                }
            }
        }
    )+};
}

versions!(v1, v1alpha);
