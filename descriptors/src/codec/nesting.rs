//! [`crate::wire::check_nesting`] over a [`Program`] instead of
//! descriptors: the same iterative walk, limits and errors, with field
//! lookups in the plan (no reference-counted descriptor handle per field).

use super::{
    Card, Codec, Program, Ty, WIRE_END_GROUP, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN,
    WIRE_START_GROUP, WIRE_VARINT, Wkt,
};
use crate::{
    error::DescriptorError,
    wire::{ANY_ALLOWANCE_BYTES, MAX_ANY_EXPANSION, MAX_MESSAGE_NESTING},
};

/// A message type: a program (index into `Scan::programs`) and its message index.
#[derive(Clone, Copy)]
struct Type {
    prog: u32,
    m: u32,
}

struct Frame<'a> {
    ty: Option<Type>,
    rest: &'a [u8],
    group: Option<u32>,
    json_depth: usize,
    any_root: Option<usize>,
}

/// `Ok(Some(n))`: within the limits, `n` nested messages walked (map
/// entries and `Any` payloads included: the JSON writer sizes its output
/// by it). `Ok(None)`: an `Any` payload's type needs the descriptor walk
/// (groups, extensions); the caller runs [`crate::wire::check_nesting`]
/// instead.
pub(crate) fn check_nesting(
    codec: &Codec,
    root: u32,
    bytes: &[u8],
    max_depth: usize,
) -> Result<Option<usize>, DescriptorError> {
    let mut scan = Scan {
        max_depth,
        any_budget: bytes
            .len()
            .saturating_mul(MAX_ANY_EXPANSION)
            .saturating_add(ANY_ALLOWANCE_BYTES),
        any_bytes: 0,
        prog: codec.program(),
        messages: 0,
    };
    let mut stack = Vec::with_capacity(1); // a flat message needs no more
    stack.push(Frame {
        ty: Some(Type { prog: 0, m: root }),
        rest: bytes,
        group: None,
        json_depth: 1,
        any_root: None,
    });
    while !stack.is_empty() {
        match step(codec, &mut stack, &mut scan) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(DescriptorError::InvalidProto(message)) => {
                match stack.last().and_then(|frame| frame.any_root) {
                    Some(root) => stack.truncate(root),
                    None => return Err(DescriptorError::InvalidProto(message)),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(scan.messages))
}

fn malformed(what: &str) -> DescriptorError {
    DescriptorError::InvalidProto(what.to_owned())
}

#[inline]
fn read_varint(bytes: &mut &[u8]) -> Result<u64, DescriptorError> {
    if let Some((&b, rest)) = bytes.split_first()
        && b < 0x80
    {
        *bytes = rest;
        return Ok(u64::from(b));
    }
    read_varint_slow(bytes)
}

fn read_varint_slow(bytes: &mut &[u8]) -> Result<u64, DescriptorError> {
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

fn field_number(key: u64) -> Result<u32, DescriptorError> {
    match u32::try_from(key >> 3) {
        Ok(n) if n != 0 && n <= 0x1FFF_FFFF => Ok(n),
        _ => Err(malformed("invalid field number")),
    }
}

fn take<'a>(bytes: &mut &'a [u8], len: u64) -> Result<&'a [u8], DescriptorError> {
    let len = usize::try_from(len).map_err(|_| malformed("length out of range"))?;
    if bytes.len() < len {
        return Err(malformed("truncated field"));
    }
    let (head, tail) = bytes.split_at(len);
    *bytes = tail;
    Ok(head)
}

/// JSON levels a message adds under its parent (see `wire::json_step`).
fn json_step(scan: &Scan, parent: Option<Type>, card: Card, child: Type) -> usize {
    let parent_wkt = parent.and_then(|p| scan.plan(p).wkt);
    let object = match scan.plan(child).wkt {
        Some(Wkt::Value) => 0,
        _ if card == Card::Map && parent_wkt == Some(Wkt::Struct) => 0,
        _ => 1,
    };
    let array = usize::from(card == Card::Repeated && parent_wkt != Some(Wkt::ListValue));
    object + array
}

/// The field of `ty` numbered `number`: (card, message type) when a message.
fn message_field(scan: &Scan, ty: Option<Type>, number: u32) -> Option<(Card, Type)> {
    let ty = ty?;
    let plan = scan.plan(ty);
    let field = &plan.fields[plan.slot(number)?];
    match field.ty {
        Ty::Message(m) => Some((field.card, Type { prog: ty.prog, m })),
        _ => None,
    }
}

struct Scan<'p> {
    max_depth: usize,
    any_budget: usize,
    any_bytes: usize,
    /// The codec's plans (`Any` payloads' types included).
    prog: &'p Program,
    /// Frames pushed.
    messages: usize,
}

impl Scan<'_> {
    #[inline]
    fn program(&self, _prog: u32) -> &Program {
        self.prog
    }

    #[inline]
    fn plan(&self, ty: Type) -> &super::MessagePlan {
        &self.program(ty.prog).messages[ty.m as usize]
    }
}

/// What ends a run over the fields of the top frame.
enum Next<'a> {
    /// Its bytes are done.
    End,
    /// A message field of the frame's type.
    Message {
        card: Card,
        child: Type,
        body: &'a [u8],
    },
    /// A group starts (its key read).
    StartGroup { number: u32 },
    /// A group ends (its key read).
    EndGroup { number: u32 },
}

