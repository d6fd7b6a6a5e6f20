//! A pre-pass over protobuf wire bytes (protobuf encoding spec:
//! <https://protobuf.dev/programming-guides/encoding/>) that measures how deep
//! a message nests before anything recursive touches it.
//!
//! prost-reflect decodes, renders and drops messages recursively, and decodes
//! each `google.protobuf.Any` payload with a fresh recursion budget, so a
//! hostile reply (an `Any` nested 20,000 deep, a deep `Struct`) would overflow
//! the stack or multiply the work by the depth. [`check_nesting`] walks the
//! bytes iteratively with an explicit stack: tag, varint, length-delimited,
//! descending into fields whose type is a message (through `Any` payloads,
//! resolved in the descriptor's pool, and groups), and refuses the message
//! when it nests deeper than the limits, or when its `Any` payloads add up to
//! much more than the message itself.

use prost_reflect::{Kind, MessageDescriptor};

use crate::error::DescriptorError;

/// Most message levels (fields of message type, groups, `Any` payloads)
/// nested inside one another, counted across `Any` levels: prost's own
/// recursion limit for one decode, which prost-reflect resets at every `Any`.
pub const MAX_MESSAGE_NESTING: usize = 100;

/// `Any` payloads may add up to this many times the message's length (each
/// level of nested `Any` is decoded again when rendered, so the work and the
/// memory of rendering grow with the sum of the payload lengths).
pub const MAX_ANY_EXPANSION: usize = 4;

/// Allowance, in bytes, for `Any` payloads on top of [`MAX_ANY_EXPANSION`]
/// times the message length (so small messages with a few `Any` pass).
pub const ANY_ALLOWANCE_BYTES: usize = 1024 * 1024;

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_START_GROUP: u64 = 3;
const WIRE_END_GROUP: u64 = 4;
const WIRE_FIXED32: u64 = 5;

/// One message being scanned.
struct Frame<'a> {
    /// `None` for an unknown group (its fields are all unknown).
    desc: Option<MessageDescriptor>,
    /// Bytes of this message not scanned yet. A group shares its parent's
    /// buffer: the parent's rest moves into the group and back at its end.
    rest: &'a [u8],
    /// The field number when this frame is a group (ends at END_GROUP).
    group: Option<u32>,
    /// Nesting of this level in the JSON rendering.
    json_depth: usize,
    /// Stack index of the innermost `Any` payload this frame is part of.
    any_root: Option<usize>,
}

/// Running totals of one scan.
struct Scan {
    max_depth: usize,
    any_budget: usize,
    any_bytes: usize,
}

