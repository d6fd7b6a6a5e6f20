//! JSON text → wire bytes, driven by a [`Program`]: serde_json's tokenizer
//! drives seeds that know the plan and append encodings straight to the
//! output buffer.
//!
//! What is accepted, and how values convert, is prost-reflect's JSON reader
//! (the visitors below mirror its `expecting` texts and conversions); the
//! bytes are what encoding its message would give: fields in number order
//! (a field's encoding is put in place when JSON keys come out of order),
//! implicit-presence fields at their default left out, repeated scalars
//! packed when the field is, map entries in key order. A nested message is
//! written behind a one-byte length that is widened in place when longer.
//!
//! Errors carry no detail: the caller runs the prost-reflect reader on a
//! refused document to report the error exactly as before (with its JSON
//! path), so this reader only has to refuse what that one refuses.

use std::{borrow::Cow, cell::RefCell, fmt, str::FromStr};

use prost::Message as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    Card, Codec, FieldPlan, MessagePlan, Program, Ty, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN,
    WIRE_VARINT, Wkt, time,
};

/// What a reader needs besides the buffer.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'p> {
    pub(crate) codec: &'p Codec,
    pub(crate) prog: &'p Program,
    pub(crate) deny_unknown: bool,
    /// `(slot, start, end)` of the field encodings of the messages being
    /// read, innermost last (one stack for the whole document).
    pub(crate) segments: &'p RefCell<Vec<(u16, usize, usize)>>,
    /// Object and array levels still allowed below this point: the
    /// document's depth limit, counted as the values are read (no pre-scan).
    pub(crate) depth_left: usize,
}

impl Ctx<'_> {
    /// `self` one object or array deeper; refused past the depth limit (the
    /// prost-reflect reader's pre-scan then reports it).
    #[inline]
    pub(super) fn enter<E: de::Error>(self) -> Result<Self, E> {
        Ok(Ctx {
            depth_left: enter(self.depth_left)?,
            ..self
        })
    }
}

/// The levels left one object or array deeper, if any.
#[inline]
fn enter<E: de::Error>(depth_left: usize) -> Result<usize, E> {
    depth_left
        .checked_sub(1)
        .ok_or_else(|| E::custom("nested too deep"))
}

/// The fields of message `m` from a JSON value, appended to `buf`.
pub(crate) struct MessageSeed<'c, 'b> {
    pub(crate) ctx: Ctx<'c>,
    pub(crate) m: u32,
    pub(crate) buf: &'b mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let plan = &self.ctx.prog.messages[self.m as usize];
        let Some(wkt) = plan.wkt else {
            return d.deserialize_map(MessageVisitor {
                ctx: self.ctx,
                plan,
                buf: self.buf,
            });
        };
        let buf = self.buf;
        let depth = self.ctx.depth_left;
        match wkt {
            Wkt::Any => d.deserialize_map(AnyVisitor { ctx: self.ctx, buf })?,
            Wkt::Timestamp => d.deserialize_str(TimestampVisitor)?.encode_raw(buf),
            Wkt::Duration => d.deserialize_str(DurationVisitor)?.encode_raw(buf),
            Wkt::FieldMask => d.deserialize_str(FieldMaskVisitor)?.encode_raw(buf),
            Wkt::Struct => d.deserialize_map(StructVisitor(depth))?.encode_raw(buf),
            Wkt::ListValue => d.deserialize_seq(ListValueVisitor(depth))?.encode_raw(buf),
            Wkt::Value => d.deserialize_any(ValueVisitor(depth))?.encode_raw(buf),
            Wkt::Empty => d.deserialize_map(EmptyVisitor(depth))?,
            Wkt::DoubleValue => d.deserialize_any(DoubleVisitor)?.encode_raw(buf),
            Wkt::FloatValue => d.deserialize_any(FloatVisitor)?.encode_raw(buf),
            Wkt::Int64Value => d.deserialize_any(Int64Visitor)?.encode_raw(buf),
            Wkt::UInt64Value => d.deserialize_any(Uint64Visitor)?.encode_raw(buf),
            Wkt::Int32Value => d.deserialize_any(Int32Visitor)?.encode_raw(buf),
            Wkt::UInt32Value => d.deserialize_any(Uint32Visitor)?.encode_raw(buf),
            Wkt::BoolValue => d.deserialize_any(BoolVisitor)?.encode_raw(buf),
            Wkt::StringValue => d.deserialize_string(StringVisitor)?.encode_raw(buf),
            Wkt::BytesValue => d.deserialize_str(BytesVisitor)?.encode_raw(buf),
        }
        Ok(())
    }
}

struct MessageVisitor<'c, 'b> {
    ctx: Ctx<'c>,
    plan: &'c MessagePlan,
    buf: &'b mut Vec<u8>,
}

/// A JSON key: a field slot, or unknown. The slot expected next is tried
/// before the name table.
pub(super) struct KeySeed<'c>(pub(super) &'c MessagePlan, pub(super) Option<u16>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<u16>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u16>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<u16>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<u16>, E> {
        Ok(self.0.field_by_name_after(key, self.1))
    }
}

impl<'de> Visitor<'de> for MessageVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        read_fields(self.ctx.enter()?, self.plan, self.buf, &mut map)
    }
}

/// An `Any` whose `@type` comes first (else refused here: the prost-reflect
/// reader buffers what comes before it).
struct AnyVisitor<'c, 'b> {
    ctx: Ctx<'c>,
    buf: &'b mut Vec<u8>,
}

