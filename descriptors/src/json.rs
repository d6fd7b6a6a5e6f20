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
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, SerializeOptions, Value,
};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_path_to_error::{Path, Segment, Track};

use crate::{
    codec::{Card, Codec, FieldPlan, Program, Ty, Wkt, from_json, nesting, scan, to_json},
    error::DescriptorError,
    http_rule::{BodySpec, HttpBinding, HttpMatch},
    index::MethodInfo,
    template::percent_decode,
    wire::{self, MAX_MESSAGE_NESTING},
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
    pub(crate) fn depth_limit(&self) -> usize {
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
    let root = codec.root(desc.full_name());
    parse_with(&codec, root, Desc::Given(desc), json, opts, out)
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
        plans.input,
        Desc::Input(method),
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
    root: u32,
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
    if codec_read(codec, root, text, opts, out, Reader::Scan) {
        return true;
    }
    out.truncate(start);
    false
}

/// A reader of the codec: the scanner (what requests use), or serde_json
/// driving `from_json`'s seeds alone (the scanner's reference in tests).
#[derive(Clone, Copy)]
enum Reader {
    Scan,
    Serde,
}

/// Appends `text` read as message `root` by `reader` to `out`; false when
/// refused (`out` then part-written).
fn codec_read(
    codec: &Codec,
    root: u32,
    text: &str,
    opts: &JsonOptions,
    out: &mut Vec<u8>,
    reader: Reader,
) -> bool {
    let segments = std::cell::RefCell::new(SEGMENTS.take());
    let ctx = from_json::Ctx {
        codec,
        prog: codec.program(),
        deny_unknown: !opts.ignore_unknown_fields,
        segments: &segments,
        depth_left: opts.depth_limit(),
    };
    let read = match reader {
        Reader::Scan => scan::document(ctx, root, text, out).is_ok(),
        Reader::Serde => {
            let seed = from_json::MessageSeed {
                ctx,
                m: root,
                buf: out,
            };
            let mut de = serde_json::Deserializer::from_str(text);
            seed.deserialize(&mut de).and_then(|()| de.end()).is_ok()
        }
    };
    let mut segments = segments.into_inner();
    if segments.capacity() <= MAX_KEPT_SEGMENTS {
        segments.clear();
        SEGMENTS.set(segments);
    }
    read
}

thread_local! {
    /// The segment stack of the last document read on this thread, kept
    /// for the next (a document whose keys come out of field order
    /// allocated one each time: an eighth of reading a small one).
    static SEGMENTS: std::cell::Cell<Vec<(u16, usize, usize)>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest segment stack kept between documents (24 bytes an entry).
const MAX_KEPT_SEGMENTS: usize = 1024;

/// What the codec's scanner and its serde reader give one document: the
/// encoding each writes, `None` where one refuses it.
#[doc(hidden)]
pub type ReadersOutput = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The encodings the codec's two readers give `json` as a `desc` message,
/// for differential tests; `None` when the codec leaves the type to
/// prost-reflect or the text is not UTF-8.
#[doc(hidden)]
pub fn codec_readers(
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &JsonOptions,
) -> Option<ReadersOutput> {
    let codec = Codec::for_pool(desc.parent_pool());
    let root = codec.root(desc.full_name())?;
    let text = std::str::from_utf8(json).ok()?;
    let read = |reader| {
        let mut out = Vec::new();
        codec_read(&codec, root, text, opts, &mut out, reader).then_some(out)
    };
    Some((read(Reader::Scan), read(Reader::Serde)))
}

/// JSON -> wire with `program` (the plan of `desc`), else the prost-reflect
/// reader.
fn parse_with(
    codec: &Codec,
    root: Option<u32>,
    desc: Desc<'_>,
    json: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    if is_blank(json) {
        return Ok(());
    }
    if let Some(root) = root
        && codec_parse(codec, root, json, opts, out)
    {
        return Ok(());
    }
    // Refused (too deep, or an `Any` whose `@type` is not first): the
    // prost-reflect reader says why, with the JSON path, exactly as before
    // (its depth pre-scan first).
    match desc {
        Desc::Input(method) if root.is_some() => own_files_first(codec, method, |desc| {
            let start = out.len();
            legacy::json_to_proto(desc, json, opts, out).inspect_err(|_| out.truncate(start))
        }),
        desc => legacy::json_to_proto(&desc.get()?, json, opts, out),
    }
}

/// Runs the prost-reflect reader `read` with the request type of a pool of
/// the method's own file and its imports (built in under a millisecond and
/// kept until idle), and again with the whole pool only when it failed for
/// want of a type defined elsewhere (an `Any`'s type, an extension) that
/// the registry has: the whole pool's answer, without building it for every
/// refused request (a build takes as long as decoding every registered set,
/// on the request's thread).
fn own_files_first(
    codec: &Codec,
    method: &MethodInfo,
    mut read: impl FnMut(&MessageDescriptor) -> Result<(), DescriptorError>,
) -> Result<(), DescriptorError> {
    match read(&method.input_of_own_files()?) {
        Err(e) if wants_other_files(codec, &e) => read(&method.input()?),
        result => result,
    }
}

/// Whether prost-reflect's error `e` names a message type the registry has
/// (`message 'T' not found`: an `Any`'s type) or an extension
/// (`unrecognized field name '[x.y]'`): a pool of more files may accept it.
fn wants_other_files(codec: &Codec, e: &DescriptorError) -> bool {
    let text = e.to_string();
    let quoted = |after: &str, before: &str| {
        let start = text.find(after)? + after.len();
        let len = text[start..].find(before)?;
        Some(text[start..start + len].to_owned())
    };
    quoted("message '", "' not found").is_some_and(|name| codec.find(&name).is_some())
        || quoted("unrecognized field name '[", "]'").is_some()
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
/// is not a singular message, a type the plans do not cover, a body or a
/// parameter value the codec refuses (the legacy reader then names the
/// error), a query parameter in a oneof (whether another member is set
/// depends on the body), a message-typed parameter other than a wrapper,
/// Timestamp, Duration or FieldMask.
fn params_to_wire(
    m: &HttpMatch,
    body: &[u8],
    query: Option<&str>,
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<bool, DescriptorError> {
    let binding = &*m.binding;
    let plans = m.method.plans();
    let codec = &*plans.codec;
    let prog = codec.program();
    let Some(root) = plans.input else {
        return Ok(false);
    };
    match (&binding.body, binding.body_field) {
        (BodySpec::Whole, _) if !is_blank(body) && !codec_parse(codec, root, body, opts, out) => {
            return Ok(false);
        }
        (BodySpec::Field(_), Some(number)) if !is_blank(body) => {
            let plan = &prog.messages[root as usize];
            let Some(field) = plan.slot(number).map(|slot| &plan.fields[slot]) else {
                return Ok(false);
            };
            let Ty::Message(inner) = field.ty else {
                return Ok(false);
            };
            if field.card != Card::Explicit || prog.messages[inner as usize].unsupported_within {
                return Ok(false);
            }
            let mut value = Vec::with_capacity(body.len());
            if !codec_parse(codec, inner, body, opts, &mut value) {
                return Ok(false);
            }
            wire_len_field(number, &value, out);
        }
        (BodySpec::Field(_), None) if !is_blank(body) => return Ok(false),
        _ => {}
    }
    for (path, value) in &m.path_params {
        let chain = match binding.path_fields.iter().find(|(p, _)| p == path) {
            Some((_, numbers)) => chain_of_numbers(prog, root, numbers),
            None => resolve_chain(prog, root, path, opts.depth_limit())?,
        };
        let Some(chain) = chain else {
            return Ok(false);
        };
        if !param_to_wire(codec, &chain, path, value, out)? {
            return Ok(false);
        }
    }
    if let Some(query) = query {
        let params = query_params(prog, root, binding, query, opts)?;
        if params
            .iter()
            .any(|(chain, _, _)| field_at(prog, chain).is_some_and(|f| f.oneof.is_some()))
        {
            return Ok(false);
        }
        for (chain, key, value) in &params {
            if !param_to_wire(codec, chain, key, value, out)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// One parameter as wire bytes: the leaf's value (converted as
/// [`parse_value`] does), wrapped in each parent message field. `Ok(false)`
/// when the value needs the prost-reflect path (see [`params_to_wire`]).
fn param_to_wire(
    codec: &Codec,
    chain: &[FieldRef],
    path: &str,
    value: &str,
    out: &mut Vec<u8>,
) -> Result<bool, DescriptorError> {
    let prog = codec.program();
    let Some((leaf, parents)) = chain.split_last() else {
        return Err(DescriptorError::invalid_path(path, "empty field path"));
    };
    let Some(leaf) = field_at(prog, std::slice::from_ref(leaf)) else {
        return Ok(false);
    };
    let mut field = Vec::new();
    match encode_param(codec, leaf.number, leaf.ty, value, &mut field) {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(message) => return Err(DescriptorError::invalid_path(path, message)),
    }
    for parent in parents.iter().rev() {
        let Some(parent) = field_at(prog, std::slice::from_ref(parent)) else {
            return Ok(false);
        };
        let mut wrapped = Vec::with_capacity(field.len() + 6);
        wire_len_field(parent.number, &field, &mut wrapped);
        field = wrapped;
    }
    out.extend_from_slice(&field);
    Ok(true)
}

/// Field `n` of type `ty` = the parameter string `s`, as one wire field
/// (tag and value, whatever the value), with [`parse_value`]'s conversions
/// and error messages. `Ok(false)`: a message type the codec does not
/// convert from one string here (the prost-reflect path names the error).
fn encode_param(codec: &Codec, n: u32, ty: Ty, s: &str, out: &mut Vec<u8>) -> Result<bool, String> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
        s.parse()
            .map_err(|_| format!("`{s}` is not a valid {what}"))
    }
    let varint = |v: u64, out: &mut Vec<u8>| {
        encode_key(n, WireType::Varint, out);
        encode_varint(v, out);
    };
    let fixed64 = |bytes: [u8; 8], out: &mut Vec<u8>| {
        encode_key(n, WireType::SixtyFourBit, out);
        out.extend_from_slice(&bytes);
    };
    let fixed32 = |bytes: [u8; 4], out: &mut Vec<u8>| {
        encode_key(n, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&bytes);
    };
    match ty {
        Ty::Double => fixed64(num::<f64>(s, "double")?.to_le_bytes(), out),
        Ty::Float => fixed32(num::<f32>(s, "float")?.to_le_bytes(), out),
        Ty::Int32 => varint(i64::from(num::<i32>(s, "int32")?) as u64, out),
        Ty::Sint32 => {
            let v: i32 = num(s, "int32")?;
            varint(u64::from(((v << 1) ^ (v >> 31)) as u32), out);
        }
        Ty::Sfixed32 => fixed32(num::<i32>(s, "int32")?.to_le_bytes(), out),
        Ty::Int64 => varint(num::<i64>(s, "int64")? as u64, out),
        Ty::Sint64 => {
            let v: i64 = num(s, "int64")?;
            varint(((v << 1) ^ (v >> 63)) as u64, out);
        }
        Ty::Sfixed64 => fixed64(num::<i64>(s, "int64")?.to_le_bytes(), out),
        Ty::Uint32 => varint(u64::from(num::<u32>(s, "uint32")?), out),
        Ty::Fixed32 => fixed32(num::<u32>(s, "uint32")?.to_le_bytes(), out),
        Ty::Uint64 => varint(num::<u64>(s, "uint64")?, out),
        Ty::Fixed64 => fixed64(num::<u64>(s, "uint64")?.to_le_bytes(), out),
        Ty::Bool => varint(
            match s {
                "true" | "1" => 1,
                "false" | "0" => 0,
                _ => return Err(format!("`{s}` is not a valid bool")),
            },
            out,
        ),
        Ty::String => wire_len_field(n, s.as_bytes(), out),
        Ty::Bytes => wire_len_field(n, &decode_base64(s)?, out),
        Ty::Enum(e) => {
            let plan = &codec.program().enums[e as usize];
            let number = match plan.number(s) {
                Some(v) => v,
                None => s
                    .parse()
                    .map_err(|_| format!("`{s}` is not a value of enum `{}`", plan.full_name()))?,
            };
            varint(i64::from(number) as u64, out);
        }
        Ty::Message(m) => {
            let mut value = Vec::new();
            let inner = match codec.program().messages[m as usize].wkt {
                Some(Wkt::DoubleValue) => Ty::Double,
                Some(Wkt::FloatValue) => Ty::Float,
                Some(Wkt::Int64Value) => Ty::Int64,
                Some(Wkt::UInt64Value) => Ty::Uint64,
                Some(Wkt::Int32Value) => Ty::Int32,
                Some(Wkt::UInt32Value) => Ty::Uint32,
                Some(Wkt::BoolValue) => Ty::Bool,
                Some(Wkt::StringValue) => Ty::String,
                Some(Wkt::BytesValue) => Ty::Bytes,
                Some(Wkt::Timestamp | Wkt::Duration | Wkt::FieldMask) => {
                    // Their JSON form is this string.
                    let mut json = Vec::with_capacity(s.len() + 2);
                    to_json::write_str(&mut json, s);
                    if !codec_parse(codec, m, &json, &JsonOptions::default(), &mut value) {
                        return Ok(false);
                    }
                    wire_len_field(n, &value, out);
                    return Ok(true);
                }
                _ => return Ok(false),
            };
            let mut field = Vec::new();
            encode_param(codec, 1, inner, s, &mut field)?;
            // The wrapper's `value` is written only when not its default,
            // as a message encoder does.
            if !is_default_scalar(inner, &field) {
                value = field;
            }
            wire_len_field(n, &value, out);
        }
    }
    Ok(true)
}

/// Whether `field` (one encoded field 1 of type `ty`) holds the default value.
fn is_default_scalar(ty: Ty, field: &[u8]) -> bool {
    let value = field.get(1..).unwrap_or_default();
    match ty {
        Ty::Double => value.try_into().is_ok_and(|b| f64::from_le_bytes(b) == 0.0),
        Ty::Float => value.try_into().is_ok_and(|b| f32::from_le_bytes(b) == 0.0),
        // A length of 0, or a varint of 0.
        _ => value == [0],
    }
}

/// A length-delimited field `number` holding `bytes`.
fn wire_len_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
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
    let field = binding.and_then(|b| b.response_field);
    let plans = method.plans();
    render_with(
        &plans.codec,
        plans.output,
        Desc::Output(method),
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
    field: Option<u32>,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    let codec = Codec::for_pool(desc.parent_pool());
    let root = codec.root(desc.full_name());
    render_with(&codec, root, Desc::Given(desc), field, proto, opts, out)
}

/// [`render`] with the codec and plan at hand.
fn render_with(
    codec: &Codec,
    root: Option<u32>,
    desc: Desc<'_>,
    field: Option<u32>,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), DescriptorError> {
    // A whole message of a type seen before: written with no pre-pass
    // unless the writer stops where the pre-pass would judge the bytes.
    if let (Some(root), None) = (root, field)
        && to_json::write_unchecked(codec, root, proto, opts, out).is_some()
    {
        return Ok(());
    }
    // The depth and `Any` bounds, on the bytes before anything recursive.
    let messages = match root {
        Some(root) => nesting::check_nesting(codec, root, proto, opts.depth_limit())?,
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
        None => wire::check_nesting(&desc.get()?, proto, opts.depth_limit())?,
    }
    let start = out.len();
    let result = match root {
        Some(root) => {
            let mut writer = to_json::Writer::new(codec, opts, out);
            match field {
                Some(field) => writer.field_value(codec.program(), root, field, proto),
                None => writer.message(codec.program(), root, &[proto]),
            }
        }
        None => Err(to_json::Stop::Unsupported),
    };
    match result {
        Ok(()) => {
            if let (Some(root), None) = (root, field) {
                let plan = &codec.program().messages[root as usize];
                plan.learn_json_size(proto.len(), out.len() - start);
            }
            Ok(())
        }
        Err(stop) => {
            out.truncate(start);
            match stop {
                to_json::Stop::TooLarge => Err(DescriptorError::JsonTooLarge {
                    max: opts.max_json_output_bytes,
                }),
                to_json::Stop::Invalid(message) => Err(DescriptorError::InvalidProto(message)),
                // Only an unchecked writer stops so.
                to_json::Stop::Recheck => Err(DescriptorError::InvalidProto(
                    "failed to decode Protobuf message".to_owned(),
                )),
                to_json::Stop::Unsupported => {
                    legacy::response_to_json_inner(&desc.get()?, field, proto, opts, out)
                }
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
        let plans = m.method.plans();
        // The method's own files first, unless the type is one the codec
        // does not cover (extensions may be defined anywhere).
        if plans.input.is_some() {
            return own_files_first(&plans.codec, &m.method, |desc| {
                build_with(m, desc, body, query, opts, out)
            });
        }
        build_with(m, &m.method.input()?, body, query, opts, out)
    }

    /// [`build_request`] with the request type `desc`; `out` as it was on
    /// an error.
    fn build_with(
        m: &HttpMatch,
        desc: &MessageDescriptor,
        body: &[u8],
        query: Option<&str>,
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        let binding = &*m.binding;
        let plans = m.method.plans();
        let prog = plans.codec.program();
        let root = plans.input_type();
        let query = query.filter(|q| !q.is_empty() && binding.body != BodySpec::Whole);
        let mut message = match &binding.body {
            BodySpec::Whole if !is_blank(body) => parse_message(desc, body, opts, None)?,
            BodySpec::Field(field) if !is_blank(body) => {
                parse_message(desc, body, opts, Some(field))?
            }
            _ => DynamicMessage::new(desc.clone()),
        };

        for (path, value) in &m.path_params {
            let numbers = match binding.path_fields.iter().find(|(p, _)| p == path) {
                Some((_, numbers)) => numbers.clone(),
                None => resolve_chain(prog, root, path, opts.depth_limit())?
                    .map(|chain| numbers_of(prog, &chain))
                    .ok_or_else(|| DescriptorError::invalid_path(path, "no such field"))?,
            };
            let chain = descriptor_chain(desc, &numbers)
                .ok_or_else(|| DescriptorError::invalid_path(path, "no such field"))?;
            set_from_str(&mut message, &chain, path, value)?;
        }

        if let Some(query) = query {
            apply_query(&mut message, prog, root, binding, query, opts)?;
        }
        encode(&message, out)
    }

    /// [`super::response_to_json`] through a `DynamicMessage`.
    pub fn response_to_json(
        method: &MethodInfo,
        binding: Option<&HttpBinding>,
        proto: &[u8],
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        let field = binding.and_then(|b| b.response_field);
        response_to_json_inner(&method.output()?, field, proto, opts, out)
    }

    /// [`super::response_to_json`]'s rendering of `response_body` field
    /// `field` (the whole message when none) through a `DynamicMessage`.
    pub(super) fn response_to_json_inner(
        output: &MessageDescriptor,
        field: Option<u32>,
        proto: &[u8],
        opts: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), DescriptorError> {
        let Some(field) = field.and_then(|n| output.get_field(n)) else {
            return proto_to_json(output, proto, opts, out);
        };
        let field = &field;
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
    codec: &Codec,
    code: i32,
    message: &str,
    details_bin: Option<&[u8]>,
) -> serde_json::Value {
    let details = details_bin
        .map(|bytes| status_details(codec, bytes))
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

/// A field of the codec's plans: `(message index, slot)`.
type FieldRef = (u32, u16);

/// The field at the end of `chain`.
fn field_at<'p>(prog: &'p Program, chain: &[FieldRef]) -> Option<&'p FieldPlan> {
    let &(m, slot) = chain.last()?;
    prog.messages.get(m as usize)?.fields.get(slot as usize)
}

/// Resolves a dotted field path from message `root` (proto names, then
/// JSON names): every part but the last a singular message field that is
/// not a well-known type. `Ok(None)` when a part names no field.
fn resolve_chain(
    prog: &Program,
    root: u32,
    path: &str,
    max_depth: usize,
) -> Result<Option<Vec<FieldRef>>, DescriptorError> {
    if path.split('.').nth(max_depth).is_some() {
        return Err(DescriptorError::invalid_path(
            truncate_path(path),
            format!("field path nests deeper than {max_depth} levels"),
        ));
    }
    let mut chain = Vec::new();
    let mut current = root;
    let mut parts = path.split('.').peekable();
    while let Some(name) = parts.next() {
        let plan = &prog.messages[current as usize];
        let Some(slot) = plan.field_by_proto_name(name) else {
            return Ok(None);
        };
        chain.push((current, slot));
        if parts.peek().is_some() {
            let field = &plan.fields[slot as usize];
            match field.ty {
                Ty::Message(m)
                    if field.card == Card::Explicit && prog.messages[m as usize].wkt.is_none() =>
                {
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
    }
    Ok(Some(chain))
}

/// The chain of field numbers `numbers` from message `root` (a path
/// template's variable, resolved when the rule was compiled).
fn chain_of_numbers(prog: &Program, root: u32, numbers: &[u32]) -> Option<Vec<FieldRef>> {
    let mut chain = Vec::with_capacity(numbers.len());
    let mut current = root;
    for (i, &number) in numbers.iter().enumerate() {
        let plan = prog.messages.get(current as usize)?;
        let slot = plan.slot(number)?;
        chain.push((current, slot as u16));
        if i + 1 < numbers.len() {
            let Ty::Message(m) = plan.fields[slot].ty else {
                return None;
            };
            current = m;
        }
    }
    Some(chain)
}

/// The field numbers of `chain`.
fn numbers_of(prog: &Program, chain: &[FieldRef]) -> Vec<u32> {
    chain
        .iter()
        .filter_map(|r| field_at(prog, std::slice::from_ref(r)).map(|f| f.number))
        .collect()
}

/// The descriptors of the field numbers `numbers` from `desc`.
fn descriptor_chain(desc: &MessageDescriptor, numbers: &[u32]) -> Option<Vec<FieldDescriptor>> {
    let mut chain = Vec::with_capacity(numbers.len());
    let mut current = desc.clone();
    for (i, &number) in numbers.iter().enumerate() {
        let field = current.get_field(number)?;
        if i + 1 < numbers.len() {
            current = field.kind().as_message()?.clone();
        }
        chain.push(field);
    }
    Some(chain)
}

/// Where the prost-reflect path finds a message type's descriptor: given,
/// or a method's (from the registry's pool, built if not cached).
#[derive(Clone, Copy)]
enum Desc<'a> {
    Given(&'a MessageDescriptor),
    Input(&'a MethodInfo),
    Output(&'a MethodInfo),
}

impl Desc<'_> {
    fn get(self) -> Result<MessageDescriptor, DescriptorError> {
        match self {
            Desc::Given(desc) => Ok(desc.clone()),
            Desc::Input(method) => method.input(),
            Desc::Output(method) => method.output(),
        }
    }
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

/// A query parameter: its field chain, its key and its decoded value.
type QueryParam = (Vec<FieldRef>, String, String);

/// Sets the query parameters on `message` (see [`query_params`]); a
/// parameter naming a oneof member while another member is set (by the body
/// or an earlier parameter) is refused.
fn apply_query(
    message: &mut DynamicMessage,
    prog: &Program,
    root: u32,
    binding: &HttpBinding,
    query: &str,
    opts: &JsonOptions,
) -> Result<(), DescriptorError> {
    let desc = message.descriptor();
    for (chain, key, value) in query_params(prog, root, binding, query, opts)? {
        let chain = descriptor_chain(&desc, &numbers_of(prog, &chain))
            .ok_or_else(|| DescriptorError::invalid_path(&key, "unknown field"))?;
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

/// The query parameters of a request of message `root`, checked: at most
/// `MAX_QUERY_PARAMS`, UTF-8 after percent-decoding, known fields (unless
/// `ignore_unknown_fields`), no maps, a non-repeated field at most once;
/// those naming a field bound by the path or the body are left out (the
/// path or the body wins).
fn query_params(
    prog: &Program,
    root: u32,
    binding: &HttpBinding,
    query: &str,
    opts: &JsonOptions,
) -> Result<Vec<QueryParam>, DescriptorError> {
    let mut params = Vec::new();
    // Field-number paths bound by the path template or the body field.
    let mut bound: Vec<&[u32]> = binding
        .path_fields
        .iter()
        .map(|(_, numbers)| numbers.as_slice())
        .collect();
    if let Some(field) = &binding.body_field {
        bound.push(std::slice::from_ref(field));
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

        let chain = match resolve_chain(prog, root, &key, max_depth) {
            Ok(Some(chain)) => chain,
            Ok(None) if opts.ignore_unknown_fields => continue,
            Ok(None) => return Err(DescriptorError::invalid_path(key, "unknown field")),
            Err(e) => return Err(e),
        };
        let numbers = numbers_of(prog, &chain);
        if bound
            .iter()
            .any(|b| b.starts_with(&numbers) || numbers.starts_with(b))
        {
            continue; // the path or the body wins
        }
        let Some(leaf) = field_at(prog, &chain) else {
            continue;
        };
        if leaf.card == Card::Map {
            return Err(DescriptorError::invalid_path(
                key,
                "map fields cannot be set from the query",
            ));
        }
        if leaf.card != Card::Repeated && !seen.insert(numbers) {
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

/// `google.rpc.Status`, as the codec's caller sees it: the details are
/// rendered one by one (an unknown type as base64).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

fn status_details(codec: &Codec, bytes: &[u8]) -> Vec<serde_json::Value> {
    use prost::Message as _;
    let Some(root) = codec.find("google.rpc.Status") else {
        return Vec::new();
    };
    // The depth and `Any` bounds, on the bytes before anything is decoded.
    if nesting::check_nesting(codec, root, bytes, DEFAULT_MAX_DEPTH).is_err() {
        return Vec::new();
    }
    let Ok(status) = RpcStatus::decode(bytes) else {
        return Vec::new();
    };
    let mut budget = MAX_STATUS_DETAILS_JSON_BYTES;
    let mut rendered = Vec::new();
    for any in &status.details {
        let Some((json, len)) = render_any(codec, any, budget) else {
            return Vec::new();
        };
        budget -= len;
        rendered.push(json);
    }
    rendered
}

/// One `google.protobuf.Any` in proto3 JSON, resolving its type by the part
/// of the type URL after the last `/`, and the length of its JSON payload;
/// `None` when longer than `budget` bytes. (Its depth was checked with the
/// whole status.)
fn render_any(
    codec: &Codec,
    any: &prost_types::Any,
    budget: usize,
) -> Option<(serde_json::Value, usize)> {
    let type_url = &any.type_url;
    let name = type_url.rsplit('/').next().unwrap_or_default();
    let opts = JsonOptions {
        max_json_output_bytes: budget,
        ..JsonOptions::default()
    };
    let mut text = Vec::new();
    let rendered = codec.root(name).and_then(|m| {
        to_json::Writer::new(codec, &opts, &mut text)
            .message(codec.program(), m, &[&any.value])
            .ok()?;
        let json = serde_json::from_slice::<serde_json::Value>(&text).ok()?;
        Some((codec.program().messages[m as usize].wkt.is_some(), json))
    });
    let (json, len) = match rendered {
        Some((false, serde_json::Value::Object(mut fields))) => {
            fields.insert("@type".to_owned(), type_url.as_str().into());
            (serde_json::Value::Object(fields), text.len())
        }
        Some((_, json)) => (
            serde_json::json!({ "@type": type_url, "value": json }),
            text.len(),
        ),
        None => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&any.value);
            let len = encoded.len();
            (
                serde_json::json!({ "@type": type_url, "value": encoded }),
                len,
            )
        }
    };
    (len <= budget).then_some((json, len))
}
