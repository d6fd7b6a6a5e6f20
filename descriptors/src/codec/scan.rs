//! JSON text → wire bytes for the shapes requests mostly have, without
//! serde's visitor machinery: a hand-written tokenizer reads objects, lists,
//! maps, keys, plain strings, numbers, booleans, enums, base64 bytes,
//! Timestamp and Duration, and writes what [`from_json`]'s seeds would
//! write for them.
//!
//! Any other value (a string with an escape, `null`, a well-known type other
//! than Timestamp and Duration, an unknown key's value, a conversion that
//! fails) is found by its extent and handed to `from_json`'s seed for that
//! value, on a serde_json deserializer over just those bytes. What is
//! accepted, and the bytes written, therefore stay `from_json`'s: scalars
//! are converted by its visitors (called with the token this reader took
//! out), nested fields are bookkept by its [`FieldsRead`], and the depth
//! limit is counted at the same places. This reader refuses only what is
//! not JSON, or what a seed refused.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Visitor, value::Error as ValueError};

use super::{
    Card, MessagePlan, Ty, WIRE_LEN, Wkt,
    from_json::{
        CowStrSeed, Ctx, DurationVisitor, EnumVisitor, FieldSeed, FieldsRead, KeySeed, MapKey,
        MessageSeed, NumberSource, PackedSeed, Scalar, Skip, TimestampVisitor, decode_base64,
        emit_bits, emit_number, number_bits, patch_len, sort_map_entries, write_key, write_scalar,
        write_value, write_varint,
    },
};
use prost::Message as _;

/// The document is not JSON, or a seed refused a value of it: the caller
/// runs the prost-reflect reader to say why.
#[derive(Debug)]
pub(crate) struct Refused;

/// Reads `text`, a whole document, as message `m`, appending its encoding
/// to `buf` (which is left part-written when refused).
pub(crate) fn document(ctx: Ctx<'_>, m: u32, text: &str, buf: &mut Vec<u8>) -> Result<(), Refused> {
    let mut s = Scanner {
        text,
        pos: 0,
        entries: Vec::new(),
    };
    s.skip_ws();
    let plan = &ctx.prog.messages[m as usize];
    if plan.wkt.is_none() && s.peek() == Some(b'{') {
        s.message(ctx, plan, buf)?;
    } else {
        s.delegate(|de| MessageSeed { ctx, m, buf }.deserialize(de))?;
    }
    s.skip_ws();
    if s.pos == text.len() {
        Ok(())
    } else {
        Err(Refused)
    }
}

/// Map entries whose list a document keeps between its maps.
const KEPT_ENTRIES: usize = 64;

/// A token this reader took out of the text, for `from_json`'s visitors.
#[derive(Clone, Copy)]
enum Literal<'j> {
    /// A non-negative integer (serde_json's `visit_u64`).
    U64(u64),
    /// A negative integer (serde_json's `visit_i64`).
    I64(i64),
    /// A number with a fraction or an exponent (serde_json's `visit_f64`).
    F64(f64),
    Str(&'j str),
    Bool(bool),
}

impl<'de> NumberSource<'de> for Literal<'_> {
    type Error = ValueError;

    #[inline]
    fn read<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ValueError> {
        match self {
            Literal::U64(n) => v.visit_u64(n),
            Literal::I64(n) => v.visit_i64(n),
            Literal::F64(n) => v.visit_f64(n),
            Literal::Str(s) => v.visit_str(s),
            Literal::Bool(b) => v.visit_bool(b),
        }
    }
}

/// A position in the document.
struct Scanner<'j> {
    text: &'j str,
    pos: usize,
    /// The entries of the maps being read (a map's after its enclosing
    /// map's): key, and where the entry's encoding is in the buffer.
    entries: Vec<(MapKey<'j>, usize, usize)>,
}