impl<'de> Visitor<'de> for AnyVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let AnyVisitor { ctx, buf } = self;
        let ctx = ctx.enter()?;
        if map.next_key_seed(CowStrSeed)?.as_deref() != Some("@type") {
            return Err(de::Error::custom("expected '@type' first"));
        }
        let url = map.next_value::<String>()?;
        let Some((_, name)) = url.rsplit_once('/') else {
            return Err(de::Error::custom("missing at least one '/'"));
        };
        let Some(m) = ctx.codec.root(name) else {
            return Err(de::Error::custom("message not found"));
        };
        write_key(buf, 1, WIRE_LEN);
        Scalar::Str(Cow::Borrowed(&url)).encode(Ty::String, buf);
        let value_start = buf.len();
        write_key(buf, 2, WIRE_LEN);
        let at = buf.len();
        buf.push(0);
        let pctx = Ctx {
            prog: ctx.codec.program(),
            ..ctx
        };
        let payload = &pctx.prog.messages[m as usize];
        if payload.wkt.is_some() {
            match map.next_key_seed(CowStrSeed)?.as_deref() {
                Some("value") => {}
                // Python's json_format writes an `Any` of `Empty` as an
                // ordinary message's fields (none), with no "value".
                None if payload.wkt == Some(Wkt::Empty) => {
                    buf.truncate(value_start); // empty bytes are not written
                    return Ok(());
                }
                _ => return Err(de::Error::custom("expected 'value' next")),
            }
            map.next_value_seed(MessageSeed {
                ctx: pctx,
                m,
                buf: &mut *buf,
            })?;
            if ctx.deny_unknown {
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("unrecognized field name"));
                }
            } else {
                while map.next_key::<IgnoredAny>()?.is_some() {
                    map.next_value_seed(Skip(ctx.depth_left))?;
                }
            }
        } else {
            read_fields(pctx, payload, buf, &mut map)?;
        }
        if buf.len() == at + 1 {
            buf.truncate(value_start); // empty bytes are not written
        } else {
            patch_len(buf, at);
        }
        Ok(())
    }
}

/// The remaining entries of `map` as fields of `plan`, appended to `buf` in
/// field number order.
fn read_fields<'de, A: MapAccess<'de>>(
    ctx: Ctx<'_>,
    plan: &MessagePlan,
    buf: &mut Vec<u8>,
    map: &mut A,
) -> Result<(), A::Error> {
    let mut fields = FieldsRead::new(plan, buf.len());
    while let Some(key) = map.next_key_seed(KeySeed(plan, fields.last()))? {
        let Some(slot) = key else {
            if ctx.deny_unknown {
                return Err(de::Error::custom("unrecognized field name"));
            }
            map.next_value_seed(Skip(ctx.depth_left))?;
            continue;
        };
        let start = buf.len();
        let set = map.next_value_seed(FieldSeed {
            ctx,
            plan,
            slot: slot as usize,
            buf: &mut *buf,
        })?;
        if set {
            fields
                .set(ctx, plan, slot, start, buf)
                .map_err(de::Error::custom)?;
        }
    }
    fields.finish(ctx, buf);
    Ok(())
}

/// What reading one message's fields keeps between its keys: the oneofs
/// set, and where the fields stand when keys come out of field order.
pub(super) struct FieldsRead {
    /// Where the message's field encodings start in the buffer.
    base: usize,
    /// Where this message's segments start on the stack, once out of order
    /// (the levels inside it have then taken theirs off).
    first_segment: Option<usize>,
    /// Oneofs set so far: a bit each (a list past 64).
    oneof_bits: u64,
    oneof_more: Vec<bool>,
    last_slot: Option<u16>,
}

impl FieldsRead {
    pub(super) fn new(plan: &MessagePlan, base: usize) -> Self {
        FieldsRead {
            base,
            first_segment: None,
            oneof_bits: 0,
            oneof_more: vec![false; plan.oneof_count().saturating_sub(64)],
            last_slot: None,
        }
    }

    /// The slot of the last key read, if any (where the next key is looked
    /// for first).
    #[inline]
    pub(super) fn last(&self) -> Option<u16> {
        self.last_slot
    }

    /// Notes that field `slot` was set by the encoding at `buf[start..]`;
    /// refused when it is the second member of a oneof.
    #[inline]
    pub(super) fn set(
        &mut self,
        ctx: Ctx<'_>,
        plan: &MessagePlan,
        slot: u16,
        start: usize,
        buf: &[u8],
    ) -> Result<(), &'static str> {
        if let Some(o) = plan.fields[slot as usize].oneof {
            self.set_oneof(o as usize)?;
        }
        // In order so far, the fields need no segments (nor reordering).
        let out_of_order = self.last_slot.is_some_and(|last| last >= slot);
        self.last_slot = Some(slot);
        if self.first_segment.is_none() && !out_of_order {
            return Ok(());
        }
        self.push_segment(ctx, plan, slot, start, buf)
    }

    /// Notes that oneof `o` is set; refused when it was.
    fn set_oneof(&mut self, o: usize) -> Result<(), &'static str> {
        let was_set = match o {
            0..64 => {
                let was = self.oneof_bits & (1 << o) != 0;
                self.oneof_bits |= 1 << o;
                was
            }
            _ => std::mem::replace(&mut self.oneof_more[o - 64], true),
        };
        if was_set {
            return Err("multiple fields provided for oneof");
        }
        Ok(())
    }

    /// Out of order: field `slot`'s encoding at `buf[start..]` as a segment
    /// (the fields before it as theirs, the first time).
    #[inline(never)]
    fn push_segment(
        &mut self,
        ctx: Ctx<'_>,
        plan: &MessagePlan,
        slot: u16,
        start: usize,
        buf: &[u8],
    ) -> Result<(), &'static str> {
        let mut segments = ctx.segments.borrow_mut();
        if self.first_segment.is_none() {
            // The first key out of order: the fields before it, read back.
            self.first_segment = Some(segments.len());
            split_fields(plan, buf, self.base, start, &mut segments)
                .ok_or("unreadable encoding")?;
        }
        segments.push((slot, start, buf.len()));
        Ok(())
    }

    /// Puts the fields in field number order, if they came out of it.
    #[inline]
    pub(super) fn finish(self, ctx: Ctx<'_>, buf: &mut Vec<u8>) {
        if let Some(first) = self.first_segment {
            let mut segments = ctx.segments.borrow_mut();
            if let Some(own) = segments.get_mut(first..) {
                reorder(buf, self.base, own);
            }
            segments.truncate(first);
        }
    }
}

