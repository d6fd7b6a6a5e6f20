//! Descriptor registry: named descriptor sets, the gRPC method index built
//! from them, and (later) the JSON <-> protobuf codec.