/// Skips the fields of `frame` that are not messages (scalars, unknown
/// fields), up to the next message field or group, or its end.
#[inline]
fn skip_scalars<'a>(scan: &Scan<'_>, frame: &mut Frame<'a>) -> Result<Next<'a>, DescriptorError> {
    let ty = frame.ty;
    let plan = ty.map(|ty| scan.plan(ty));
    loop {
        if frame.rest.is_empty() {
            return Ok(Next::End);
        }
        let key = read_varint(&mut frame.rest)?;
        let number = field_number(key)?;
        match (key & 7) as u8 {
            WIRE_VARINT => {
                read_varint(&mut frame.rest)?;
            }
            WIRE_FIXED64 => {
                take(&mut frame.rest, 8)?;
            }
            WIRE_FIXED32 => {
                take(&mut frame.rest, 4)?;
            }
            WIRE_LEN => {
                let len = read_varint(&mut frame.rest)?;
                let body = take(&mut frame.rest, len)?;
                if let (Some(ty), Some(plan)) = (ty, plan)
                    && let Some(slot) = plan.slot(number)
                    && let Ty::Message(m) = plan.fields[slot].ty
                {
                    let child = Type { prog: ty.prog, m };
                    let card = plan.fields[slot].card;
                    return Ok(Next::Message { card, child, body });
                }
            }
            WIRE_START_GROUP => return Ok(Next::StartGroup { number }),
            WIRE_END_GROUP => return Ok(Next::EndGroup { number }),
            _ => return Err(malformed("invalid wire type")),
        }
    }
}

/// Walks the top frame up to its next message field (pushing its frame),
/// or its end (popping it).
fn step(
    codec: &Codec,
    stack: &mut Vec<Frame<'_>>,
    scan: &mut Scan<'_>,
) -> Result<bool, DescriptorError> {
    let depth = stack.len();
    let Some(frame) = stack.last_mut() else {
        return Ok(true);
    };
    let any_root = frame.any_root;
    let child = match skip_scalars(scan, frame)? {
        Next::End => {
            if frame.group.is_some() {
                return Err(malformed("group without its end"));
            }
            stack.pop();
            return Ok(true);
        }
        Next::Message { card, child, body } => {
            let json_depth = frame.json_depth + json_step(scan, frame.ty, card, child);
            if scan.plan(child).wkt == Some(Wkt::Any) {
                match any_payload(codec, body)? {
                    Some((m, bytes)) => {
                        if scan.prog.messages[m as usize].unsupported_within {
                            return Ok(false);
                        }
                        let payload = Type { prog: 0, m };
                        scan.any_bytes = scan.any_bytes.saturating_add(bytes.len());
                        if scan.any_bytes > scan.any_budget {
                            return Err(DescriptorError::AnyTooLarge {
                                max: scan.any_budget,
                            });
                        }
                        // The Any is one object; a plain message's fields
                        // are merged into it, a well-known type is its "value".
                        let inner = if scan.plan(payload).wkt.is_some() {
                            json_step(scan, None, Card::Explicit, payload)
                        } else {
                            0
                        };
                        Some(Frame {
                            ty: Some(payload),
                            rest: bytes,
                            group: None,
                            json_depth: json_depth + inner,
                            any_root: Some(depth),
                        })
                    }
                    None => None, // unresolved: rendering fails without recursing
                }
            } else {
                Some(Frame {
                    ty: Some(child),
                    rest: body,
                    group: None,
                    json_depth,
                    any_root,
                })
            }
        }
        Next::StartGroup { number } => {
            let (ty, json_depth) = match message_field(scan, frame.ty, number) {
                Some((card, m)) => {
                    let step = json_step(scan, frame.ty, card, m);
                    (Some(m), frame.json_depth + step)
                }
                None => (None, frame.json_depth + 1),
            };
            let rest = std::mem::take(&mut frame.rest);
            Some(Frame {
                ty,
                rest,
                group: Some(number),
                json_depth,
                any_root,
            })
        }
        Next::EndGroup { number } => {
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
    };
    if let Some(child) = child {
        if depth >= MAX_MESSAGE_NESTING {
            return Err(DescriptorError::TooDeepMessage {
                max: MAX_MESSAGE_NESTING,
            });
        }
        if child.json_depth > scan.max_depth {
            return Err(DescriptorError::TooDeepMessage {
                max: scan.max_depth,
            });
        }
        scan.messages += 1;
        stack.push(child);
    }
    Ok(true)
}

/// The payload of an `Any` (its last `type_url` and `value`), when the type
/// resolves by the part of the URL after its last `/` (or the whole URL).
/// An `Any` payload: its type's program and its bytes.
type Payload<'a> = (u32, &'a [u8]);

fn any_payload<'a>(
    codec: &Codec,
    mut bytes: &'a [u8],
) -> Result<Option<Payload<'a>>, DescriptorError> {
    let mut type_url: &[u8] = &[];
    let mut value: &[u8] = &[];
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let number = field_number(key)?;
        match (key & 7) as u8 {
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
                let len = read_varint(&mut bytes)?;
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
    let name = std::str::from_utf8(type_url)
        .ok()
        .and_then(|url| url.rsplit('/').next());
    Ok(name.and_then(|name| codec.find(name)).map(|m| (m, value)))
}

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
        match (key & 7) as u8 {
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
                let len = read_varint(bytes)?;
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