/// Appends the segments of the field encodings in `buf[from..to]` (fields
/// in field number order, each written by one key: its records together);
/// `None` if not an encoding (not reached: this reader wrote it).
fn split_fields(
    plan: &MessagePlan,
    buf: &[u8],
    from: usize,
    to: usize,
    segments: &mut Vec<(u16, usize, usize)>,
) -> Option<()> {
    let bytes = buf.get(from..to)?;
    let mut rest = bytes;
    let mut current: Option<(u16, usize, usize)> = None;
    while !rest.is_empty() {
        let start = from + bytes.len() - rest.len();
        let key = super::to_json::read_varint(&mut rest).ok()?;
        let len = match key as u8 & 7 {
            WIRE_VARINT => {
                super::to_json::read_varint(&mut rest).ok()?;
                0
            }
            WIRE_FIXED64 => 8,
            WIRE_FIXED32 => 4,
            WIRE_LEN => usize::try_from(super::to_json::read_varint(&mut rest).ok()?).ok()?,
            _ => return None,
        };
        rest = rest.get(len..)?;
        let end = from + bytes.len() - rest.len();
        let slot = u16::try_from(plan.slot(u32::try_from(key >> 3).ok()?)?).ok()?;
        match &mut current {
            Some(segment) if segment.0 == slot => segment.2 = end,
            _ => segments.extend(current.replace((slot, start, end))),
        }
    }
    segments.extend(current);
    Some(())
}

/// Puts the field encodings after `base` in field number order, the last
/// one of a field replacing the earlier ones: copied in order behind the
/// message, then moved down, when the buffer has room behind it; else
/// through a side buffer of the message's size (growing the buffer to copy
/// behind would double it, and hold old and new at once: three times a
/// large message's bytes at the peak instead of two).
#[inline(never)]
fn reorder(buf: &mut Vec<u8>, base: usize, segments: &mut [(u16, usize, usize)]) {
    let end = buf.len();
    let len = end - base;
    if buf.capacity() - end >= len {
        in_order(segments, |start, stop| buf.extend_from_within(start..stop));
        buf.copy_within(end.., base);
        buf.truncate(base + (buf.len() - end));
    } else {
        let mut side = Vec::with_capacity(len);
        in_order(segments, |start, stop| {
            side.extend_from_slice(buf.get(start..stop).unwrap_or_default());
        });
        buf.truncate(base);
        buf.extend_from_slice(&side);
    }
}

/// Calls `copy` with each segment to keep, `(start, stop)`, in field number
/// order: the last of each slot.
#[inline(always)]
fn in_order(segments: &mut [(u16, usize, usize)], mut copy: impl FnMut(usize, usize)) {
    if u32::try_from(segments.len()).is_ok() && segments.iter().all(|s| s.0 < 64) {
        // The last segment of each slot, then the slots in order.
        let mut last = [0u32; 64];
        let mut present = 0u64;
        for (i, s) in segments.iter().enumerate() {
            present |= 1 << s.0;
            last[s.0 as usize] = i as u32;
        }
        while present != 0 {
            let slot = present.trailing_zeros() as usize;
            present &= present - 1;
            let (_, start, stop) = segments[last[slot] as usize];
            copy(start, stop);
        }
    } else {
        // Starts grow in the order segments were pushed: by start within a
        // slot is the order they were written, and the last stays last.
        segments.sort_unstable_by_key(|s| (s.0, s.1));
        for (i, &(slot, start, stop)) in segments.iter().enumerate() {
            if segments.get(i + 1).is_some_and(|next| next.0 == slot) {
                continue;
            }
            copy(start, stop);
        }
    }
}

/// One field's value; `true` when it sets the field (`null` does not).
pub(super) struct FieldSeed<'c, 'b> {
    pub(super) ctx: Ctx<'c>,
    pub(super) plan: &'c MessagePlan,
    pub(super) slot: usize,
    pub(super) buf: &'b mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("option")
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.visit_none()
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        let field = &self.plan.fields[self.slot];
        if matches!(field.card, Card::Repeated | Card::Map) {
            return Ok(false);
        }
        match field.ty {
            Ty::Message(m) if self.ctx.prog.messages[m as usize].wkt == Some(Wkt::Value) => {
                // `null` is a Value holding NullValue.
                write_key(self.buf, field.number, WIRE_LEN);
                self.buf.extend_from_slice(&[2, 0x08, 0x00]);
                Ok(true)
            }
            Ty::Enum(e) if self.ctx.prog.enums[e as usize].is_null_value => {
                write_scalar(
                    self.buf,
                    field.number,
                    field.ty,
                    field.card,
                    Scalar::Enum(0),
                    self.ctx,
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let FieldSeed {
            ctx,
            plan,
            slot,
            buf,
        } = self;
        let field = &plan.fields[slot];
        match field.card {
            Card::Repeated => {
                d.deserialize_any(ListVisitor {
                    ctx,
                    number: field.number,
                    ty: field.ty,
                    packed: field.packed,
                    buf,
                })?;
                Ok(true)
            }
            Card::Map => {
                let Ty::Message(entry) = field.ty else {
                    return Err(de::Error::custom("map without entry type"));
                };
                d.deserialize_any(MapVisitor {
                    ctx,
                    number: field.number,
                    entry: &ctx.prog.messages[entry as usize],
                    buf,
                })?;
                Ok(true)
            }
            Card::Implicit | Card::Explicit => {
                write_value(d, ctx, field.number, field.ty, field.card, buf)
            }
        }
    }
}

/// Reads one singular value of type `ty` and writes it as field `number`;
/// `false` when it leaves the field unset (an ignored enum name).
pub(super) fn write_value<'de, D: Deserializer<'de>>(
    d: D,
    ctx: Ctx<'_>,
    number: u32,
    ty: Ty,
    card: Card,
    buf: &mut Vec<u8>,
) -> Result<bool, D::Error> {
    let scalar = match ty {
        Ty::Message(m) => {
            write_key(buf, number, WIRE_LEN);
            let at = buf.len();
            buf.push(0);
            MessageSeed {
                ctx,
                m,
                buf: &mut *buf,
            }
            .deserialize(d)?;
            patch_len(buf, at);
            return Ok(true);
        }
        Ty::Enum(e) => {
            let plan = &ctx.prog.enums[e as usize];
            let value = if plan.is_null_value {
                d.deserialize_any(NullVisitor(ctx.deny_unknown))?
            } else {
                d.deserialize_any(EnumVisitor(ctx, e))?
            };
            match value {
                Some(n) => Scalar::Enum(n),
                None => return Ok(false),
            }
        }
        Ty::String => {
            d.deserialize_str(StrFieldVisitor {
                number,
                implicit: card == Card::Implicit,
                buf,
            })?;
            return Ok(true);
        }
        Ty::Bytes => read_scalar(d, ty)?,
        _ => {
            write_number(d, number, ty, card == Card::Implicit, buf)?;
            return Ok(true);
        }
    };
    write_scalar(buf, number, ty, card, scalar, ctx);
    Ok(true)
}

/// A numeric or bool field, read and written in one step (what
/// [`read_scalar`] and [`write_scalar`] do, without a [`Scalar`] between).
#[inline]
fn write_number<'de, D: Deserializer<'de>>(
    d: D,
    number: u32,
    ty: Ty,
    implicit: bool,
    buf: &mut Vec<u8>,
) -> Result<(), D::Error> {
    let bits = number_bits(AnyValue(d), ty)?;
    emit_number(buf, number, implicit, bits);
    Ok(())
}

/// Where a number is read from: a deserializer, or a token the fast reader
/// (`codec::scan`) took out of the text itself.
pub(super) trait NumberSource<'de> {
    type Error: de::Error;
    fn read<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error>;
}

/// A deserializer's next value, whatever it is.
struct AnyValue<D>(D);

impl<'de, D: Deserializer<'de>> NumberSource<'de> for AnyValue<D> {
    type Error = D::Error;