impl<'j> Scanner<'j> {
    #[inline]
    fn bytes(&self) -> &'j [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// The next byte, taken.
    #[inline]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Skips JSON whitespace (what serde_json skips).
    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// At a `"`: the string up to the next `"`, if it has no escape or
    /// control character (the position then after it); else `None`, the
    /// position unmoved.
    #[inline]
    fn plain_str(&mut self) -> Option<&'j str> {
        let start = self.pos + 1;
        let end = start + special_at(self.bytes().get(start..)?)?;
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        let s = self.text.get(start..end)?;
        self.pos = end + 1;
        Some(s)
    }

    /// At `-` or a digit: a number, as serde_json hands it over: an
    /// integer as `u64` (not negative) or `i64` (negative), one with a
    /// fraction or an exponent as `f64` (serde_json's `float_roundtrip`
    /// reading is correctly rounded, as `f64::from_str`). `-0`, integers past
    /// 64 bits and floats out of range are not taken here; else `None`, the
    /// position unmoved.
    #[inline]
    fn number(&mut self) -> Option<Literal<'j>> {
        let b = self.bytes();
        let start = self.pos;
        let negative = b.get(start) == Some(&b'-');
        let first = start + usize::from(negative);
        let mut i = first;
        let mut v: u64 = 0;
        let mut overflow = false;
        while let Some(&d) = b.get(i)
            && d.is_ascii_digit()
        {
            match v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
            {
                Some(next) => v = next,
                None => overflow = true,
            }
            i += 1;
        }
        let digits = i - first;
        if digits == 0 || (digits > 1 && b[first] == b'0') {
            return None; // no digits, or a leading zero: not JSON
        }
        if !matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
            if overflow {
                return None;
            }
            let literal = if negative {
                let n = (v as i64).wrapping_neg();
                if n >= 0 {
                    return None;
                }
                Literal::I64(n)
            } else {
                Literal::U64(v)
            };
            self.pos = i;
            return Some(literal);
        }
        if b.get(i) == Some(&b'.') {
            i = digits_after(b, i + 1)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits_after(b, i)?;
        }
        let v: f64 = self.text.get(start..i)?.parse().ok()?;
        if !v.is_finite() {
            return None;
        }
        self.pos = i;
        Some(Literal::F64(v))
    }

    /// At `t` or `f`: the boolean literal; else `None`, the position unmoved.
    #[inline]
    fn boolean(&mut self) -> Option<Literal<'j>> {
        let rest = self.bytes().get(self.pos..)?;
        let (v, len) = if rest.starts_with(b"true") {
            (true, 4)
        } else if rest.starts_with(b"false") {
            (false, 5)
        } else {
            return None;
        };
        self.pos += len;
        Some(Literal::Bool(v))
    }

    /// A string, integer or boolean token, as the number visitors take it.
    #[inline]
    fn literal(&mut self) -> Option<Literal<'j>> {
        match self.peek()? {
            b'"' => self.plain_str().map(Literal::Str),
            b'-' | b'0'..=b'9' => self.number(),
            b't' | b'f' => self.boolean(),
            _ => None,
        }
    }

    /// Has `read` (a `from_json` seed) read the value at the position, on
    /// a serde_json deserializer over just its bytes. (Not inlined: the
    /// readers that call it stay small.)
    #[inline(never)]
    fn delegate<T>(
        &mut self,
        read: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'j>>,
        ) -> Result<T, serde_json::Error>,
    ) -> Result<T, Refused> {
        let end = extent(self.bytes(), self.pos).ok_or(Refused)?;
        let text = self.text.get(self.pos..end).ok_or(Refused)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let value = read(&mut de).map_err(|_| Refused)?;
        de.end().map_err(|_| Refused)?;
        self.pos = end;
        Ok(value)
    }

    /// Expects `byte` after whitespace.
    #[inline]
    fn expect(&mut self, byte: u8) -> Result<(), Refused> {
        self.skip_ws();
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// At `{`: the fields of `plan` (`from_json`'s `read_fields`).
    fn message(
        &mut self,
        ctx: Ctx<'_>,
        plan: &MessagePlan,
        buf: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        let ctx = ctx.enter::<ValueError>().map_err(|_| Refused)?;
        self.pos += 1;
        let mut fields = FieldsRead::new(plan, buf.len());
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            fields.finish(ctx, buf);
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Refused);
            }
            let key = match self.plain_str() {
                Some(name) => plan.field_by_name_after(name, fields.last()),
                None => {
                    let last = fields.last();
                    self.delegate(|de| KeySeed(plan, last).deserialize(de))?
                }
            };
            self.expect(b':')?;
            self.skip_ws();
            match key {
                Some(slot) => {
                    let start = buf.len();
                    if self.field(ctx, plan, slot as usize, buf)? {
                        fields
                            .set(ctx, plan, slot, start, buf)
                            .map_err(|_| Refused)?;
                    }
                }
                None if ctx.deny_unknown => return Err(Refused),
                None => {
                    let depth = ctx.depth_left;
                    self.delegate(|de| Skip(depth).deserialize(de))?;
                }
            }
            self.skip_ws();
            match self.next() {
                Some(b',') => {}
                Some(b'}') => break,
                _ => return Err(Refused),
            }
        }
        fields.finish(ctx, buf);
        Ok(())
    }

    /// Field `slot`'s value (`from_json`'s `FieldSeed`); `true` when it
    /// sets the field.
    fn field(
        &mut self,
        ctx: Ctx<'_>,
        plan: &MessagePlan,
        slot: usize,
        buf: &mut Vec<u8>,
    ) -> Result<bool, Refused> {
        let field = &plan.fields[slot];
        match (field.card, self.peek()) {
            (Card::Repeated, Some(b'[')) => {
                self.list(ctx, field.number, field.ty, field.packed, buf)?;
                Ok(true)
            }
            (Card::Implicit | Card::Explicit, Some(first)) if first != b'n' => {
                self.value(ctx, field.number, field.ty, field.card, buf)
            }
            (Card::Map, Some(b'{')) => {
                self.map(ctx, field.number, field.ty, buf)?;
                Ok(true)
            }
            _ => self.delegate(|de| {
                FieldSeed {
                    ctx,
                    plan,
                    slot,
                    buf,
                }
                .deserialize(de)
            }),
        }
    }

    /// One singular value of type `ty`, written as field `number`
    /// (`from_json`'s `write_value`); `false` when it leaves it unset.
    fn value(
        &mut self,
        ctx: Ctx<'_>,
        number: u32,
        ty: Ty,
        card: Card,
        buf: &mut Vec<u8>,
    ) -> Result<bool, Refused> {
        let start = self.pos;
        let implicit = card == Card::Implicit;
        match ty {
            Ty::Message(m) => {
                let plan = &ctx.prog.messages[m as usize];
                match (plan.wkt, self.peek()) {
                    (None, Some(b'{')) => {
                        write_key(buf, number, WIRE_LEN);
                        let at = buf.len();
                        buf.push(0);
                        self.message(ctx, plan, buf)?;
                        patch_len(buf, at);
                        return Ok(true);
                    }
                    (Some(Wkt::Timestamp), Some(b'"')) => {
                        if let Some(t) = self
                            .plain_str()
                            .and_then(|s| TimestampVisitor.visit_str::<ValueError>(s).ok())
                        {
                            write_message_with(buf, number, |buf| t.encode_raw(buf));
                            return Ok(true);
                        }
                    }
                    (Some(Wkt::Duration), Some(b'"')) => {
                        if let Some(d) = self
                            .plain_str()
                            .and_then(|s| DurationVisitor.visit_str::<ValueError>(s).ok())
                        {
                            write_message_with(buf, number, |buf| d.encode_raw(buf));
                            return Ok(true);
                        }
                    }
                    _ => {}
                }
            }
            Ty::String => {
                if self.peek() == Some(b'"')
                    && let Some(s) = self.plain_str()
                {
                    if !(implicit && s.is_empty()) {
                        write_key(buf, number, WIRE_LEN);
                        write_varint(buf, s.len() as u64);
                        buf.extend_from_slice(s.as_bytes());
                    }
                    return Ok(true);
                }
            }
            Ty::Enum(e) => {
                if let Some(n) = self.enum_number(ctx, e) {
                    write_scalar(buf, number, ty, card, Scalar::Enum(n), ctx);
                    return Ok(true);
                }
            }
            Ty::Bytes => {
                if self.peek() == Some(b'"')
                    && let Some(s) = self.plain_str()
                {
                    let field_start = buf.len();
                    write_key(buf, number, WIRE_LEN);
                    let at = buf.len();
                    buf.push(0);
                    if decode_base64(s, buf).is_ok() {
                        if implicit && buf.len() == at + 1 {
                            buf.truncate(field_start); // empty: the default
                        } else {
                            patch_len(buf, at);
                        }
                        return Ok(true);
                    }
                    buf.truncate(field_start);
                }
            }
            _ => {
                if let Some(bits) = self.literal().and_then(|l| number_bits(l, ty).ok()) {
                    emit_number(buf, number, implicit, bits);
                    return Ok(true);
                }
            }
        }
        self.pos = start;
        self.delegate(|de| write_value(de, ctx, number, ty, card, buf))
    }

    /// At `{`: a map field's entries (`from_json`'s `MapVisitor`), each
    /// written whole where it is read, then put in key order.
    fn map(&mut self, ctx: Ctx<'_>, number: u32, ty: Ty, buf: &mut Vec<u8>) -> Result<(), Refused> {
        let Ty::Message(entry) = ty else {
            return Err(Refused);
        };
        let Some((key_field, value_field)) = ctx.prog.messages[entry as usize].map_entry() else {
            return Err(Refused);
        };
        let ctx = ctx.enter::<ValueError>().map_err(|_| Refused)?;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        let (base, first) = (buf.len(), self.entries.len());
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Refused);
            }
            let text = match self.plain_str() {
                Some(text) => Cow::Borrowed(text),
                None => self.delegate(|de| CowStrSeed.deserialize(de))?,
            };
            let key = MapKey::parse(key_field.ty, text).map_err(|_| Refused)?;
            self.expect(b':')?;
            self.skip_ws();
            let start = buf.len();
            let at = key.open_entry(buf, number, key_field, ctx);
            if self.value(ctx, 2, value_field.ty, value_field.card, buf)? {
                patch_len(buf, at);
                self.entries.push((key, start, buf.len()));
            } else {
                buf.truncate(start);
            }
            self.skip_ws();
            match self.next() {
                Some(b',') => {}
                Some(b'}') => break,
                _ => return Err(Refused),
            }
        }
        if let Some(entries) = self.entries.get_mut(first..) {
            sort_map_entries(buf, base, entries);
        }
        self.entries.truncate(first);
        if first == 0 && self.entries.capacity() > KEPT_ENTRIES {
            // A large map's list is not kept while the rest of the document
            // is read (and the buffer grows).
            self.entries = Vec::new();
        }
        Ok(())
    }

    /// A known enum value's name or an in-range number, of an enum other
    /// than `NullValue` (`from_json`'s `EnumVisitor` when it says `Some`);
    /// else `None`, the position unmoved.
    #[inline]
    fn enum_number(&mut self, ctx: Ctx<'_>, e: u32) -> Option<i32> {
        let plan = &ctx.prog.enums[e as usize];
        if plan.is_null_value {
            return None;
        }
        let start = self.pos;
        let n = match self.literal()? {
            Literal::Str(name) => plan.number(name),
            literal @ (Literal::U64(_) | Literal::I64(_)) => {
                literal.read(EnumVisitor(ctx, e)).ok().flatten()
            }
            Literal::F64(_) | Literal::Bool(_) => None,
        };
        if n.is_none() {
            self.pos = start;
        }
        n
    }

    /// At `[`: a repeated field's elements (`from_json`'s `ListVisitor`).
    fn list(
        &mut self,
        ctx: Ctx<'_>,
        number: u32,
        ty: Ty,
        packed: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        let ctx = ctx.enter::<ValueError>().map_err(|_| Refused)?;
        self.pos += 1;
        let packed = packed && !matches!(ty, Ty::String | Ty::Bytes | Ty::Message(_));
        let start = buf.len();
        let at = start + key_len(number);
        if packed {
            write_key(buf, number, WIRE_LEN);
            buf.push(0);
        }
        let mut any = false;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                if packed {
                    any |= self.packed_element(ctx, ty, buf)?;
                } else {
                    self.value(ctx, number, ty, Card::Explicit, buf)?;
                }
                self.skip_ws();
                match self.next() {
                    Some(b',') => {}
                    Some(b']') => break,
                    _ => return Err(Refused),
                }
            }
        }
        if packed {
            if any {
                patch_len(buf, at);
            } else {
                buf.truncate(start); // an empty list is not written
            }
        }
        Ok(())
    }

    /// One element of a packed list, no key (`from_json`'s `PackedSeed`);
    /// `false` when it writes nothing (an ignored enum name).
    fn packed_element(&mut self, ctx: Ctx<'_>, ty: Ty, buf: &mut Vec<u8>) -> Result<bool, Refused> {
        let start = self.pos;
        if let Ty::Enum(e) = ty {
            if let Some(n) = self.enum_number(ctx, e) {
                write_varint(buf, n as i64 as u64);
                return Ok(true);
            }
        } else if let Some((_, wire, bits)) = self.literal().and_then(|l| number_bits(l, ty).ok()) {
            emit_bits(buf, wire, bits);
            return Ok(true);
        }
        self.pos = start;
        let value = self.delegate(|de| PackedSeed { ctx, ty }.deserialize(de))?;
        Ok(value.is_some_and(|v| {
            v.encode(ty, buf);
            true
        }))
    }
}

