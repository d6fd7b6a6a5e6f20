//! JSON ⇄ protobuf following the proto3 JSON mapping
//! (<https://protobuf.dev/programming-guides/proto3/#json>), via prost-reflect,
//! plus the `google.api.http` request mapping (path, query and body, see
//! google/api/http.proto) and `google.rpc.Status` rendering.
//!
//! Input accepts lowerCamelCase and original field names, int64 as numbers or
//! strings, bytes in standard or URL-safe base64, enums by name or number, and
//! every well-known type in its JSON form (`Any` resolved through the snapshot
//! pool of the message descriptor). Output is compact; see [`JsonOptions`].
//!
//! All functions append to the caller's `out` buffer and leave it as it was on
//! error.

use std::{collections::HashSet, io};

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, SerializeOptions, Value,
};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_path_to_error::{Path, Segment, Track};

use crate::{
    codec::{Codec, from_json, nesting, to_json},
    error::DescriptorError,
    http_rule::{BodySpec, HttpBinding, HttpMatch},
    index::MethodInfo,
    template::percent_decode,
    wire::{self, MAX_MESSAGE_NESTING, is_wkt},
};

/// Default for [`JsonOptions::max_depth`]: nesting levels of objects/arrays.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Default for [`JsonOptions::max_json_output_bytes`]: 16 MiB, four times
/// the gateway's default largest message.
pub const DEFAULT_MAX_JSON_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// Most query parameters (`key=value` pairs) one request may carry; more is
/// [`DescriptorError::InvalidPath`] before any field is looked up.
pub const MAX_QUERY_PARAMS: usize = 1_000;

/// Most bytes of JSON for the `details` of one rendered `google.rpc.Status`
/// ([`status_to_json`]); larger details render as `[]`.
pub const MAX_STATUS_DETAILS_JSON_BYTES: usize = 1024 * 1024;

/// How JSON is read and written. Deserializable from config (unknown keys are errors).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonOptions {
    /// Output fields that hold their default value (`0`, `""`, `[]`, ...). Default false.
    pub emit_unpopulated: bool,
    /// Output `snake_case` proto field names instead of lowerCamelCase. Default false.
    pub preserve_proto_field_names: bool,
    /// Output enums as numbers instead of names. Default false.
    pub enums_as_ints: bool,
    /// Accept (and drop) unknown JSON fields, unknown enum names and unknown
    /// query parameters instead of rejecting the request. Default false.
    pub ignore_unknown_fields: bool,
    /// Reject request JSON nested deeper than this many objects/arrays
    /// ([`DescriptorError::TooDeep`]), query and path parameters naming a
    /// field path longer than this, and replies whose JSON would nest deeper
    /// ([`DescriptorError::TooDeepMessage`], checked on the protobuf bytes
    /// before decoding, `Any`, `Struct` and `Value` included). Default
    /// [`DEFAULT_MAX_DEPTH`]; values above [`MAX_MESSAGE_NESTING`] act as it.
    pub max_depth: usize,
    /// Largest JSON rendering of one reply message, in bytes
    /// ([`DescriptorError::JsonTooLarge`]). Default
    /// [`DEFAULT_MAX_JSON_OUTPUT_BYTES`].
    pub max_json_output_bytes: usize,
}

impl Default for JsonOptions {
    fn default() -> Self {
        Self {
            emit_unpopulated: false,
            preserve_proto_field_names: false,
            enums_as_ints: false,
            ignore_unknown_fields: false,
            max_depth: DEFAULT_MAX_DEPTH,
            max_json_output_bytes: DEFAULT_MAX_JSON_OUTPUT_BYTES,
        }
    }
}

// === impl JsonOptions ===

impl JsonOptions {
    fn serialize_options(&self) -> SerializeOptions {
        SerializeOptions::new()
            .skip_default_fields(!self.emit_unpopulated)
            .use_proto_field_name(self.preserve_proto_field_names)
            .use_enum_numbers(self.enums_as_ints)
    }

    fn deserialize_options(&self) -> DeserializeOptions {
        DeserializeOptions::new().deny_unknown_fields(!self.ignore_unknown_fields)
    }

    /// `max_depth`, capped at what the recursive codecs are known to survive.
    fn depth_limit(&self) -> usize {
        self.max_depth.min(MAX_MESSAGE_NESTING)
    }
}

/// Parses `json` as a `desc` message and appends its protobuf encoding to `out`.
///
/// The whole body is the message; an empty or all-whitespace body is the empty message.
pub fn json_to_proto(
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let codec = Codec::for_pool(desc.parent_pool());
    let program = codec.program(desc.full_name()).filter(|p| !p.unsupported);
    parse_with(&codec, program.as_ref(), desc, json, opts, out)
}

/// [`json_to_proto`] for the request message of `method`, with the plan
/// the method keeps (no lock, no lookup).
pub fn request_to_proto(
    method: &MethodInfo,
    json: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let plans = method.plans();
    parse_with(
        &plans.codec,
        plans.input.as_ref(),
        &method.input,
        json,
        opts,
        out,
    )
}