    #[inline]
    fn read<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(v)
    }
}

/// `(is the default, wire type, value bits)` of a numeric or bool value of
/// type `ty` (fixed widths little-endian), converted as the visitors do.
#[inline]
pub(super) fn number_bits<'de, S: NumberSource<'de>>(
    d: S,
    ty: Ty,
) -> Result<(bool, u8, u64), S::Error> {
    Ok(match ty {
        Ty::Double => {
            let v = d.read(DoubleVisitor)?;
            (v == 0.0, WIRE_FIXED64, v.to_bits())
        }
        Ty::Float => {
            let v = d.read(FloatVisitor)?;
            (v == 0.0, WIRE_FIXED32, u64::from(v.to_bits()))
        }
        Ty::Int32 => {
            let v = d.read(Int32Visitor)?;
            (v == 0, WIRE_VARINT, v as i64 as u64)
        }
        Ty::Sint32 => {
            let v = d.read(Int32Visitor)?;
            (
                v == 0,
                WIRE_VARINT,
                u64::from(((v << 1) ^ (v >> 31)) as u32),
            )
        }
        Ty::Sfixed32 => {
            let v = d.read(Int32Visitor)?;
            (v == 0, WIRE_FIXED32, u64::from(v as u32))
        }
        Ty::Int64 => {
            let v = d.read(Int64Visitor)?;
            (v == 0, WIRE_VARINT, v as u64)
        }
        Ty::Sint64 => {
            let v = d.read(Int64Visitor)?;
            (v == 0, WIRE_VARINT, ((v << 1) ^ (v >> 63)) as u64)
        }
        Ty::Sfixed64 => {
            let v = d.read(Int64Visitor)?;
            (v == 0, WIRE_FIXED64, v as u64)
        }
        Ty::Uint32 => {
            let v = d.read(Uint32Visitor)?;
            (v == 0, WIRE_VARINT, u64::from(v))
        }
        Ty::Fixed32 => {
            let v = d.read(Uint32Visitor)?;
            (v == 0, WIRE_FIXED32, u64::from(v))
        }
        Ty::Uint64 => {
            let v = d.read(Uint64Visitor)?;
            (v == 0, WIRE_VARINT, v)
        }
        Ty::Fixed64 => {
            let v = d.read(Uint64Visitor)?;
            (v == 0, WIRE_FIXED64, v)
        }
        Ty::Bool => {
            let v = d.read(BoolVisitor)?;
            (!v, WIRE_VARINT, u64::from(v))
        }
        Ty::String | Ty::Bytes | Ty::Enum(_) | Ty::Message(_) => {
            return Err(de::Error::custom("not a number"));
        }
    })
}

/// Writes field `number` from [`number_bits`], unless it has implicit
/// presence and is the default.
#[inline]
pub(super) fn emit_number(buf: &mut Vec<u8>, number: u32, implicit: bool, bits: (bool, u8, u64)) {
    let (zero, wire, bits) = bits;
    if implicit && zero {
        return;
    }
    write_key(buf, number, wire);
    emit_bits(buf, wire, bits);
}

/// A value from [`number_bits`] alone (no key).
#[inline]
pub(super) fn emit_bits(buf: &mut Vec<u8>, wire: u8, bits: u64) {
    match wire {
        WIRE_FIXED64 => buf.extend_from_slice(&bits.to_le_bytes()),
        WIRE_FIXED32 => buf.extend_from_slice(&(bits as u32).to_le_bytes()),
        _ => write_varint(buf, bits),
    }
}

/// A string field written as it is read (no `Cow` in between).
struct StrFieldVisitor<'b> {
    number: u32,
    /// Implicit presence: the empty string is not written.
    implicit: bool,
    buf: &'b mut Vec<u8>,
}

impl Visitor<'_> for StrFieldVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if !(self.implicit && v.is_empty()) {
            write_key(self.buf, self.number, WIRE_LEN);
            write_varint(self.buf, v.len() as u64);
            self.buf.extend_from_slice(v.as_bytes());
        }
        Ok(())
    }
}