/// The index after the digits that start at `i`; `None` when none does.
#[inline]
fn digits_after(b: &[u8], i: usize) -> Option<usize> {
    let end = i + b
        .get(i..)?
        .iter()
        .take_while(|d| d.is_ascii_digit())
        .count();
    (end > i).then_some(end)
}

/// Field `number` as a message whose fields `write` appends.
#[inline]
fn write_message_with(buf: &mut Vec<u8>, number: u32, write: impl FnOnce(&mut Vec<u8>)) {
    write_key(buf, number, WIRE_LEN);
    let at = buf.len();
    buf.push(0);
    write(buf);
    patch_len(buf, at);
}

/// The length of a length-delimited key of field `number`.
#[inline]
fn key_len(number: u32) -> usize {
    let key = (u64::from(number) << 3) | u64::from(WIRE_LEN);
    (64 - key.leading_zeros() as usize).div_ceil(7).max(1)
}

/// The index of the first `"`, `\` or control character in `b`, eight
/// bytes at a time.
#[inline]
fn special_at(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        // A byte's high bit is set where it is a quote, a backslash or below
        // 0x20; the lowest one set is exact (borrows only run upwards).
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// The end of the JSON value that starts at `start` (its first byte), found
/// by brackets and string quotes alone, in one pass with no recursion: what
/// is between is for serde_json to judge. `None` when it does not end.
fn extent(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut depth = 0usize;
    loop {
        let Some(&c) = b.get(i) else {
            return (depth == 0 && i > start).then_some(i);
        };
        match c {
            b'"' => {
                i = string_end(b, i + 1)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return (i > start).then_some(i);
                }
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' | b':' | b' ' | b'\n' | b'\t' | b'\r' if depth == 0 => {
                return (i > start).then_some(i);
            }
            _ => {}
        }
        i += 1;
    }
}