/// JSON -> wire with `program`, appended to `out`; false (and `out` as it
/// was) when the codec refuses the document, a document nested deeper than
/// the depth limit included (counted as it is read, with no pre-scan: the
/// prost-reflect reader's [`check_depth`] then reports it).
fn codec_parse(
    codec: &Codec,
    program: &crate::codec::Program,
    json: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> bool {
    // One UTF-8 check for the whole document: serde_json's `StrRead` then
    // takes each string as it is (`SliceRead` checks every string again).
    // Invalid UTF-8 is for the prost-reflect reader to report.
    let Ok(text) = std::str::from_utf8(json) else {
        return false;
    };
    let start = out.len();
    // The protobuf encoding is rarely longer than its JSON.
    out.reserve(json.len());
    let segments = std::cell::RefCell::new(Vec::new());
    let seed = from_json::MessageSeed {
        ctx: from_json::Ctx {
            codec,
            prog: program,
            deny_unknown: !opts.ignore_unknown_fields,
            segments: &segments,
            depth_left: opts.depth_limit(),
        },
        m: 0,
        buf: &mut *out,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    if seed.deserialize(&mut de).and_then(|()| de.end()).is_ok() {
        return true;
    }
    out.truncate(start);
    false
}

/// JSON -> wire with `program` (the plan of `desc`), else the prost-reflect
/// reader.
fn parse_with(
    codec: &Codec,
    program: Option<&std::sync::Arc<crate::codec::Program>>,
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    if is_blank(json) {
        return Ok(());
    }
    if let Some(program) = program
        && codec_parse(codec, program, json, opts, out)
    {
        return Ok(());
    }
    // Refused (too deep, or an `Any` whose `@type` is not first): the
    // prost-reflect reader says why, with the JSON path, exactly as before
    // (its depth pre-scan first).
    legacy::json_to_proto(desc, json, opts, out)
}

/// Builds the request message of an HTTP match and appends its protobuf encoding to `out`.
///
/// Per google/api/http.proto: the body is mapped first (`body: "*"` → the whole
/// message, `body: "f"` → the value of field `f`, no `body` → ignored; an
/// empty body is `{}`), then path parameters are set (overriding the body),
/// then, unless `body: "*"`, query parameters: `a.b=1&tags=x&tags=y`, nested
/// fields by dots, repeated fields by repeating the key, values converted by
/// field type (numbers, bools `true|false|1|0`, enums by name or number,
/// bytes as base64, Timestamp/Duration/FieldMask and wrappers in their JSON
/// string forms). Query parameters naming a field bound by the path or the
/// body are ignored; unknown ones are [`DescriptorError::InvalidPath`] unless
/// `opts.ignore_unknown_fields`.
pub fn build_request(
    m: &HttpMatch,
    body: &[u8],
    query: Option<&str>,
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let binding = &*m.binding;
    let query = query.filter(|q| !q.is_empty() && binding.body != BodySpec::Whole);
    if m.path_params.is_empty() && query.is_none() && binding.body == BodySpec::Whole {
        return request_to_proto(&m.method, body, opts, out);
    }
    let start = out.len();
    if params_to_wire(m, body, query, opts, out)? {
        return Ok(());
    }
    out.truncate(start);
    legacy::build_request(m, body, query, opts, out)
}

/// [`build_request`] without a `DynamicMessage`: the body through the codec,
/// then each path and query parameter appended as its own wire field (a
/// later occurrence of a singular field wins, message fields merge, repeated
/// ones append: the mapping's "path and query override the body"), written
/// even when it holds the default value, so `?n=0` overrides a body's `n`.
/// `Ok(false)` when a case needs the prost-reflect path: a body field that
/// is not a singular message, a type the plans do not cover, a body the codec
/// refuses (the legacy reader then names the error), a query parameter in a
/// oneof (whether another member is set depends on the body).
fn params_to_wire(
    m: &HttpMatch,
    body: &[u8],
    query: Option<&str>,
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<bool, DescriptorError> {
    let binding = &*m.binding;
    let desc = &m.method.input;
    let plans = m.method.plans();
    let Some(program) = &plans.input else {
        return Ok(false);
    };
    match (&binding.body, &binding.body_field) {
        (BodySpec::Whole, _) if !is_blank(body) => {
            parse_with(&plans.codec, Some(program), desc, body, opts, out)?;
        }
        (BodySpec::Field(_), Some(field)) if !is_blank(body) => {
            let Some(inner) = field
                .kind()
                .as_message()
                .filter(|_| !field.is_list() && !field.is_map())
                .and_then(|d| plans.codec.program(d.full_name()))
                .filter(|p| !p.unsupported)
            else {
                return Ok(false);
            };
            let mut value = Vec::with_capacity(body.len());
            if !codec_parse(&plans.codec, &inner, body, opts, &mut value) {
                return Ok(false);
            }
            wire_len_field(field.number(), &value, out);
        }
        (BodySpec::Field(_), None) if !is_blank(body) => return Ok(false),
        _ => {}
    }
    for (path, value) in &m.path_params {
        let chain = match binding.path_fields.iter().find(|(p, _)| p == path) {
            Some((_, chain)) => chain.clone(),
            None => resolve_chain(desc, path, opts.depth_limit())?
                .ok_or_else(|| DescriptorError::invalid_path(path, "no such field"))?,
        };
        param_to_wire(&chain, path, value, out)?;
    }
    if let Some(query) = query {
        let params = query_params(desc, binding, query, opts)?;
        if params
            .iter()
            .any(|(chain, _, _)| chain.last().is_some_and(|f| f.containing_oneof().is_some()))
        {
            return Ok(false);
        }
        for (chain, key, value) in &params {
            param_to_wire(chain, key, value, out)?;
        }
    }
    Ok(true)
}

/// One parameter as wire bytes: the leaf's value (converted as
/// [`parse_value`] does), wrapped in each parent message field.
fn param_to_wire(
    chain: &[FieldDescriptor],
    path: &str,
    value: &str,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let Some((leaf, parents)) = chain.split_last() else {
        return Err(DescriptorError::invalid_path(path, "empty field path"));
    };
    let value = parse_value(&leaf.kind(), value)
        .map_err(|message| DescriptorError::invalid_path(path, message))?;
    let mut field = Vec::new();
    encode_scalar(leaf, &value, &mut field)
        .map_err(|message| DescriptorError::invalid_path(path, message))?;
    for parent in parents.iter().rev() {
        let mut wrapped = Vec::with_capacity(field.len() + 6);
        wire_len_field(parent.number(), &field, &mut wrapped);
        field = wrapped;
    }
    out.extend_from_slice(&field);
    Ok(())
}

/// `field` = `value` as one wire field (tag and value), whatever the value.
fn encode_scalar(field: &FieldDescriptor, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let n = field.number();
    let varint = |v: u64, out: &mut Vec<u8>| {
        encode_key(n, WireType::Varint, out);
        encode_varint(v, out);
    };
    match (field.kind(), value) {
        (Kind::Double, Value::F64(v)) => {
            encode_key(n, WireType::SixtyFourBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Kind::Float, Value::F32(v)) => {
            encode_key(n, WireType::ThirtyTwoBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Kind::Int32, Value::I32(v)) => varint(i64::from(*v) as u64, out),
        (Kind::Int64, Value::I64(v)) => varint(*v as u64, out),
        (Kind::Uint32, Value::U32(v)) => varint(u64::from(*v), out),
        (Kind::Uint64, Value::U64(v)) => varint(*v, out),
        (Kind::Sint32, Value::I32(v)) => varint(u64::from(((v << 1) ^ (v >> 31)) as u32), out),
        (Kind::Sint64, Value::I64(v)) => varint(((v << 1) ^ (v >> 63)) as u64, out),
        (Kind::Fixed32, Value::U32(v)) => {
            encode_key(n, WireType::ThirtyTwoBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Kind::Sfixed32, Value::I32(v)) => {
            encode_key(n, WireType::ThirtyTwoBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Kind::Fixed64, Value::U64(v)) => {
            encode_key(n, WireType::SixtyFourBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Kind::Sfixed64, Value::I64(v)) => {
            encode_key(n, WireType::SixtyFourBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Kind::Bool, Value::Bool(v)) => varint(u64::from(*v), out),
        (Kind::Enum(_), Value::EnumNumber(v)) => varint(i64::from(*v) as u64, out),
        (Kind::String, Value::String(v)) => wire_len_field(n, v.as_bytes(), out),
        (Kind::Bytes, Value::Bytes(v)) => wire_len_field(n, v, out),
        (Kind::Message(_), Value::Message(m)) => wire_len_field(n, &m.encode_to_vec(), out),
        _ => return Err("value does not fit the field".to_owned()),
    }
    Ok(())
}

/// A length-delimited field `number` holding `bytes`.
fn wire_len_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The DynamicMessage form of [`build_request`].
fn legacy_build_request(
    m: &HttpMatch,
    body: &[u8],
    query: Option<&str>,
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let binding = &*m.binding;
    let desc = &m.method.input;
    let query = query.filter(|q| !q.is_empty() && binding.body != BodySpec::Whole);
    let mut message = match &binding.body {
        BodySpec::Whole if !is_blank(body) => parse_message(desc, body, opts, None)?,
        BodySpec::Field(field) if !is_blank(body) => parse_message(desc, body, opts, Some(field))?,
        _ => DynamicMessage::new(desc.clone()),
    };

    for (path, value) in &m.path_params {
        let chain = match binding.path_fields.iter().find(|(p, _)| p == path) {
            Some((_, chain)) => chain.clone(),
            None => resolve_chain(desc, path, opts.depth_limit())?
                .ok_or_else(|| DescriptorError::invalid_path(path, "no such field"))?,
        };
        set_from_str(&mut message, &chain, path, value)?;
    }

    if let Some(query) = query {
        apply_query(&mut message, binding, query, opts)?;
    }
    encode(&message, out)
}

/// Decodes `proto` as a `desc` message and appends it as compact JSON to `out`.
///
/// One pass over the bytes with the message type's compiled plan (see
/// [`crate::codec`]), after [`wire::check_nesting`] bounded its depth and
/// its `Any` payloads. Map entries come out in sorted key order and numbers
/// as protobuf's JSON printers write them (`164`, not `164.0`).
pub fn proto_to_json(
    desc: &MessageDescriptor,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    render(desc, None, proto, opts, out)
}

/// Like [`proto_to_json`] for `method`'s response, honouring the binding's
/// `response_body` (then only that field's value is written).
pub fn response_to_json(
    method: &MethodInfo,
    binding: Option<&HttpBinding>,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let field = binding.and_then(|b| b.response_field.as_ref());
    let plans = method.plans();
    render_with(
        &plans.codec,
        plans.output.as_ref(),
        &method.output,
        field,
        proto,
        opts,
        out,
    )
}

/// Renders `proto` (or only `field` of it) with the codec, falling back to
/// the prost-reflect codec for types the plans do not cover (groups and
/// extensions, proto2 only).
fn render(
    desc: &MessageDescriptor,
    field: Option<&FieldDescriptor>,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let codec = Codec::for_pool(desc.parent_pool());
    let program = codec.program(desc.full_name()).filter(|p| !p.unsupported);
    render_with(&codec, program.as_ref(), desc, field, proto, opts, out)
}

/// [`render`] with the codec and plan at hand.
fn render_with(
    codec: &Codec,
    program: Option<&std::sync::Arc<crate::codec::Program>>,
    desc: &MessageDescriptor,
    field: Option<&FieldDescriptor>,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    // The depth and `Any` bounds, on the bytes before anything recursive.
    let messages = match &program {
        Some(program) => nesting::check_nesting(codec, program, proto, opts.depth_limit())?,
        None => None,
    };
    match messages {
        // Room for the JSON once (about twice the wire bytes, plus braces
        // and keys per message), so that the output is not grown by
        // doubling (and copied) near its end.
        Some(messages) => {
            let estimate = proto
                .len()
                .saturating_mul(2)
                .saturating_add(messages.saturating_mul(16))
                .saturating_add(16)
                .min(opts.max_json_output_bytes.saturating_add(1));
            if out.capacity() - out.len() < estimate {
                out.reserve_exact(estimate);
            }
        }
        None => wire::check_nesting(desc, proto, opts.depth_limit())?,
    }
    let start = out.len();
    let result = match &program {
        Some(program) => {
            let mut writer = to_json::Writer::new(codec, opts, out);
            match field {
                Some(field) => writer.field_value(program, 0, field.number(), proto),
                None => writer.message(program, 0, &[proto]),
            }
        }
        None => Err(to_json::Stop::Unsupported),
    };
    match result {
        Ok(()) => Ok(()),
        Err(stop) => {
            out.truncate(start);
            match stop {
                to_json::Stop::TooLarge => Err(DescriptorError::JsonTooLarge {
                    max: opts.max_json_output_bytes,
                }),
                to_json::Stop::Invalid(message) => Err(DescriptorError::InvalidProto(message)),
                to_json::Stop::Unsupported => match field {
                    Some(_) => legacy::response_to_json_inner(desc, field, proto, opts, out),
                    None => legacy::proto_to_json(desc, proto, opts, out),
                },
            }
        }
    }
}

/// The prost-reflect codec (JSON ⇄ `DynamicMessage` ⇄ wire), as it was
/// before [`crate::codec`]: the reference the codec is tested against
/// (`tests/it/differential.rs`) and measured against (`benches/json.rs`),
/// and the fallback for proto2 groups and extensions.
pub mod legacy {
    use super::*;

    /// [`super::json_to_proto`] through a `DynamicMessage`.
    pub fn json_to_proto(
        desc: &MessageDescriptor,
        json: &[u8],
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        if is_blank(json) {
            return Ok(());
        }
        let message = parse_message(desc, json, opts, None)?;
        // The protobuf encoding is rarely longer than its JSON.
        out.reserve(json.len());
        encode(&message, out)
    }

    /// [`super::proto_to_json`] through a `DynamicMessage`.
    pub fn proto_to_json(
        desc: &MessageDescriptor,
        proto: &[u8],
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        let message = decode(desc, proto, opts)?;
        write_json(&message, &opts.serialize_options(), opts, out)
    }

    /// [`super::build_request`] through a `DynamicMessage`: the body parsed
    /// into it, then the path and query parameters set on it.
    pub fn build_request(
        m: &HttpMatch,
        body: &[u8],
        query: Option<&str>,
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        super::legacy_build_request(m, body, query, opts, out)
    }

    /// [`super::response_to_json`] through a `DynamicMessage`.
    pub fn response_to_json(
        method: &MethodInfo,
        binding: Option<&HttpBinding>,
        proto: &[u8],
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        let field = binding.and_then(|b| b.response_field.as_ref());
        response_to_json_inner(&method.output, field, proto, opts, out)
    }

    pub(super) fn response_to_json_inner(
        output: &MessageDescriptor,
        field: Option<&FieldDescriptor>,
        proto: &[u8],
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        let Some(field) = field else {
            return proto_to_json(output, proto, opts, out);
        };
        let mut message = decode(output, proto, opts)?;
        let options = opts.serialize_options();
        if let (Kind::Message(sub_desc), false) = (field.kind(), field.is_list() || field.is_map())
        {
            let sub = match message.take_field(field) {
                Some(Value::Message(sub)) => sub,
                _ => DynamicMessage::new(sub_desc),
            };
            return write_json(&sub, &options, opts, out);
        }

        // Scalars, lists and maps: render a message holding only that field and
        // lift the field's JSON out of it.
        let mut only = DynamicMessage::new(output.clone());
        if let Some(value) = message.take_field(field) {
            only.try_set_field(field, value)
                .map_err(|e| DescriptorError::InvalidProto(e.to_string()))?;
        }
        let key = if opts.preserve_proto_field_names {
            field.name()
        } else {
            field.json_name()
        };
        // Rendered as text under the output limit first, so the `Value` tree
        // built from it is bounded too.
        let to_value = |options: &SerializeOptions| {
            let mut text = Vec::new();
            write_json(&only, options, opts, &mut text)?;
            serde_json::from_slice::<serde_json::Value>(&text)
                .map_err(|e| DescriptorError::InvalidProto(e.to_string()))
        };
        let mut rendered = to_value(&options)?;
        if rendered.get(key).is_none() {
            // Default value: render it anyway (the field is the whole response).
            rendered = to_value(&options.clone().skip_default_fields(false))?;
        }
        let value = rendered.get(key).unwrap_or(&serde_json::Value::Null);
        serde_json::to_writer(&mut *out, value)
            .map_err(|e| DescriptorError::InvalidProto(e.to_string()))
    }
}

/// Renders a gRPC status as `{"code":..,"message":..,"details":[...]}`.
///
/// `details_bin` is the already base64-decoded `grpc-status-details-bin`
/// (a `google.rpc.Status`); each of its `Any` details is rendered in proto3
/// JSON as `{"@type": url, ...fields}` (or `{"@type": url, "value": ...}` for
/// well-known types), resolving the type by the part of the URL after the
/// last `/`, whatever the prefix. A detail whose type is unknown is rendered
/// as `{"@type": url, "value": "<base64>"}`; undecodable bytes, details
/// nested deeper than [`DEFAULT_MAX_DEPTH`] (checked on the bytes before
/// decoding) and details longer than [`MAX_STATUS_DETAILS_JSON_BYTES`] as
/// JSON give `"details": []`. Never fails.
pub fn status_to_json(
    pool: &DescriptorPool,
    code: i32,
    message: &str,
    details_bin: Option<&[u8]>,
) -> serde_json::Value {
    let details = details_bin
        .map(|bytes| status_details(pool, bytes))
        .unwrap_or_default();
    serde_json::json!({
        "code": code,
        "message": message,
        "details": details,
    })
}

// === helpers: parsing ===

fn is_blank(json: &[u8]) -> bool {
    json.iter().all(u8::is_ascii_whitespace)
}

/// Rejects JSON nested deeper than `max` objects/arrays, by a byte scan that
/// skips strings (cheap compared to parsing, and bounds the parser's recursion).
fn check_depth(json: &[u8], max: usize) -> Result<(), DescriptorError> {
    if json.len() <= max {
        return Ok(()); // each level needs at least one byte
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        i += 1;
        match b {
            b'"' => {
                // Skip the string: to its closing quote, escapes included.
                loop {
                    let Some(rest) = json.get(i..) else {
                        return Ok(());
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(p) if rest[p] == b'\\' => i += p + 2,
                        Some(p) => {
                            i += p + 1;
                            break;
                        }
                        None => return Ok(()), // unterminated: the parser says so
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(DescriptorError::TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a whole JSON document as a `desc` message; with `field`, the
/// document is the value of that field instead (`body: "field"`).
///
/// The document is parsed without path tracking first; only when that fails is
/// it parsed again with `serde_path_to_error` to find where (errors are rare,
/// tracking costs on every key).
fn parse_message(
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &JsonOptions,
    field: Option<&str>,
) -> Result<DynamicMessage, DescriptorError> {
    check_depth(json, opts.depth_limit())?;
    let options = opts.deserialize_options();
    let seed = || MessageSeed {
        desc,
        options: &options,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = match field {
        None => seed().deserialize(&mut de),
        Some(key) => seed().deserialize(SingleField {
            key,
            inner: &mut de,
        }),
    };
    match result.and_then(|message| de.end().map(|()| message)) {
        Ok(message) => Ok(message),
        Err(_) => Err(locate_error(json, field, seed())),
    }
}

/// Re-parses a document known to be invalid, tracking the path of the error.
fn locate_error(json: &[u8], field: Option<&str>, seed: MessageSeed<'_>) -> DescriptorError {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut track = Track::new();
    let result = match field {
        None => seed.deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track)),
        Some(key) => seed.deserialize(serde_path_to_error::Deserializer::new(
            SingleField {
                key,
                inner: &mut de,
            },
            &mut track,
        )),
    };
    match result {
        Err(e) => json_error(&track.path(), &e),
        Ok(_) => match de.end() {
            Err(e) => json_error(&Track::new().path(), &e),
            // Unreachable in practice: the first parse failed on the same input.
            Ok(()) => DescriptorError::InvalidJson {
                path: String::new(),
                message: "invalid JSON".to_owned(),
            },
        },
    }
}

fn json_error(path: &Path, err: &serde_json::Error) -> DescriptorError {
    let message = err.to_string();
    let mut rendered = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                if !rendered.is_empty() {
                    rendered.push('.');
                }
                rendered.push_str(key);
            }
            Segment::Seq { index } => {
                rendered.push('[');
                rendered.push_str(&index.to_string());
                rendered.push(']');
            }
            Segment::Enum { variant } => rendered.push_str(variant),
            Segment::Unknown => rendered.push('?'),
        }
    }
    // prost-reflect rejects an unknown key after reading it, so the tracked path
    // stops at the enclosing object: add the key.
    if let Some(rest) = message.strip_prefix("unrecognized field name '") {
        let end = rest.rfind("' at line ").or_else(|| rest.rfind('\''));
        if let Some(key) = end.map(|end| &rest[..end]) {
            if !rendered.is_empty() {
                rendered.push('.');
            }
            rendered.push_str(key);
        }
    }
    DescriptorError::InvalidJson {
        path: rendered,
        message,
    }
}

struct MessageSeed<'a> {
    desc: &'a MessageDescriptor,
    options: &'a DeserializeOptions,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = DynamicMessage;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        DynamicMessage::deserialize_with_options(self.desc.clone(), deserializer, self.options)
    }
}

/// A deserializer presenting `{key: <inner document>}` without copying the
/// document (a textual wrapper would let a body like `{}, "other": 1` set
/// other fields).
struct SingleField<'a, D> {
    key: &'a str,
    inner: D,
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for SingleField<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_map(SingleEntry {
            key: Some(self.key),
            value: Some(self.inner),
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct SingleEntry<'a, D> {
    key: Option<&'a str>,
    value: Option<D>,
}

impl<'de, D: de::Deserializer<'de>> MapAccess<'de> for SingleEntry<'_, D> {
    type Error = D::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, D::Error> {
        match self.key.take() {
            Some(key) => seed
                .deserialize(de::value::StrDeserializer::<D::Error>::new(key))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, D::Error> {
        match self.value.take() {
            Some(inner) => seed.deserialize(inner),
            None => Err(de::Error::custom("value requested twice")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.key.is_some()))
    }
}

// === helpers: encoding ===

/// Appends `message`'s encoding to `out`. No `reserve(encoded_len())`
/// first: `encode` computes the length once for its capacity check, and a
/// dynamic message's length is a full walk of it (every nested level is
/// walked again for its length prefix); the `Vec` grows as needed instead.
fn encode(message: &DynamicMessage, out: &mut Vec<u8>) -> Result<(), DescriptorError> {
    message
        .encode(out)
        .map_err(|e| DescriptorError::InvalidProto(e.to_string()))
}

/// Decodes an upstream message, after [`wire::check_nesting`] has bounded
/// its depth (so neither decoding, rendering nor dropping it can exhaust the
/// stack) and its `Any` payloads (so rendering is linear in its size).
fn decode(
    desc: &MessageDescriptor,
    proto: &[u8],
    opts: &JsonOptions,
) -> Result<DynamicMessage, DescriptorError> {
    wire::check_nesting(desc, proto, opts.depth_limit())?;
    DynamicMessage::decode(desc.clone(), proto)
        .map_err(|e| DescriptorError::InvalidProto(e.to_string()))
}

/// Appends `message` as JSON to `out`, at most `opts.max_json_output_bytes`
/// of it; on error `out` is left as it was.
fn write_json(
    message: &DynamicMessage,
    options: &SerializeOptions,
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let start = out.len();
    let mut writer = LimitedWriter {
        out: &mut *out,
        remaining: opts.max_json_output_bytes,
        exceeded: false,
    };
    let result = {
        let mut serializer = serde_json::Serializer::new(&mut writer);
        message.serialize_with_options(&mut serializer, options)
    };
    let exceeded = writer.exceeded;
    result.map_err(|e| {
        out.truncate(start);
        if exceeded {
            DescriptorError::JsonTooLarge {
                max: opts.max_json_output_bytes,
            }
        } else {
            DescriptorError::InvalidProto(e.to_string())
        }
    })
}

/// A `Vec` writer that fails once more than `remaining` bytes are written.
struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    remaining: usize,
    exceeded: bool,
}

impl io::Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() > self.remaining {
            self.exceeded = true;
            return Err(io::Error::other("JSON output limit"));
        }
        self.remaining -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// === helpers: path and query parameters ===

/// Resolves a dotted field path by proto or JSON names. `Ok(None)` when a
/// component does not exist; an error when it exists but cannot be traversed.
///
/// A path of more than `max_depth` components is an error before any lookup
/// (a recursive message would otherwise accept any length, and the message
/// built from it would be as deep).
fn resolve_chain(
    desc: &MessageDescriptor,
    path: &str,
    max_depth: usize,
) -> Result<Option<Vec<FieldDescriptor>>, DescriptorError> {
    if path.split('.').nth(max_depth).is_some() {
        return Err(DescriptorError::invalid_path(
            truncate_path(path),
            format!("field path nests deeper than {max_depth} levels"),
        ));
    }
    let mut chain = Vec::new();
    let mut current = desc.clone();
    let mut parts = path.split('.').peekable();
    while let Some(name) = parts.next() {
        let Some(field) = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
        else {
            return Ok(None);
        };
        if parts.peek().is_some() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() && !is_wkt(&m) => {
                    current = m;
                }
                _ => {
                    return Err(DescriptorError::invalid_path(
                        path,
                        format!("`{name}` is not a singular message field"),
                    ));
                }
            }
        }
        chain.push(field);
    }
    Ok(Some(chain))
}

/// Sets the field at the end of `chain` (creating parents) from a string.
fn set_from_str(
    message: &mut DynamicMessage,
    chain: &[FieldDescriptor],
    path: &str,
    value: &str,
) -> Result<(), DescriptorError> {
    let Some((leaf, parents)) = chain.split_last() else {
        return Err(DescriptorError::invalid_path(path, "empty field path"));
    };
    let target = parent_mut(message, parents, path)?;
    let value = parse_value(&leaf.kind(), value)
        .map_err(|message| DescriptorError::invalid_path(path, message))?;
    if leaf.is_list() {
        match target.get_field_mut(leaf).as_list_mut() {
            Some(list) => list.push(value),
            None => return Err(DescriptorError::invalid_path(path, "not a list")),
        }
        return Ok(());
    }
    target
        .try_set_field(leaf, value)
        .map_err(|e| DescriptorError::invalid_path(path, e.to_string()))
}

fn parent_mut<'m>(
    message: &'m mut DynamicMessage,
    parents: &[FieldDescriptor],
    path: &str,
) -> Result<&'m mut DynamicMessage, DescriptorError> {
    let mut target = message;
    for field in parents {
        target = target
            .get_field_mut(field)
            .as_message_mut()
            .ok_or_else(|| DescriptorError::invalid_path(path, "not a message field"))?;
    }
    Ok(target)
}

/// Converts a path/query string to a value of `kind`.
fn parse_value(kind: &Kind, s: &str) -> Result<Value, String> {
    fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
        s.parse()
            .map_err(|_| format!("`{s}` is not a valid {what}"))
    }
    Ok(match kind {
        Kind::Double => Value::F64(num(s, "double")?),
        Kind::Float => Value::F32(num(s, "float")?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(num(s, "int32")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(num(s, "int64")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(num(s, "uint32")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(num(s, "uint64")?),
        Kind::Bool => Value::Bool(match s {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("`{s}` is not a valid bool")),
        }),
        Kind::String => Value::String(s.to_owned()),
        Kind::Bytes => Value::Bytes(decode_base64(s)?.into()),
        Kind::Enum(e) => match e.get_value_by_name(s) {
            Some(v) => Value::EnumNumber(v.number()),
            None => Value::EnumNumber(
                s.parse()
                    .map_err(|_| format!("`{s}` is not a value of enum `{}`", e.full_name()))?,
            ),
        },
        Kind::Message(m) => Value::Message(parse_wkt(m, s)?),
    })
}

/// Decodes base64 as protobuf's JSON mapping and gRPC's `-bin` metadata
/// accept it: the standard or the URL-safe alphabet, padded or not. The one
/// base64 reader of the project.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .map_err(|e| format!("invalid base64: {e}"))
}

/// Well-known types whose JSON form is a string or scalar, from a string.
fn parse_wkt(desc: &MessageDescriptor, s: &str) -> Result<DynamicMessage, String> {
    match desc.full_name() {
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
            DynamicMessage::deserialize(
                desc.clone(),
                de::value::StrDeserializer::<de::value::Error>::new(s),
            )
            .map_err(|e| format!("invalid {}: {e}", desc.name()))
        }
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => {
            let field = desc
                .get_field_by_name("value")
                .ok_or_else(|| format!("`{}` has no `value` field", desc.full_name()))?;
            let mut message = DynamicMessage::new(desc.clone());
            message
                .try_set_field(&field, parse_value(&field.kind(), s)?)
                .map_err(|e| e.to_string())?;
            Ok(message)
        }
        other => Err(format!(
            "a `{other}` cannot be given as one parameter; set its fields as `field.sub=`"
        )),
    }
}

/// The start of a long parameter name, for error messages (a refused
/// 30 KB name is not echoed back whole).
fn truncate_path(path: &str) -> String {
    const MAX_CHARS: usize = 64;
    match path.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &path[..end]),
        None => path.to_owned(),
    }
}

fn field_numbers(chain: &[FieldDescriptor]) -> Vec<u32> {
    chain.iter().map(FieldDescriptor::number).collect()
}

/// A query parameter: its field chain, its key and its decoded value.
type QueryParam = (Vec<FieldDescriptor>, String, String);

/// Sets the query parameters on `message` (see [`query_params`]); a
/// parameter naming a oneof member while another member is set (by the body
/// or an earlier parameter) is refused.
fn apply_query(
    message: &mut DynamicMessage,
    binding: &HttpBinding,
    query: &str,
    opts: &JsonOptions,
) -> Result<(), DescriptorError> {
    let desc = message.descriptor();
    for (chain, key, value) in query_params(&desc, binding, query, opts)? {
        let Some(leaf) = chain.last() else { continue };
        if let Some(oneof) = leaf.containing_oneof() {
            let parent = parent_mut(message, &chain[..chain.len() - 1], &key)?;
            if oneof
                .fields()
                .any(|f| f.number() != leaf.number() && parent.has_field(&f))
            {
                return Err(DescriptorError::invalid_path(
                    key,
                    format!("another field of oneof `{}` is already set", oneof.name()),
                ));
            }
        }
        set_from_str(message, &chain, &key, &value)?;
    }
    Ok(())
}

/// The query parameters of a `desc` request, checked: at most
/// `MAX_QUERY_PARAMS`, UTF-8 after percent-decoding, known fields (unless
/// `ignore_unknown_fields`), no maps, a non-repeated field at most once;
/// those naming a field bound by the path or the body are left out (the
/// path or the body wins).
fn query_params(
    desc: &MessageDescriptor,
    binding: &HttpBinding,
    query: &str,
    opts: &JsonOptions,
) -> Result<Vec<QueryParam>, DescriptorError> {
    let mut params = Vec::new();
    // Field-number paths bound by the path template or the body field.
    let mut bound: Vec<Vec<u32>> = binding
        .path_fields
        .iter()
        .map(|(_, chain)| field_numbers(chain))
        .collect();
    if let Some(field) = &binding.body_field {
        bound.push(vec![field.number()]);
    }
    let mut seen: HashSet<Vec<u32>> = HashSet::new();

    if query
        .split('&')
        .filter(|p| !p.is_empty())
        .nth(MAX_QUERY_PARAMS)
        .is_some()
    {
        return Err(DescriptorError::invalid_path(
            "",
            format!("more than {MAX_QUERY_PARAMS} query parameters"),
        ));
    }
    let max_depth = opts.depth_limit();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key, false, true)
            .ok_or_else(|| DescriptorError::invalid_path(raw_key, "not UTF-8"))?;
        let value = percent_decode(raw_value, false, true)
            .ok_or_else(|| DescriptorError::invalid_path(&key, "value is not UTF-8"))?;

        let chain = match resolve_chain(desc, &key, max_depth) {
            Ok(Some(chain)) => chain,
            Ok(None) if opts.ignore_unknown_fields => continue,
            Ok(None) => return Err(DescriptorError::invalid_path(key, "unknown field")),
            Err(e) => return Err(e),
        };
        let numbers = field_numbers(&chain);
        if bound
            .iter()
            .any(|b| b.starts_with(&numbers) || numbers.starts_with(b))
        {
            continue; // the path or the body wins
        }
        let Some(leaf) = chain.last() else {
            continue;
        };
        if leaf.is_map() {
            return Err(DescriptorError::invalid_path(
                key,
                "map fields cannot be set from the query",
            ));
        }
        if !leaf.is_list() && !seen.insert(numbers) {
            return Err(DescriptorError::invalid_path(
                key,
                "repeated parameter for a non-repeated field",
            ));
        }
        params.push((chain, key, value));
    }
    Ok(params)
}

// === helpers: status details ===

fn status_details(pool: &DescriptorPool, bytes: &[u8]) -> Vec<serde_json::Value> {
    let Some(desc) = pool.get_message_by_name("google.rpc.Status") else {
        return Vec::new();
    };
    let opts = JsonOptions {
        max_json_output_bytes: MAX_STATUS_DETAILS_JSON_BYTES,
        ..JsonOptions::default()
    };
    let Ok(status) = decode(&desc, bytes, &opts) else {
        return Vec::new();
    };
    let Some(details) = status.get_field_by_name("details") else {
        return Vec::new();
    };
    let mut budget = MAX_STATUS_DETAILS_JSON_BYTES;
    let mut rendered = Vec::new();
    for any in details
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_message)
    {
        let Some((json, len)) = render_any(pool, any, budget) else {
            return Vec::new();
        };
        budget -= len;
        rendered.push(json);
    }
    rendered
}

/// One `google.protobuf.Any` in proto3 JSON, resolving its type in `pool` by
/// the part of the type URL after the last `/`, and the length of its JSON
/// payload; `None` when longer than `budget` bytes. (Its depth was checked
/// with the whole status.)
fn render_any(
    pool: &DescriptorPool,
    any: &DynamicMessage,
    budget: usize,
) -> Option<(serde_json::Value, usize)> {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let value = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let name = type_url.rsplit('/').next().unwrap_or_default();
    let opts = JsonOptions {
        max_json_output_bytes: budget,
        ..JsonOptions::default()
    };
    let mut text = Vec::new();
    let rendered = pool.get_message_by_name(name).and_then(|desc| {
        proto_to_json(&desc, value.as_ref(), &opts, &mut text).ok()?;
        let json = serde_json::from_slice::<serde_json::Value>(&text).ok()?;
        Some((is_wkt(&desc), json))
    });
    let (json, len) = match rendered {
        Some((false, serde_json::Value::Object(mut fields))) => {
            fields.insert("@type".to_owned(), type_url.into());
            (serde_json::Value::Object(fields), text.len())
        }
        Some((_, json)) => (
            serde_json::json!({ "@type": type_url, "value": json }),
            text.len(),
        ),
        None => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
            let len = encoded.len();
            (
                serde_json::json!({ "@type": type_url, "value": encoded }),
                len,
            )
        }
    };
    (len <= budget).then_some((json, len))
}