fn read_scalar<'de, D: Deserializer<'de>>(d: D, ty: Ty) -> Result<Scalar<'de>, D::Error> {
    Ok(match ty {
        Ty::Double => Scalar::F64(d.deserialize_any(DoubleVisitor)?),
        Ty::Float => Scalar::F32(d.deserialize_any(FloatVisitor)?),
        Ty::Int32 | Ty::Sint32 | Ty::Sfixed32 => Scalar::I32(d.deserialize_any(Int32Visitor)?),
        Ty::Int64 | Ty::Sint64 | Ty::Sfixed64 => Scalar::I64(d.deserialize_any(Int64Visitor)?),
        Ty::Uint32 | Ty::Fixed32 => Scalar::U32(d.deserialize_any(Uint32Visitor)?),
        Ty::Uint64 | Ty::Fixed64 => Scalar::U64(d.deserialize_any(Uint64Visitor)?),
        Ty::Bool => Scalar::Bool(d.deserialize_any(BoolVisitor)?),
        Ty::String => Scalar::Str(d.deserialize_string(CowStrVisitor)?),
        Ty::Bytes => Scalar::Bytes(d.deserialize_str(BytesVisitor)?),
        Ty::Enum(_) | Ty::Message(_) => return Err(de::Error::custom("not a scalar")),
    })
}

/// A converted scalar.
pub(super) enum Scalar<'de> {
    F64(f64),
    F32(f32),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    Bool(bool),
    Str(Cow<'de, str>),
    Bytes(Vec<u8>),
    Enum(i32),
}

impl Scalar<'_> {
    fn is_default(&self, ty: Ty, ctx: Ctx<'_>) -> bool {
        match self {
            Scalar::F64(v) => *v == 0.0,
            Scalar::F32(v) => *v == 0.0,
            Scalar::I32(v) => *v == 0,
            Scalar::I64(v) => *v == 0,
            Scalar::U32(v) => *v == 0,
            Scalar::U64(v) => *v == 0,
            Scalar::Bool(v) => !*v,
            Scalar::Str(v) => v.is_empty(),
            Scalar::Bytes(v) => v.is_empty(),
            Scalar::Enum(v) => match ty {
                Ty::Enum(e) => *v == ctx.prog.enums[e as usize].default,
                _ => *v == 0,
            },
        }
    }

    /// The value alone (no key), as field type `ty`.
    pub(super) fn encode(&self, ty: Ty, buf: &mut Vec<u8>) {
        match (self, ty) {
            (Scalar::F64(v), _) => buf.extend_from_slice(&v.to_bits().to_le_bytes()),
            (Scalar::F32(v), _) => buf.extend_from_slice(&v.to_bits().to_le_bytes()),
            (Scalar::I32(v), Ty::Sint32) => {
                write_varint(buf, u64::from(((v << 1) ^ (v >> 31)) as u32))
            }
            (Scalar::I32(v), Ty::Sfixed32) => buf.extend_from_slice(&v.to_le_bytes()),
            (Scalar::I32(v) | Scalar::Enum(v), _) => write_varint(buf, *v as i64 as u64),
            (Scalar::I64(v), Ty::Sint64) => write_varint(buf, ((v << 1) ^ (v >> 63)) as u64),
            (Scalar::I64(v), Ty::Sfixed64) => buf.extend_from_slice(&v.to_le_bytes()),
            (Scalar::I64(v), _) => write_varint(buf, *v as u64),
            (Scalar::U32(v), Ty::Fixed32) => buf.extend_from_slice(&v.to_le_bytes()),
            (Scalar::U32(v), _) => write_varint(buf, u64::from(*v)),
            (Scalar::U64(v), Ty::Fixed64) => buf.extend_from_slice(&v.to_le_bytes()),
            (Scalar::U64(v), _) => write_varint(buf, *v),
            (Scalar::Bool(v), _) => buf.push(u8::from(*v)),
            (Scalar::Str(v), _) => {
                write_varint(buf, v.len() as u64);
                buf.extend_from_slice(v.as_bytes());
            }
            (Scalar::Bytes(v), _) => {
                write_varint(buf, v.len() as u64);
                buf.extend_from_slice(v);
            }
        }
    }
}

fn wire_of(ty: Ty) -> u8 {
    match ty {
        Ty::Double | Ty::Fixed64 | Ty::Sfixed64 => WIRE_FIXED64,
        Ty::Float | Ty::Fixed32 | Ty::Sfixed32 => WIRE_FIXED32,
        Ty::String | Ty::Bytes | Ty::Message(_) => WIRE_LEN,
        _ => WIRE_VARINT,
    }
}

/// Writes field `number` = `value`, unless it has implicit presence and is the default.
pub(super) fn write_scalar(
    buf: &mut Vec<u8>,
    number: u32,
    ty: Ty,
    card: Card,
    value: Scalar<'_>,
    ctx: Ctx<'_>,
) {
    if card == Card::Implicit && value.is_default(ty, ctx) {
        return;
    }
    write_key(buf, number, wire_of(ty));
    value.encode(ty, buf);
}

struct ListVisitor<'c, 'b> {
    ctx: Ctx<'c>,
    number: u32,
    ty: Ty,
    packed: bool,
    buf: &'b mut Vec<u8>,
}

impl<'de> Visitor<'de> for ListVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ListVisitor {
            ctx,
            number,
            ty,
            packed,
            buf,
        } = self;
        let ctx = ctx.enter()?;
        let packed = packed && !matches!(ty, Ty::String | Ty::Bytes | Ty::Message(_));
        if !packed {
            while seq
                .next_element_seed(ElementSeed {
                    ctx,
                    number,
                    ty,
                    buf: &mut *buf,
                })?
                .is_some()
            {}
            return Ok(());
        }
        let start = buf.len();
        write_key(buf, number, WIRE_LEN);
        let at = buf.len();
        buf.push(0);
        let mut any = false;
        while let Some(value) = seq.next_element_seed(PackedSeed { ctx, ty })? {
            if let Some(value) = value {
                value.encode(ty, buf);
                any = true;
            }
        }
        if any {
            patch_len(buf, at);
        } else {
            buf.truncate(start); // an empty list is not written
        }
        Ok(())
    }
}

