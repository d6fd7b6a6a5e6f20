//! Integration tests of the descriptors crate (one binary, one module per area).

mod common;
mod differential;
mod hostile;
mod http;
mod json;
mod props;
mod registry;
mod status;