/// The index after the `"` that ends the string whose text starts at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += b.get(i..)?.iter().position(|&c| c == b'"' || c == b'\\')?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2; // the escaped byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_at_finds_the_first_quote_backslash_or_control_byte() {
        for text in [
            "",
            "a",
            "abc\"",
            "abcdefgh\"",
            "abcdefghi\\",
            "\u{1}",
            "abcdefg\u{1f}x",
            "é\"",
            "ab cd ef gh\"",
        ] {
            let b = text.as_bytes();
            let want = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            assert_eq!(special_at(b), want, "{text:?}");
        }
        // Every position in a 20-byte run, each special byte, after bytes
        // just above and below the tested values.
        for len in 0..20 {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                for filler in [b'!', b'#', b'[', b']', 0x20, 0x7f, 0x80, 0xff] {
                    let mut b = vec![filler; len];
                    b.push(special);
                    b.extend_from_slice(b"\"\"");
                    assert_eq!(special_at(&b), Some(len), "{len} {special} {filler}");
                }
            }
        }
    }

    #[test]
    fn extent_ends_each_kind_of_value() {
        let cases: &[(&str, Option<usize>)] = &[
            ("1,", Some(1)),
            ("-12.5e3}", Some(7)),
            ("true", Some(4)),
            ("\"a\\\"b\",", Some(6)),
            ("{\"a\":[1,{\"b\":\"]}\"}]}, 2", Some(20)),
            ("[[]] ", Some(4)),
            ("[1, 2", None),
            ("\"open", None),
            ("]", None),
            (",", None),
        ];
        for &(text, want) in cases {
            assert_eq!(extent(text.as_bytes(), 0), want, "{text}");
        }
    }

    #[test]
    fn key_len_is_the_varint_length_of_the_key() {
        for number in [1, 15, 16, 2047, 2048, 262_143, 262_144, 536_870_911] {
            let mut buf = Vec::new();
            write_key(&mut buf, number, WIRE_LEN);
            assert_eq!(key_len(number), buf.len(), "{number}");
        }
    }
}