/// One element of a packed list (no key); `None` for an ignored enum name.
pub(super) struct PackedSeed<'c> {
    pub(super) ctx: Ctx<'c>,
    pub(super) ty: Ty,
}

impl<'de> DeserializeSeed<'de> for PackedSeed<'_> {
    type Value = Option<Scalar<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.ty {
            Ty::Enum(e) if self.ctx.prog.enums[e as usize].is_null_value => Ok(d
                .deserialize_any(NullVisitor(self.ctx.deny_unknown))?
                .map(Scalar::Enum)),
            Ty::Enum(e) => Ok(d
                .deserialize_any(EnumVisitor(self.ctx, e))?
                .map(Scalar::Enum)),
            ty => read_scalar(d, ty).map(Some),
        }
    }
}

/// One element of an unpacked list, written with its key.
struct ElementSeed<'c, 'b> {
    ctx: Ctx<'c>,
    number: u32,
    ty: Ty,
    buf: &'b mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // List elements always have presence: written even at the default.
        write_value(d, self.ctx, self.number, self.ty, Card::Explicit, self.buf).map(|_| ())
    }
}

struct MapVisitor<'c, 'b> {
    ctx: Ctx<'c>,
    number: u32,
    entry: &'c MessagePlan,
    buf: &'b mut Vec<u8>,
}

impl<'de> Visitor<'de> for MapVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let MapVisitor {
            ctx,
            number,
            entry,
            buf,
        } = self;
        let ctx = ctx.enter()?;
        let Some((key_field, value_field)) = entry.map_entry() else {
            return Err(de::Error::custom("map entry without key or value"));
        };
        let base = buf.len();
        // (key, start, end) of each entry's encoding in `buf`.
        let mut entries: Vec<(MapKey<'de>, usize, usize)> = Vec::new();
        while let Some(key) = map.next_key_seed(CowStrSeed)? {
            let key = MapKey::parse(key_field.ty, key).map_err(de::Error::custom)?;
            let start = buf.len();
            let at = key.open_entry(buf, number, key_field, ctx);
            let set = map.next_value_seed(MapValueSeed {
                ctx,
                ty: value_field.ty,
                card: value_field.card,
                buf: &mut *buf,
            })?;
            if set {
                patch_len(buf, at);
                entries.push((key, start, buf.len()));
            } else {
                buf.truncate(start);
            }
        }
        sort_map_entries(buf, base, &mut entries);
        Ok(())
    }
}

/// Puts the map entries written after `base` (`(key, start, end)` each, in
/// the order written) in key order, the last entry of a key winning, unless
/// their keys already increase.
pub(super) fn sort_map_entries(
    buf: &mut Vec<u8>,
    base: usize,
    entries: &mut [(MapKey<'_>, usize, usize)],
) {
    if entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sorted = Vec::with_capacity(buf.len() - base);
    for (i, (key, start, end)) in entries.iter().enumerate() {
        if entries.get(i + 1).is_none_or(|next| next.0 != *key) {
            sorted.extend_from_slice(buf.get(*start..*end).unwrap_or_default());
        }
    }
    buf.truncate(base);
    buf.extend_from_slice(&sorted);
}

/// A map value (no `null` unless the type reads it): field 2 of the entry.
struct MapValueSeed<'c, 'b> {
    ctx: Ctx<'c>,
    ty: Ty,
    card: Card,
    buf: &'b mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MapValueSeed<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        write_value(d, self.ctx, 2, self.ty, self.card, self.buf)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum MapKey<'de> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Str(Cow<'de, str>),
}

impl<'de> MapKey<'de> {
    pub(super) fn parse(ty: Ty, key: Cow<'de, str>) -> Result<Self, String> {
        let k = key.as_ref();
        Ok(match ty {
            Ty::Int32 | Ty::Sint32 | Ty::Sfixed32 => {
                MapKey::Int(i64::from(i32::from_str(k).map_err(|e| e.to_string())?))
            }
            Ty::Int64 | Ty::Sint64 | Ty::Sfixed64 => {
                MapKey::Int(i64::from_str(k).map_err(|e| e.to_string())?)
            }
            Ty::Uint32 | Ty::Fixed32 => {
                MapKey::Uint(u64::from(u32::from_str(k).map_err(|e| e.to_string())?))
            }
            Ty::Uint64 | Ty::Fixed64 => MapKey::Uint(u64::from_str(k).map_err(|e| e.to_string())?),
            Ty::Bool => MapKey::Bool(bool::from_str(k).map_err(|e| e.to_string())?),
            Ty::String => MapKey::Str(key),
            _ => return Err("invalid map key type".to_owned()),
        })
    }

    /// Starts an entry of map field `number` with this key: its tag, a
    /// length placeholder (its position returned, for [`patch_len`] once
    /// the value is written) and the key field.
    pub(super) fn open_entry(
        &self,
        buf: &mut Vec<u8>,
        number: u32,
        key_field: &FieldPlan,
        ctx: Ctx<'_>,
    ) -> usize {
        write_key(buf, number, WIRE_LEN);
        let at = buf.len();
        buf.push(0);
        self.encode(buf, key_field.ty, key_field.card, ctx);
        at
    }

    fn encode(&self, buf: &mut Vec<u8>, ty: Ty, card: Card, ctx: Ctx<'_>) {
        let scalar = match (self, ty) {
            (MapKey::Bool(b), _) => Scalar::Bool(*b),
            (MapKey::Int(i), Ty::Int32 | Ty::Sint32 | Ty::Sfixed32) => Scalar::I32(*i as i32),
            (MapKey::Int(i), _) => Scalar::I64(*i),
            (MapKey::Uint(u), Ty::Uint32 | Ty::Fixed32) => Scalar::U32(*u as u32),
            (MapKey::Uint(u), _) => Scalar::U64(*u),
            (MapKey::Str(s), _) => Scalar::Str(Cow::Borrowed(s.as_ref())),
        };
        write_scalar(buf, 1, ty, card, scalar, ctx);
    }
}

// === wire writing ===

pub(super) fn write_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn write_key(buf: &mut Vec<u8>, number: u32, wire: u8) {
    write_varint(buf, (u64::from(number) << 3) | u64::from(wire));
}

/// Sets the one-byte length placeholder at `at` to the length of what
/// follows it, widening it in place when longer than 127.
pub(super) fn patch_len(buf: &mut Vec<u8>, at: usize) {
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    let extra = n;
    buf.resize(buf.len() + extra, 0);
    buf.copy_within(at + 1..at + 1 + len, at + 1 + extra);
    buf[at..=at + n].copy_from_slice(&prefix[..=n]);
}

// === visitors (prost-reflect's conversions) ===

pub(super) struct CowStrSeed;

impl<'de> DeserializeSeed<'de> for CowStrSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(CowStrVisitor)
    }
}

struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

struct StringVisitor;

impl Visitor<'_> for StringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

macro_rules! number_visitor {
    ($name:ident, $ty:ty, $what:literal, |$v:ident| $from_str:expr) => {
        struct $name;

        impl Visitor<'_> for $name {
            type Value = $ty;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($what)
            }

            fn visit_str<E: de::Error>(self, $v: &str) -> Result<$ty, E> {
                $from_str
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                v.try_into().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                v.try_into().map_err(E::custom)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                if v.fract() != 0.0 {
                    return Err(E::custom("expected integer value"));
                }
                if v < (<$ty>::MIN as f64) || v > (<$ty>::MAX as f64) {
                    return Err(E::custom("float value out of range"));
                }
                Ok(v as $ty)
            }
        }
    };
}