/// Refuses `bytes` (a `desc` message) when it nests deeper than `max_depth`
/// JSON levels or [`MAX_MESSAGE_NESTING`] message levels, or when its `Any`
/// payloads add up to more than the [`MAX_ANY_EXPANSION`] budget; malformed
/// wire data is [`DescriptorError::InvalidProto`]. Iterative: the stack is a
/// `Vec` bounded by the nesting limit, and each byte is read once (an `Any`'s
/// own fields twice).
///
/// Malformed bytes inside an `Any` payload end the scan of that payload only:
/// rendering decodes each payload on its own and fails on them without going
/// deeper, and `google.rpc.Status` details render such a payload as base64.
pub(crate) fn check_nesting(
    desc: &MessageDescriptor,
    bytes: &[u8],
    max_depth: usize,
) -> Result<(), DescriptorError> {
    let mut scan = Scan {
        max_depth,
        any_budget: bytes
            .len()
            .saturating_mul(MAX_ANY_EXPANSION)
            .saturating_add(ANY_ALLOWANCE_BYTES),
        any_bytes: 0,
    };
    let mut stack = vec![Frame {
        desc: Some(desc.clone()),
        rest: bytes,
        group: None,
        json_depth: 1,
        any_root: None,
    }];
    while !stack.is_empty() {
        match scan.step(&mut stack) {
            Ok(()) => {}
            Err(DescriptorError::InvalidProto(message)) => {
                match stack.last().and_then(|frame| frame.any_root) {
                    Some(root) => stack.truncate(root),
                    None => return Err(DescriptorError::InvalidProto(message)),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// === impl Scan ===

impl Scan {
    /// Reads one field of the innermost message, or ends it.
    fn step(&mut self, stack: &mut Vec<Frame<'_>>) -> Result<(), DescriptorError> {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        if frame.rest.is_empty() {
            if frame.group.is_some() {
                return Err(malformed("group without its end"));
            }
            stack.pop();
            return Ok(());
        }
        let any_root = frame.any_root;
        let key = read_varint(&mut frame.rest)?;
        let number = field_number(key)?;
        let child = match key & 7 {
            WIRE_VARINT => {
                read_varint(&mut frame.rest)?;
                None
            }
            WIRE_FIXED64 => {
                take(&mut frame.rest, 8)?;
                None
            }
            WIRE_FIXED32 => {
                take(&mut frame.rest, 4)?;
                None
            }
            WIRE_LEN => {
                let len = read_len(&mut frame.rest)?;
                let body = take(&mut frame.rest, len)?;
                let Some(field) = frame.desc.as_ref().and_then(|d| d.get_field(number)) else {
                    return Ok(());
                };
                let Kind::Message(child) = field.kind() else {
                    return Ok(());
                };
                let step = json_step(frame.desc.as_ref(), field.is_list(), &child);
                let json_depth = frame.json_depth + step;
                if child.full_name() == "google.protobuf.Any" {
                    match any_payload(&child, body)? {
                        Some((payload_desc, payload)) => {
                            self.any_bytes = self.any_bytes.saturating_add(payload.len());
                            if self.any_bytes > self.any_budget {
                                return Err(DescriptorError::AnyTooLarge {
                                    max: self.any_budget,
                                });
                            }
                            // The Any is one object; a plain message's fields
                            // are merged into it, a well-known type is its "value".
                            let inner = if is_wkt(&payload_desc) {
                                json_step(None, false, &payload_desc)
                            } else {
                                0
                            };
                            Some(Frame {
                                desc: Some(payload_desc),
                                rest: payload,
                                group: None,
                                json_depth: json_depth + inner,
                                any_root: Some(depth),
                            })
                        }
                        None => None, // unresolved: rendering fails without recursing
                    }
                } else {
                    Some(Frame {
                        desc: Some(child),
                        rest: body,
                        group: None,
                        json_depth,
                        any_root,
                    })
                }
            }
            WIRE_START_GROUP => {
                let field = frame.desc.as_ref().and_then(|d| d.get_field(number));
                let (desc, json_depth) = match field.map(|f| (f.kind(), f.is_list())) {
                    Some((Kind::Message(m), list)) => {
                        let step = json_step(frame.desc.as_ref(), list, &m);
                        (Some(m), frame.json_depth + step)
                    }
                    _ => (None, frame.json_depth + 1),
                };
                let rest = std::mem::take(&mut frame.rest);
                Some(Frame {
                    desc,
                    rest,
                    group: Some(number),
                    json_depth,
                    any_root,
                })
            }
            WIRE_END_GROUP => {
                if frame.group != Some(number) {
                    return Err(malformed("unexpected end of group"));
                }
                let rest = std::mem::take(&mut frame.rest);
                stack.pop();
                match stack.last_mut() {
                    Some(parent) => parent.rest = rest,
                    None => return Err(malformed("unexpected end of group")),
                }
                None
            }
            _ => return Err(malformed("invalid wire type")),
        };
        if let Some(child) = child {
            if depth >= MAX_MESSAGE_NESTING {
                return Err(DescriptorError::TooDeepMessage {
                    max: MAX_MESSAGE_NESTING,
                });
            }
            if child.json_depth > self.max_depth {
                return Err(DescriptorError::TooDeepMessage {
                    max: self.max_depth,
                });
            }
            stack.push(child);
        }
        Ok(())
    }
}

/// JSON levels a message of type `child` adds under its parent: an object,
/// plus an array when it is a list element; none for `Value` (it is the JSON
/// value itself) and for a `Struct`'s entries (the `Struct` is the object).
fn json_step(parent: Option<&MessageDescriptor>, list: bool, child: &MessageDescriptor) -> usize {
    let parent_name = parent.map(MessageDescriptor::full_name);
    let object = match child.full_name() {
        "google.protobuf.Value" => 0,
        _ if child.is_map_entry() && parent_name == Some("google.protobuf.Struct") => 0,
        _ => 1,
    };
    let array = usize::from(list && parent_name != Some("google.protobuf.ListValue"));
    object + array
}

/// The payload of an `Any` (its last `type_url` and `value`, as in a
/// decode), when the type resolves in the `Any`'s pool by the part of the
/// URL after its last `/`.
fn any_payload<'a>(
    any: &MessageDescriptor,
    mut bytes: &'a [u8],
) -> Result<Option<(MessageDescriptor, &'a [u8])>, DescriptorError> {
    let mut type_url: &[u8] = &[];
    let mut value: &[u8] = &[];
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let number = field_number(key)?;
        match key & 7 {
            WIRE_VARINT => {
                read_varint(&mut bytes)?;
            }
            WIRE_FIXED64 => {
                take(&mut bytes, 8)?;
            }
            WIRE_FIXED32 => {
                take(&mut bytes, 4)?;
            }
            WIRE_LEN => {
                let len = read_len(&mut bytes)?;
                let body = take(&mut bytes, len)?;
                match number {
                    1 => type_url = body,
                    2 => value = body,
                    _ => {}
                }
            }
            WIRE_START_GROUP => skip_group(&mut bytes, number)?,
            _ => return Err(malformed("invalid wire type")),
        }
    }
    // The part after the last `/`, or the whole URL: prost-reflect needs a
    // `/`, status details rendering does not; the wider reading checks both.
    let name = std::str::from_utf8(type_url)
        .ok()
        .and_then(|url| url.rsplit('/').next());
    Ok(name
        .and_then(|name| any.parent_pool().get_message_by_name(name))
        .map(|desc| (desc, value)))
}

/// Skips an unknown group's fields up to its END_GROUP, counting nested
/// groups instead of recursing.
fn skip_group(bytes: &mut &[u8], number: u32) -> Result<(), DescriptorError> {
    let mut open = vec![number];
    while let Some(&current) = open.last() {
        if open.len() > MAX_MESSAGE_NESTING {
            return Err(DescriptorError::TooDeepMessage {
                max: MAX_MESSAGE_NESTING,
            });
        }
        let key = read_varint(bytes)?;
        let n = field_number(key)?;
        match key & 7 {
            WIRE_VARINT => {
                read_varint(bytes)?;
            }
            WIRE_FIXED64 => {
                take(bytes, 8)?;
            }
            WIRE_FIXED32 => {
                take(bytes, 4)?;
            }
            WIRE_LEN => {
                let len = read_len(bytes)?;
                take(bytes, len)?;
            }
            WIRE_START_GROUP => open.push(n),
            WIRE_END_GROUP if n == current => {
                open.pop();
            }
            _ => return Err(malformed("invalid wire type or end of group")),
        }
    }
    Ok(())
}

/// Message types with a special JSON mapping (not an object of fields).
pub(crate) fn is_wkt(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Empty"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn malformed(what: &str) -> DescriptorError {
    DescriptorError::InvalidProto(what.to_owned())
}

fn field_number(key: u64) -> Result<u32, DescriptorError> {
    match u32::try_from(key >> 3) {
        Ok(n) if n != 0 && n <= 0x1FFF_FFFF => Ok(n),
        _ => Err(malformed("invalid field number")),
    }
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, DescriptorError> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(malformed("invalid varint"))
}

fn read_len(bytes: &mut &[u8]) -> Result<usize, DescriptorError> {
    usize::try_from(read_varint(bytes)?).map_err(|_| malformed("length out of range"))
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], DescriptorError> {
    if bytes.len() < len {
        return Err(malformed("truncated field"));
    }
    let (head, tail) = bytes.split_at(len);
    *bytes = tail;
    Ok(head)
}