number_visitor!(Int32Visitor, i32, "a 32-bit signed integer", |v| v
    .parse()
    .map_err(E::custom));
number_visitor!(
    Uint32Visitor,
    u32,
    "a 32-bit unsigned integer or decimal string",
    |v| v.parse().map_err(E::custom)
);
number_visitor!(
    Int64Visitor,
    i64,
    "a 64-bit signed integer or decimal string",
    |v| v.parse().map_err(E::custom)
);
number_visitor!(
    Uint64Visitor,
    u64,
    "a 64-bit unsigned integer or decimal string",
    |v| v.parse().map_err(E::custom)
);

struct DoubleVisitor;

impl Visitor<'_> for DoubleVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a 64-bit floating point value")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match f64::from_str(v) {
            Ok(value) => Ok(value),
            Err(_) if v == "Infinity" => Ok(f64::INFINITY),
            Err(_) if v == "-Infinity" => Ok(f64::NEG_INFINITY),
            Err(_) if v == "NaN" => Ok(f64::NAN),
            Err(err) => Err(E::custom(err)),
        }
    }
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a 32-bit floating point value")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
        if v < f64::from(f32::MIN) || v > f64::from(f32::MAX) {
            Err(E::custom("float value out of range"))
        } else {
            Ok(v as f32)
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
        Ok(v as f32)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
        Ok(v as f32)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
        match f32::from_str(v) {
            Ok(value) => Ok(value),
            Err(_) if v == "Infinity" => Ok(f32::INFINITY),
            Err(_) if v == "-Infinity" => Ok(f32::NEG_INFINITY),
            Err(_) if v == "NaN" => Ok(f32::NAN),
            Err(err) => Err(E::custom(err)),
        }
    }
}

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

pub(super) struct BytesVisitor;

impl Visitor<'_> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base64-encoded string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        let mut buf = Vec::new();
        decode_base64(v, &mut buf).map_err(E::custom)?;
        Ok(buf)
    }
}

/// Appends the bytes of `v`, base64 with or without padding, standard or
/// URL-safe alphabet (as prost-reflect reads them); `buf` as it was when
/// refused.
pub(super) fn decode_base64(v: &str, buf: &mut Vec<u8>) -> Result<(), String> {
    use base64::{
        DecodeError, Engine as _, alphabet,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let start = buf.len();
    let result = match STANDARD.decode_vec(v, buf) {
        Err(DecodeError::InvalidByte(_, b'-' | b'_')) => {
            buf.truncate(start);
            URL_SAFE.decode_vec(v, buf)
        }
        result => result,
    };
    result.map_err(|e| {
        buf.truncate(start);
        format!("invalid base64: {e}")
    })
}

pub(super) struct EnumVisitor<'c>(pub(super) Ctx<'c>, pub(super) u32);

impl Visitor<'_> for EnumVisitor<'_> {
    type Value = Option<i32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or integer")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i32>, E> {
        match self.0.prog.enums[self.1 as usize].number(v) {
            Some(n) => Ok(Some(n)),
            None if self.0.deny_unknown => Err(E::custom("unrecognized enum value")),
            None => Ok(None),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i32>, E> {
        i32::try_from(v).map(Some).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i32>, E> {
        i32::try_from(v).map(Some).map_err(E::custom)
    }
}

struct NullVisitor(bool);

impl Visitor<'_> for NullVisitor {
    type Value = Option<i32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i32>, E> {
        if v == "NULL_VALUE" {
            Ok(Some(0))
        } else if self.0 {
            Err(E::custom("expected null"))
        } else {
            Ok(None)
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i32>, E> {
        Ok(Some(0))
    }
}

pub(super) struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = prost_types::Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a rfc3339 timestamp string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if let Some(t) = time::parse_timestamp(v) {
            return Ok(t); // the plain UTC form, years 1..=9999: in range
        }
        validate_strict_rfc3339(v).map_err(E::custom)?;
        let t: prost_types::Timestamp = v.parse().map_err(E::custom)?;
        if !time::TIMESTAMP_SECONDS.contains(&t.seconds) {
            return Err(E::custom("timestamp out of range"));
        }
        Ok(t)
    }
}

pub(super) struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = prost_types::Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let d: prost_types::Duration = v.parse().map_err(E::custom)?;
        if d.seconds.unsigned_abs() > 315_576_000_000 || d.nanos.unsigned_abs() > 999_999_999 {
            return Err(E::custom("duration out of range"));
        }
        Ok(d)
    }
}

struct FieldMaskVisitor;

impl Visitor<'_> for FieldMaskVisitor {
    type Value = prost_types::FieldMask;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field mask string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut paths = Vec::new();
        for path in v.split(',').filter(|p| !p.is_empty()) {
            let mut result = String::new();
            for (i, part) in path.split('.').enumerate() {
                if i > 0 {
                    result.push('.');
                }
                for ch in part.chars() {
                    if ch.is_ascii_uppercase() {
                        result.push('_');
                        result.push(ch.to_ascii_lowercase());
                    } else if ch == '_' {
                        return Err(E::custom("invalid field mask"));
                    } else {
                        result.push(ch);
                    }
                }
            }
            paths.push(result);
        }
        Ok(prost_types::FieldMask { paths })
    }
}

/// `{}`, at the depth left (as the other containers below).
struct EmptyVisitor(usize);

impl<'de> Visitor<'de> for EmptyVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an empty map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        enter(self.0)?;
        if map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("unexpected value in map"));
        }
        Ok(())
    }
}

struct StructVisitor(usize);

impl<'de> Visitor<'de> for StructVisitor {
    type Value = prost_types::Struct;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let depth = enter(self.0)?;
        let mut fields = std::collections::BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueVisitor(depth))?;
            fields.insert(key, value);
        }
        Ok(prost_types::Struct { fields })
    }
}

struct ListValueVisitor(usize);

impl<'de> Visitor<'de> for ListValueVisitor {
    type Value = prost_types::ListValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let depth = enter(self.0)?;
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(ValueVisitor(depth))? {
            values.push(value);
        }
        Ok(prost_types::ListValue { values })
    }
}

struct ValueVisitor(usize);

impl<'de> DeserializeSeed<'de> for ValueVisitor {
    type Value = prost_types::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = prost_types::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::BoolValue(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::NumberValue(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::StringValue(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::NullValue(0)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ListValueVisitor(self.0)
            .visit_seq(seq)
            .map(|l| kind(prost_types::value::Kind::ListValue(l)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        StructVisitor(self.0)
            .visit_map(map)
            .map(|s| kind(prost_types::value::Kind::StructValue(s)))
    }
}

/// Skips any value, counting its depth (`IgnoredAny` would not).
pub(super) struct Skip(pub(super) usize);

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = enter(self.0)?;
        while seq.next_element_seed(Skip(depth))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = enter(self.0)?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip(depth))?;
        }
        Ok(())
    }
}

fn kind(kind: prost_types::value::Kind) -> prost_types::Value {
    prost_types::Value { kind: Some(kind) }
}

/// prost-reflect's strict RFC 3339 check (upper-case `T` and `Z`).
fn validate_strict_rfc3339(v: &str) -> Result<(), &'static str> {
    let b = v.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize, n: usize| -> bool {
        for _ in 0..n {
            if !b.get(*i).is_some_and(u8::is_ascii_digit) {
                return false;
            }
            *i += 1;
        }
        true
    };
    let ch = |i: &mut usize, c: u8| -> bool {
        if b.get(*i) == Some(&c) {
            *i += 1;
            true
        } else {
            false
        }
    };
    if !(digits(&mut i, 4)
        && ch(&mut i, b'-')
        && digits(&mut i, 2)
        && ch(&mut i, b'-')
        && digits(&mut i, 2))
    {
        return Err("invalid rfc3339 timestamp: invalid date");
    }
    if !ch(&mut i, b'T') {
        return Err("invalid rfc3339 timestamp: expected 'T'");
    }
    if !(digits(&mut i, 2)
        && ch(&mut i, b':')
        && digits(&mut i, 2)
        && ch(&mut i, b':')
        && digits(&mut i, 2))
    {
        return Err("invalid rfc3339 timestamp: invalid time");
    }
    if ch(&mut i, b'.') {
        if !digits(&mut i, 1) {
            return Err("invalid rfc3339 timestamp: empty fractional seconds");
        }
        while digits(&mut i, 1) {}
    }
    if ch(&mut i, b'+') || ch(&mut i, b'-') {
        if !(digits(&mut i, 2) && ch(&mut i, b':') && digits(&mut i, 2)) {
            return Err("invalid rfc3339 timestamp: invalid offset");
        }
    } else if !ch(&mut i, b'Z') {
        return Err("invalid rfc3339 timestamp: expected 'Z', '+' or '-'");
    }
    if i != b.len() {
        return Err("invalid rfc3339 timestamp: expected end of string");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reorder;

    /// The same order whether the buffer has room behind the message or
    /// has to go through a side buffer; what is before `base` untouched.
    #[test]
    fn reorder_is_the_same_with_or_without_room_behind() {
        // Slots 2, 0, 1, then 0 again (it replaces the first 0).
        let message: &[u8] = b"ccccAAbbbA2";
        let segments = [(2, 2, 6), (0, 6, 8), (1, 8, 11), (0, 11, 13)];
        let expected = b"--A2bbbcccc";
        let mut with_room = Vec::with_capacity(64);
        with_room.extend_from_slice(b"--");
        with_room.extend_from_slice(message);
        reorder(&mut with_room, 2, &mut segments.clone());
        assert_eq!(with_room, expected);
        let mut tight = Vec::with_capacity(13);
        tight.extend_from_slice(b"--");
        tight.extend_from_slice(message);
        assert!(tight.capacity() - tight.len() < message.len());
        reorder(&mut tight, 2, &mut segments.clone());
        assert_eq!(tight, expected);
    }
}
