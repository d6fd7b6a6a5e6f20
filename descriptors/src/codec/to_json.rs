//! Wire bytes → JSON text, driven by a [`Program`].
//!
//! Each message level is read once into a list of field occurrences (tag,
//! wire type, value or slice; unknown fields are checked and skipped; kept
//! on the stack when few and in canonical order, see `to_json/in_order.rs`),
//! put in field number order when the bytes were not (a stable sort, so the
//! last occurrence of a singular field still wins), and written straight
//! into the output: scalars last-wins, singular messages merged across
//! occurrences, repeated fields packed or not, maps in sorted key order (last
//! entry of a key wins), oneofs as a decoder sees them (the member set last
//! wins, and only its occurrences after another member was set count).
//!
//! Recursion is bounded: by [`super::nesting::check_nesting`], which the
//! caller runs first, or, for a type written before ([`write_unchecked`]),
//! by the writer itself, which stops wherever that pre-pass might refuse
//! the bytes (then the caller runs it, and the writer again).

use base64::Engine as _;
use prost::Message as _;

use super::{
    Card, Codec, FieldPlan, MessagePlan, Program, Ty, WIRE_END_GROUP, WIRE_FIXED32, WIRE_FIXED64,
    WIRE_LEN, WIRE_START_GROUP, WIRE_VARINT, Wkt, time,
};
use crate::{error::DescriptorError, json::JsonOptions};

mod in_order;
use in_order::{FEW, Level, in_order};

/// Why a rendering stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The bytes or their content cannot be rendered.
    Invalid(String),
    /// The output passed `max_json_output_bytes`.
    TooLarge,
    /// A type the plan does not cover (groups, extensions): use prost-reflect.
    Unsupported,
    /// Writing bytes no pre-pass has bounded ([`Writer::unchecked`]): they
    /// might nest deeper than the pre-pass allows, hold groups (whose depth
    /// it counts) or `Any` payloads past its budget; it has to judge them.
    Recheck,
}

impl From<Stop> for DescriptorError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Invalid(message) => DescriptorError::InvalidProto(message),
            Stop::TooLarge => DescriptorError::JsonTooLarge { max: 0 },
            Stop::Unsupported => DescriptorError::InvalidProto("unsupported type".to_owned()),
            Stop::Recheck => DescriptorError::InvalidProto("not checked".to_owned()),
        }
    }
}

type Result<T> = std::result::Result<T, Stop>;

fn invalid(message: impl Into<String>) -> Stop {
    Stop::Invalid(message.into())
}

/// One occurrence of a known field in a message's bytes (32 bytes: one
/// is kept per field occurrence of each level being written).
#[derive(Clone, Copy)]
struct Occ<'a> {
    /// Length-delimited payload.
    data: &'a [u8],
    /// Varint, fixed32 or fixed64 value.
    num: u64,
    slot: u32,
    wire: u8,
}

impl Occ<'_> {
    /// A placeholder.
    const NONE: Occ<'static> = Occ {
        data: &[],
        num: 0,
        slot: 0,
        wire: 0,
    };
}

/// Writes messages of one program family (Any payloads switch programs).
pub(crate) struct Writer<'o, 'a> {
    codec: &'o Codec,
    out: &'o mut Vec<u8>,
    /// `out.len()` may not pass this.
    limit: usize,
    emit_unpopulated: bool,
    proto_names: bool,
    enums_as_ints: bool,
    /// Cleared occurrence lists, reused across message levels.
    pool: Vec<Vec<Occ<'a>>>,
    /// The pre-pass ([`super::nesting::check_nesting`]) has bounded the
    /// bytes; else (see [`Writer::unchecked`]) what it would judge stops
    /// the writing with [`Stop::Recheck`].
    checked: bool,
    /// Message levels entered (the root is 1), and how many may be.
    level: usize,
    max_level: usize,
    /// `Any` payload bytes still allowed.
    any_left: usize,
}

impl<'o, 'a> Writer<'o, 'a> {
    pub(crate) fn new(codec: &'o Codec, opts: &JsonOptions, out: &'o mut Vec<u8>) -> Self {
        let limit = out.len().saturating_add(opts.max_json_output_bytes);
        Self {
            codec,
            out,
            limit,
            emit_unpopulated: opts.emit_unpopulated,
            proto_names: opts.preserve_proto_field_names,
            enums_as_ints: opts.enums_as_ints,
            pool: Vec::new(),
            checked: true,
            level: 0,
            max_level: usize::MAX,
            any_left: usize::MAX,
        }
    }

    /// A writer for bytes no pre-pass has bounded, which stops with
    /// [`Stop::Recheck`] (or another error) wherever the pre-pass might
    /// refuse them, so that a message written whole is one the pre-pass
    /// accepts: past `max_level` message levels (a level adds at most two
    /// JSON levels and two of the pre-pass's frames: a map entry and its
    /// value), at a group, past `any_budget` bytes of `Any` payloads, at an
    /// `Any` payload of a type the plans do not cover, or where a message is
    /// only checked, not written (a cleared oneof member, an overwritten
    /// map value).
    pub(crate) fn unchecked(
        codec: &'o Codec,
        opts: &JsonOptions,
        out: &'o mut Vec<u8>,
        max_level: usize,
        any_budget: usize,
    ) -> Self {
        Self {
            checked: false,
            max_level,
            any_left: any_budget,
            ..Self::new(codec, opts, out)
        }
    }

    fn check_limit(&self) -> Result<()> {
        if self.out.len() > self.limit {
            Err(Stop::TooLarge)
        } else {
            Ok(())
        }
    }

    /// Writes message `m` of `prog`, whose encoding is the concatenation of `chunks`.
    pub(crate) fn message(&mut self, prog: &Program, m: u32, chunks: &[&'a [u8]]) -> Result<()> {
        if self.level >= self.max_level {
            return Err(Stop::Recheck);
        }
        self.level += 1;
        let written = self.message_in_level(prog, m, chunks);
        self.level -= 1;
        written
    }

    fn message_in_level(&mut self, prog: &Program, m: u32, chunks: &[&'a [u8]]) -> Result<()> {
        let plan = &prog.messages[m as usize];
        if plan.unsupported {
            return Err(Stop::Unsupported);
        }
        if let Some(wkt) = plan.wkt {
            return self.wkt(prog, plan, wkt, chunks);
        }
        self.out.push(b'{');
        let mut first = true;
        self.fields(prog, m, chunks, &mut first)?;
        self.out.push(b'}');
        self.check_limit()
    }

    /// Writes only field `slot` of message `m` (its value, not its key), at
    /// its default when absent: the `response_body` of an HTTP rule.
    pub(crate) fn field_value(
        &mut self,
        prog: &Program,
        m: u32,
        number: u32,
        bytes: &'a [u8],
    ) -> Result<()> {
        let plan = &prog.messages[m as usize];
        if plan.unsupported {
            return Err(Stop::Unsupported);
        }
        let mut occs = Vec::new();
        scan(plan, &[bytes], &mut occs, self.checked)?;
        for occ in resolve_oneofs(plan, &mut occs) {
            validate_occ(prog, plan, &occ, self.checked)?;
        }
        let Some(slot) = plan.slot(number) else {
            return Err(invalid("no such field"));
        };
        let group: Vec<Occ<'a>> = occs.into_iter().filter(|o| o.slot == slot as u32).collect();
        let field = &plan.fields[slot];
        if group.is_empty() {
            // As the tree codec did: an absent scalar with presence is `null`.
            if field.card == Card::Explicit && !matches!(field.ty, Ty::Message(_)) {
                self.out.extend_from_slice(b"null");
                return Ok(());
            }
            return self.default_value(prog, field.ty, field.card, true);
        }
        self.field_body(prog, plan, slot, &group)
    }

    /// Writes the fields of message `m` as `"key":value` pairs, after a
    /// comma unless `first`.
    fn fields(
        &mut self,
        prog: &Program,
        m: u32,
        chunks: &[&'a [u8]],
        first: &mut bool,
    ) -> Result<()> {
        let plan = &prog.messages[m as usize];
        let mut occs = if let [bytes] = chunks {
            let mut few = [Occ::NONE; FEW];
            match in_order(plan, bytes, &mut few, self.checked)? {
                Level::Whole(n) => return self.write_fields(prog, plan, &few[..n], first),
                Level::Stopped { n, next, rest } => {
                    // Go on from there: nothing is read twice.
                    let mut occs = self.occ_list();
                    occs.extend_from_slice(&few[..n]);
                    occs.push(next);
                    scan(plan, &[rest], &mut occs, self.checked)?;
                    occs
                }
            }
        } else {
            let mut occs = self.occ_list();
            scan(plan, chunks, &mut occs, self.checked)?;
            occs
        };
        if plan.oneof_count() != 0 {
            for occ in resolve_oneofs(plan, &mut occs) {
                validate_occ(prog, plan, &occ, self.checked)?;
            }
        }
        if !occs.windows(2).all(|w| w[0].slot <= w[1].slot) {
            occs.sort_by_key(|o| o.slot);
        }
        self.write_fields(prog, plan, &occs, first)?;
        occs.clear();
        self.pool.push(occs);
        Ok(())
    }

    /// A cleared occurrence list (reused across levels), with room for
    /// more than [`FEW`] (what a level that is not on the stack mostly needs).
    fn occ_list(&mut self) -> Vec<Occ<'a>> {
        let mut occs = self.pool.pop().unwrap_or_default();
        occs.reserve(2 * FEW);
        occs
    }

    /// Writes the fields of a message from its occurrences (in field
    /// number order, oneofs resolved), after a comma unless `first`.
    fn write_fields(
        &mut self,
        prog: &Program,
        plan: &MessagePlan,
        occs: &[Occ<'a>],
        first: &mut bool,
    ) -> Result<()> {
        let mut next_slot = 0usize;
        let mut i = 0usize;
        while i < occs.len() {
            let slot = occs[i].slot as usize;
            let mut j = i + 1;
            while j < occs.len() && occs[j].slot as usize == slot {
                j += 1;
            }
            if self.emit_unpopulated {
                self.defaults(prog, plan, next_slot, slot, first)?;
            }
            next_slot = slot + 1;
            let group = &occs[i..j];
            i = j;
            // Oneof losers were dropped by `resolve_oneofs`.
            let field = &plan.fields[slot];
            if group.len() > 1 && matches!(field.card, Card::Implicit | Card::Explicit) {
                // Overwritten values were decoded all the same.
                if let (Ty::String, Some((_, overwritten))) = (field.ty, group.split_last()) {
                    for occ in overwritten {
                        validate_occ(prog, plan, occ, self.checked)?;
                    }
                }
            }
            if !self.emit_unpopulated && !self.populated(prog, field.ty, field.card, group) {
                continue;
            }
            self.key(plan, slot, first);
            self.field_body(prog, plan, slot, group)?;
            self.check_limit()?;
        }
        if self.emit_unpopulated {
            self.defaults(prog, plan, next_slot, plan.fields.len(), first)?;
        }
        Ok(())
    }

    fn key(&mut self, plan: &MessagePlan, slot: usize, first: &mut bool) {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        put_short(self.out, plan.key(slot, self.proto_names));
    }

    /// Writes the defaults of the absent fields `from..to` that have no presence.
    fn defaults(
        &mut self,
        prog: &Program,
        plan: &MessagePlan,
        from: usize,
        to: usize,
        first: &mut bool,
    ) -> Result<()> {
        for slot in from..to {
            let field = &plan.fields[slot];
            if field.card == Card::Explicit {
                continue;
            }
            self.key(plan, slot, first);
            self.default_value(prog, field.ty, field.card, false)?;
        }
        Ok(())
    }

    /// The JSON of an absent field (or a list, map or implicit scalar at its
    /// default). `message_default`: an absent message is `{}` (else `null`).
    fn default_value(
        &mut self,
        prog: &Program,
        ty: Ty,
        card: Card,
        message_default: bool,
    ) -> Result<()> {
        match card {
            Card::Repeated => self.out.extend_from_slice(b"[]"),
            Card::Map => self.out.extend_from_slice(b"{}"),
            Card::Implicit | Card::Explicit => match ty {
                Ty::Message(m) if message_default => self.message(prog, m, &[])?,
                Ty::Message(_) => self.out.extend_from_slice(b"null"),
                Ty::Enum(e) => {
                    let default = prog.enums[e as usize].default;
                    self.enum_value(prog, e, default);
                }
                _ => self.scalar(ty, 0, &[])?,
            },
        }
        Ok(())
    }

    /// Whether a field with these occurrences is written without `emit_unpopulated`.
    fn populated(&self, prog: &Program, ty: Ty, card: Card, group: &[Occ<'_>]) -> bool {
        let Some(last) = group.last() else {
            return false;
        };
        match card {
            Card::Explicit => true,
            Card::Map => true,
            Card::Repeated => {
                // Packed records may be empty.
                group
                    .iter()
                    .any(|o| o.wire != WIRE_LEN || !o.data.is_empty() || !packable(ty))
            }
            Card::Implicit => !is_default(prog, ty, last),
        }
    }

    /// Writes the value of a field present in `group` (one slot, in order).
    fn field_body(
        &mut self,
        prog: &Program,
        plan: &MessagePlan,
        slot: usize,
        group: &[Occ<'a>],
    ) -> Result<()> {
        let field = &plan.fields[slot];
        let Some(last) = group.last() else {
            return Ok(());
        };
        match field.card {
            Card::Implicit | Card::Explicit => match field.ty {
                Ty::Message(m) => {
                    if group.len() == 1 {
                        self.message(prog, m, &[last.data])
                    } else {
                        let chunks: Vec<&'a [u8]> = group.iter().map(|o| o.data).collect();
                        self.message(prog, m, &chunks)
                    }
                }
                ty => self.value(prog, ty, last),
            },
            Card::Repeated => {
                self.out.push(b'[');
                let mut first = true;
                for occ in group {
                    if occ.wire == WIRE_LEN && packable(field.ty) {
                        let mut data = occ.data;
                        let wire = element_wire(field.ty);
                        while !data.is_empty() {
                            let num = match wire {
                                WIRE_VARINT => read_varint(&mut data)?,
                                WIRE_FIXED32 => read_fixed32(&mut data)?,
                                _ => read_fixed64(&mut data)?,
                            };
                            if !first {
                                self.out.push(b',');
                            }
                            first = false;
                            self.value_num(prog, field.ty, num)?;
                        }
                    } else {
                        if !first {
                            self.out.push(b',');
                        }
                        first = false;
                        match field.ty {
                            Ty::Message(m) => self.message(prog, m, &[occ.data])?,
                            ty => self.value(prog, ty, occ)?,
                        }
                    }
                    self.check_limit()?;
                }
                self.out.push(b']');
                Ok(())
            }
            Card::Map => self.map(prog, field.ty, group),
        }
    }

    fn map(&mut self, prog: &Program, ty: Ty, group: &[Occ<'a>]) -> Result<()> {
        let Ty::Message(entry) = ty else {
            return Err(invalid("map field without an entry type"));
        };
        // The entries are a level down (the pre-pass's frames).
        if self.level >= self.max_level {
            return Err(Stop::Recheck);
        }
        let Some((key_field, value_field)) = prog.messages[entry as usize].map_entry() else {
            return Err(invalid("map entry without key or value"));
        };
        let message_value = matches!(value_field.ty, Ty::Message(_));
        // (key, index of the entry in `group`), and each entry's last value
        // by that index (apart: the sort moves less): each entry is read
        // whole (and checked) here; one with a message value is read again
        // for its value's chunks when written.
        let mut entries: Vec<(MapKey<'a>, u32)> = Vec::with_capacity(group.len());
        let mut values: Vec<Option<Occ<'a>>> = Vec::with_capacity(group.len());
        let mut merged: Vec<Occ<'a>> = Vec::new();
        for (i, occ) in group.iter().enumerate() {
            let (key, value) =
                map_entry(occ.data, key_field, value_field, &mut merged, self.checked)?;
            entries.push((key, i as u32));
            values.push(value);
        }
        // Stable: the last entry of a key stays last.
        if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.out.push(b'{');
        let mut first = true;
        let mut i = 0;
        while i < entries.len() {
            // The last entry of each key wins.
            let mut j = i;
            while j + 1 < entries.len() && entries[j + 1].0 == entries[i].0 {
                j += 1;
            }
            if let Ty::Message(m) = value_field.ty {
                // Overwritten entries were decoded all the same.
                for &(_, index) in &entries[i..j] {
                    let data = group[index as usize].data;
                    if !self.checked {
                        return Err(Stop::Recheck);
                    }
                    let value = entry_value(data, true, &mut merged, self.checked)?;
                    for o in merged.iter().chain(&value) {
                        validate_message(prog, m, o.data)?;
                    }
                }
            }
            let (key, index) = &entries[j];
            let value = if message_value {
                let data = group[*index as usize].data;
                entry_value(data, true, &mut merged, self.checked)?
            } else {
                merged.clear();
                values.get(*index as usize).copied().flatten()
            };
            i = j + 1;
            if !first {
                self.out.push(b',');
            }
            first = false;
            key.write(self.out);
            self.out.push(b':');
            match (value_field.ty, value) {
                (Ty::Message(m), Some(last)) if merged.is_empty() => {
                    self.message(prog, m, &[last.data])?;
                }
                (Ty::Message(m), _) => {
                    let chunks: Vec<&'a [u8]> =
                        merged.iter().chain(&value).map(|o| o.data).collect();
                    self.message(prog, m, &chunks)?;
                }
                (ty, Some(last)) => self.value(prog, ty, &last)?,
                (ty, None) => self.default_value(prog, ty, Card::Implicit, true)?,
            }
            self.check_limit()?;
        }
        self.out.push(b'}');
        Ok(())
    }

    /// A non-message value.
    fn value(&mut self, prog: &Program, ty: Ty, occ: &Occ<'a>) -> Result<()> {
        match ty {
            Ty::Enum(e) => {
                self.enum_value(prog, e, occ.num as i32);
                Ok(())
            }
            Ty::Message(m) => self.message(prog, m, &[occ.data]),
            _ => self.scalar(ty, occ.num, occ.data),
        }
    }

    /// An element of a packed record.
    fn value_num(&mut self, prog: &Program, ty: Ty, num: u64) -> Result<()> {
        match ty {
            Ty::Enum(e) => {
                self.enum_value(prog, e, num as i32);
                Ok(())
            }
            _ => self.scalar(ty, num, &[]),
        }
    }

    fn enum_value(&mut self, prog: &Program, e: u32, number: i32) {
        let plan = &prog.enums[e as usize];
        if plan.is_null_value {
            self.out.extend_from_slice(b"null");
        } else if self.enums_as_ints {
            write_int(self.out, number);
        } else {
            match plan.name(number) {
                Some(name) => self.out.extend_from_slice(name.as_bytes()),
                None => write_int(self.out, number),
            }
        }
    }

    fn scalar(&mut self, ty: Ty, num: u64, data: &[u8]) -> Result<()> {
        let out = &mut *self.out;
        match ty {
            Ty::Double => write_f64(out, f64::from_bits(num)),
            Ty::Float => write_f32(out, f32::from_bits(num as u32)),
            Ty::Int32 | Ty::Sfixed32 => write_int(out, num as i32),
            Ty::Uint32 | Ty::Fixed32 => write_int(out, num as u32),
            Ty::Sint32 => write_int(out, zigzag32(num)),
            Ty::Int64 | Ty::Sfixed64 => write_quoted_int(out, num as i64),
            Ty::Uint64 | Ty::Fixed64 => write_quoted_int(out, num),
            Ty::Sint64 => write_quoted_int(out, zigzag64(num)),
            Ty::Bool => out.extend_from_slice(if num != 0 { b"true" } else { b"false" }),
            Ty::String => write_wire_str(out, data)?,
            Ty::Bytes => write_base64(out, data),
            Ty::Enum(_) | Ty::Message(_) => return Err(invalid("not a scalar")),
        }
        Ok(())
    }

    // === well-known types ===

    fn wkt(
        &mut self,
        prog: &Program,
        plan: &MessagePlan,
        wkt: Wkt,
        chunks: &[&'a [u8]],
    ) -> Result<()> {
        let joined;
        let bytes: &[u8] = match chunks {
            [] => &[],
            [one] => one,
            many => {
                joined = many.concat();
                &joined
            }
        };
        let decode_err = |e: prost::DecodeError| invalid(format!("error decoding: {e}"));
        let walked = matches!(
            wkt,
            Wkt::Any | Wkt::Struct | Wkt::Value | Wkt::ListValue | Wkt::Empty
        );
        // Timestamp and Duration as encoders write them, read here (the
        // checks and prost's decoding below cost more than the printing).
        let seconds_nanos = match wkt {
            Wkt::Timestamp | Wkt::Duration => seconds_nanos(bytes),
            _ => None,
        };
        if !self.checked && !walked && seconds_nanos.is_none() {
            // prost skips groups the pre-pass would count.
            check_wire_bytes(bytes, false)?;
        }
        match wkt {
            Wkt::Any => return self.any(plan, chunks),
            Wkt::Timestamp => {
                let t = match seconds_nanos {
                    Some((seconds, nanos)) => prost_types::Timestamp { seconds, nanos },
                    None => prost_types::Timestamp::decode(bytes).map_err(decode_err)?,
                };
                if !time::TIMESTAMP_SECONDS.contains(&t.seconds) {
                    return Err(invalid("timestamp out of range"));
                }
                if time::write_timestamp(self.out, &t).is_none() {
                    write_display(self.out, &t);
                }
            }
            Wkt::Duration => {
                let d = match seconds_nanos {
                    Some((seconds, nanos)) => prost_types::Duration { seconds, nanos },
                    None => prost_types::Duration::decode(bytes).map_err(decode_err)?,
                };
                if d.seconds.unsigned_abs() > 315_576_000_000
                    || d.nanos.unsigned_abs() > 999_999_999
                {
                    return Err(invalid("duration out of range"));
                }
                time::write_duration(self.out, &d);
            }
            Wkt::FieldMask => {
                let mask = prost_types::FieldMask::decode(bytes).map_err(decode_err)?;
                let mut result = String::new();
                for path in &mask.paths {
                    if !result.is_empty() {
                        result.push(',');
                    }
                    for (i, part) in path.split('.').enumerate() {
                        if i > 0 {
                            result.push('.');
                        }
                        snake_to_camel(&mut result, part).map_err(|()| {
                            invalid("cannot roundtrip field name through camelcase")
                        })?;
                    }
                }
                write_str(self.out, &result);
            }
            Wkt::Empty => {
                check_wire_bytes(bytes, self.checked)?;
                self.out.extend_from_slice(b"{}");
            }
            Wkt::Struct | Wkt::Value | Wkt::ListValue => {
                return self.struct_like(prog, plan, wkt, chunks);
            }
            Wkt::DoubleValue => write_f64(self.out, f64::decode(bytes).map_err(decode_err)?),
            Wkt::FloatValue => write_f32(self.out, f32::decode(bytes).map_err(decode_err)?),
            Wkt::Int64Value => write_quoted_int(self.out, i64::decode(bytes).map_err(decode_err)?),
            Wkt::UInt64Value => write_quoted_int(self.out, u64::decode(bytes).map_err(decode_err)?),
            Wkt::Int32Value => write_int(self.out, i32::decode(bytes).map_err(decode_err)?),
            Wkt::UInt32Value => write_int(self.out, u32::decode(bytes).map_err(decode_err)?),
            Wkt::BoolValue => {
                let b = bool::decode(bytes).map_err(decode_err)?;
                self.out
                    .extend_from_slice(if b { b"true" } else { b"false" });
            }
            Wkt::StringValue => write_str(self.out, &String::decode(bytes).map_err(decode_err)?),
            Wkt::BytesValue => {
                write_base64(self.out, &Vec::<u8>::decode(bytes).map_err(decode_err)?)
            }
        }
        let _ = plan;
        self.check_limit()
    }

    /// `Struct` (its map in key order), `ListValue` (an array) and `Value`
    /// (the JSON value its `kind` holds, `null` when unset).
    fn struct_like(
        &mut self,
        prog: &Program,
        plan: &MessagePlan,
        wkt: Wkt,
        chunks: &[&'a [u8]],
    ) -> Result<()> {
        let mut occs: Vec<Occ<'a>> = Vec::new();
        scan(plan, chunks, &mut occs, self.checked)?;
        match wkt {
            Wkt::Struct => {
                let Some(field) = plan.fields.first().filter(|f| f.number == 1) else {
                    return Err(invalid("google.protobuf.Struct without fields"));
                };
                let group: Vec<Occ<'a>> = occs.into_iter().filter(|o| o.slot == 0).collect();
                self.map(prog, field.ty, &group)?;
            }
            Wkt::ListValue => {
                self.out.push(b'[');
                let mut first = true;
                for occ in occs
                    .iter()
                    .filter(|o| plan.fields[o.slot as usize].number == 1)
                {
                    let Ty::Message(m) = plan.fields[occ.slot as usize].ty else {
                        return Err(invalid("google.protobuf.ListValue without values"));
                    };
                    if !first {
                        self.out.push(b',');
                    }
                    first = false;
                    self.message(prog, m, &[occ.data])?;
                }
                self.out.push(b']');
            }
            _ => {
                for occ in resolve_oneofs(plan, &mut occs) {
                    validate_occ(prog, plan, &occ, self.checked)?;
                }
                let Some(last) = occs.last().copied() else {
                    self.out.extend_from_slice(b"null");
                    return self.check_limit();
                };
                let field = &plan.fields[last.slot as usize];
                match (field.number, field.ty) {
                    (5 | 6, Ty::Message(m)) => {
                        let chunks: Vec<&'a [u8]> = occs
                            .iter()
                            .filter(|o| o.slot == last.slot)
                            .map(|o| o.data)
                            .collect();
                        self.message(prog, m, &chunks)?;
                    }
                    (1, _) => self.out.extend_from_slice(b"null"),
                    (2, Ty::Double) => {
                        let n = f64::from_bits(last.num);
                        if !n.is_finite() {
                            return Err(invalid(
                                "cannot serialize non-finite double in google.protobuf.Value",
                            ));
                        }
                        write_f64(self.out, n);
                    }
                    (3 | 4, ty) => self.scalar(ty, last.num, last.data)?,
                    _ => self.out.extend_from_slice(b"null"),
                }
            }
        }
        self.check_limit()
    }

    fn any(&mut self, plan: &MessagePlan, chunks: &[&'a [u8]]) -> Result<()> {
        // The last `type_url` (1) and `value` (2), borrowed from the input.
        let mut occs = self.pool.pop().unwrap_or_default();
        scan(plan, chunks, &mut occs, self.checked)?;
        let mut type_url = "";
        let mut value: &'a [u8] = &[];
        for occ in &occs {
            match plan.fields[occ.slot as usize].number {
                1 => type_url = utf8(occ.data)?,
                2 => value = occ.data,
                _ => {}
            }
        }
        occs.clear();
        self.pool.push(occs);
        let Some((_, name)) = type_url.rsplit_once('/') else {
            return Err(invalid(format!(
                "unsupported type url '{type_url}': missing at least one '/'"
            )));
        };
        let Some(m) = self.codec.find(name) else {
            return Err(invalid(format!("message '{name}' not found")));
        };
        let payload = self.codec.program();
        let root = &payload.messages[m as usize];
        if root.unsupported {
            return Err(Stop::Unsupported);
        }
        if !self.checked {
            // The pre-pass's walk: types it covers, within its budget.
            if root.unsupported_within {
                return Err(Stop::Recheck);
            }
            self.any_left = self
                .any_left
                .checked_sub(value.len())
                .ok_or(Stop::Recheck)?;
        }
        self.out.extend_from_slice(b"{\"@type\":");
        write_str(self.out, type_url);
        if root.wkt.is_some() {
            self.out.extend_from_slice(b",\"value\":");
            self.message(payload, m, &[value])?;
        } else {
            let mut first = false;
            self.fields(payload, m, &[value], &mut first)?;
        }
        self.out.push(b'}');
        self.check_limit()
    }
}

/// The `seconds` (1, int64) and `nanos` (2, int32) of a Timestamp or a
/// Duration whose bytes hold each at most once, in that order, and nothing
/// else (as encoders write them): what prost decodes from them. `None` for
/// any other bytes, which prost decodes (and judges) instead.
fn seconds_nanos(mut bytes: &[u8]) -> Option<(i64, i32)> {
    let mut seconds = 0;
    let mut nanos = 0;
    if let [0x08, rest @ ..] = bytes {
        bytes = rest;
        seconds = read_varint(&mut bytes).ok()? as i64;
    }
    if let [0x10, rest @ ..] = bytes {
        bytes = rest;
        nanos = read_varint(&mut bytes).ok()? as i32;
    }
    bytes.is_empty().then_some((seconds, nanos))
}

/// Writes message `root` of `codec` from `proto` with no pre-pass (see
/// [`Writer::unchecked`]), its output sized from the last message of its
/// type (the pre-pass's message count sizes it otherwise): `None` when no
/// message of the type was written yet, or when the writer stopped (`out`
/// then as it was), for the caller to check the bytes and write them.
pub(crate) fn write_unchecked(
    codec: &Codec,
    root: u32,
    proto: &[u8],
    opts: &JsonOptions,
    out: &mut Vec<u8>,
) -> Option<()> {
    let prog = codec.program();
    let plan = &prog.messages[root as usize];
    let estimate = plan
        .json_size(proto.len())?
        .min(opts.max_json_output_bytes.saturating_add(1));
    if out.capacity() - out.len() < estimate {
        out.reserve_exact(estimate);
    }
    let start = out.len();
    // The pre-pass's bounds (`nesting::check_nesting`): its JSON depth and
    // frames, at most two per level, and its `Any` budget.
    let max_level = opts.depth_limit().saturating_add(1) / 2;
    let any_budget = proto
        .len()
        .saturating_mul(crate::wire::MAX_ANY_EXPANSION)
        .saturating_add(crate::wire::ANY_ALLOWANCE_BYTES);
    let mut writer = Writer::unchecked(codec, opts, out, max_level, any_budget);
    if writer.message(prog, root, &[proto]).is_ok() {
        plan.learn_json_size(proto.len(), out.len() - start);
        return Some(());
    }
    out.truncate(start);
    None
}

// === scanning ===

/// Reads every field of a message (the concatenation of `chunks`) into
/// `occs`: known fields checked against their wire type, unknown ones skipped.
/// `checked`: the pre-pass has walked the bytes (else [`read_field`]
/// stops where it might not have).
fn scan<'a>(
    plan: &MessagePlan,
    chunks: &[&'a [u8]],
    occs: &mut Vec<Occ<'a>>,
    checked: bool,
) -> Result<()> {
    for chunk in chunks {
        let mut data = *chunk;
        while !data.is_empty() {
            if let Some(occ) = read_field(plan, &mut data, checked)? {
                occs.push(occ);
            }
        }
    }
    Ok(())
}

/// Reads the next field of a message's bytes: an occurrence of a known
/// field (checked against its wire type), or `None` for an unknown one
/// (checked and skipped). Unless `checked` (by the pre-pass), what the
/// pre-pass reads otherwise stops it ([`Stop::Recheck`]): an unknown group,
/// a map entry not length-delimited.
#[inline(always)]
fn read_field<'a>(
    plan: &MessagePlan,
    data: &mut &'a [u8],
    checked: bool,
) -> Result<Option<Occ<'a>>> {
    let (number, wire) = read_key(data)?;
    let Some(slot) = plan.slot(number) else {
        skip_unknown(data, number, wire, checked)?;
        return Ok(None);
    };
    let field = &plan.fields[slot];
    let mut occ = if field.card == Card::Map {
        if wire != WIRE_LEN && !checked {
            return Err(Stop::Recheck);
        }
        // As prost-reflect decodes a map field: length-delimited
        // whatever the wire type says.
        Occ {
            data: read_len(data)?,
            num: 0,
            slot: 0,
            wire: WIRE_LEN,
        }
    } else {
        check_wire(field.ty, field.card, wire)?;
        read_value(data, number, wire)?
    };
    occ.slot = slot as u32;
    Ok(Some(occ))
}

/// A map entry's key and last value, read as a decoder reads it (wire
/// types, UTF-8 of string values); `merged` gets the earlier values of a
/// message value, in order.
fn map_entry<'a>(
    mut data: &'a [u8],
    key_field: &FieldPlan,
    value_field: &FieldPlan,
    merged: &mut Vec<Occ<'a>>,
    checked: bool,
) -> Result<(MapKey<'a>, Option<Occ<'a>>)> {
    merged.clear();
    let message_value = matches!(value_field.ty, Ty::Message(_));
    let mut key = None;
    let mut value: Option<Occ<'a>> = None;
    while !data.is_empty() {
        let (number, wire) = read_key(&mut data)?;
        match number {
            1 => {
                check_wire(key_field.ty, key_field.card, wire)?;
                key = Some(read_value(&mut data, number, wire)?);
            }
            2 => {
                check_wire(value_field.ty, Card::Explicit, wire)?;
                let o = read_value(&mut data, number, wire)?;
                if value_field.ty == Ty::String {
                    utf8(o.data)?;
                }
                if let (true, Some(earlier)) = (message_value, value) {
                    merged.push(earlier);
                }
                value = Some(o);
            }
            _ => skip_unknown(&mut data, number, wire, checked)?,
        }
    }
    let absent = Occ {
        data: &[],
        num: 0,
        slot: 0,
        wire: WIRE_VARINT,
    };
    let key = map_key(key_field.ty, key.as_ref().unwrap_or(&absent))?;
    Ok((key, value))
}

/// The last value of a map entry that [`map_entry`] has checked (and the
/// earlier ones of a message value, into `merged`).
fn entry_value<'a>(
    mut data: &'a [u8],
    message_value: bool,
    merged: &mut Vec<Occ<'a>>,
    checked: bool,
) -> Result<Option<Occ<'a>>> {
    merged.clear();
    let mut value: Option<Occ<'a>> = None;
    while !data.is_empty() {
        let (number, wire) = read_key(&mut data)?;
        if number != 2 {
            skip_unknown(&mut data, number, wire, checked)?;
            continue;
        }
        let o = read_value(&mut data, number, wire)?;
        if let (true, Some(earlier)) = (message_value, value) {
            merged.push(earlier);
        }
        value = Some(o);
    }
    Ok(value)
}

/// Drops the occurrences a decoder would have cleared: of each oneof, only
/// the member set last counts, from its first occurrence after another member.
fn resolve_oneofs<'a>(plan: &MessagePlan, occs: &mut Vec<Occ<'a>>) -> Vec<Occ<'a>> {
    let mut dropped = Vec::new();
    if plan.oneof_count() == 0 {
        return dropped;
    }
    // (winning slot, index of its first counted occurrence) per oneof; on
    // the stack for the usual few oneofs.
    let mut few = [(u32::MAX, 0usize); 8];
    let mut many = Vec::new();
    let state: &mut [(u32, usize)] = match plan.oneof_count() {
        n @ 0..=8 => &mut few[..n],
        n => {
            many.resize(n, (u32::MAX, 0));
            &mut many
        }
    };
    // Whether a second member of some oneof came: else nothing is dropped.
    let mut switched = false;
    for (i, occ) in occs.iter().enumerate() {
        if let Some(o) = plan.fields[occ.slot as usize].oneof {
            let s = &mut state[o as usize];
            if s.0 != occ.slot {
                switched |= s.0 != u32::MAX;
                *s = (occ.slot, i);
            }
        }
    }
    if !switched {
        return dropped;
    }
    // `retain` visits each occurrence once, in order.
    let mut i = 0;
    occs.retain(|occ| {
        let index = i;
        i += 1;
        let Some(o) = plan.fields[occ.slot as usize].oneof else {
            return true;
        };
        let (slot, since) = state[o as usize];
        let keep = occ.slot == slot && index >= since;
        if !keep {
            dropped.push(*occ);
        }
        keep
    });
    dropped
}

/// Checks an occurrence that is not rendered the way a decoder would have
/// decoded it (UTF-8 strings, well-formed messages, packed records).
/// `checked`: else a message, which only the pre-pass has walked, stops
/// with [`Stop::Recheck`] (see [`Writer::unchecked`]).
fn validate_occ(prog: &Program, plan: &MessagePlan, occ: &Occ<'_>, checked: bool) -> Result<()> {
    let field = &plan.fields[occ.slot as usize];
    match (field.card, field.ty) {
        (_, Ty::Message(_)) if !checked => Err(Stop::Recheck),
        (Card::Map, Ty::Message(entry)) => validate_message(prog, entry, occ.data),
        (_, Ty::Message(m)) => validate_message(prog, m, occ.data),
        (_, Ty::String) => utf8(occ.data).map(|_| ()),
        (Card::Repeated, ty) if occ.wire == WIRE_LEN && packable(ty) => {
            let mut data = occ.data;
            while !data.is_empty() {
                match element_wire(ty) {
                    WIRE_VARINT => read_varint(&mut data)?,
                    WIRE_FIXED32 => read_fixed32(&mut data)?,
                    _ => read_fixed64(&mut data)?,
                };
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks message `m`'s bytes as a decoder would, without rendering them.
fn validate_message(prog: &Program, m: u32, data: &[u8]) -> Result<()> {
    let plan = &prog.messages[m as usize];
    let mut occs = Vec::new();
    scan(plan, &[data], &mut occs, true)?;
    for occ in &occs {
        validate_occ(prog, plan, occ, true)?;
    }
    Ok(())
}

fn utf8(data: &[u8]) -> Result<&str> {
    std::str::from_utf8(data).map_err(|_| {
        invalid(
            "failed to decode Protobuf message: invalid string value: data is not UTF-8 encoded",
        )
    })
}

fn packable(ty: Ty) -> bool {
    !matches!(ty, Ty::String | Ty::Bytes | Ty::Message(_))
}

fn element_wire(ty: Ty) -> u8 {
    match ty {
        Ty::Double | Ty::Fixed64 | Ty::Sfixed64 => WIRE_FIXED64,
        Ty::Float | Ty::Fixed32 | Ty::Sfixed32 => WIRE_FIXED32,
        Ty::String | Ty::Bytes | Ty::Message(_) => WIRE_LEN,
        _ => WIRE_VARINT,
    }
}

/// Refuses a wire type a decoder would refuse for this field.
fn check_wire(ty: Ty, card: Card, wire: u8) -> Result<()> {
    let expected = match card {
        Card::Map => WIRE_LEN,
        _ => element_wire(ty),
    };
    if wire == expected || (card == Card::Repeated && wire == WIRE_LEN && packable(ty)) {
        Ok(())
    } else {
        Err(invalid(format!(
            "failed to decode Protobuf message: invalid wire type: {wire} (expected {expected})"
        )))
    }
}

fn is_default(prog: &Program, ty: Ty, occ: &Occ<'_>) -> bool {
    match ty {
        Ty::Double => f64::from_bits(occ.num) == 0.0,
        Ty::Float => f32::from_bits(occ.num as u32) == 0.0,
        Ty::Int32 | Ty::Sfixed32 | Ty::Uint32 | Ty::Fixed32 => occ.num as u32 == 0,
        Ty::Sint32 => zigzag32(occ.num) == 0,
        Ty::Bool | Ty::Int64 | Ty::Uint64 | Ty::Fixed64 | Ty::Sfixed64 | Ty::Sint64 => occ.num == 0,
        Ty::String | Ty::Bytes => occ.data.is_empty(),
        Ty::Enum(e) => occ.num as i32 == prog.enums[e as usize].default,
        Ty::Message(_) => false,
    }
}

/// A map key, ordered by value.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum MapKey<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Str(&'a str),
}

impl MapKey<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            MapKey::Bool(b) => out.extend_from_slice(if *b { b"\"true\"" } else { b"\"false\"" }),
            MapKey::Int(i) => write_quoted_int(out, *i),
            MapKey::Uint(u) => write_quoted_int(out, *u),
            MapKey::Str(s) => write_str(out, s),
        }
    }
}

fn map_key<'a>(ty: Ty, occ: &Occ<'a>) -> Result<MapKey<'a>> {
    Ok(match ty {
        Ty::Bool => MapKey::Bool(occ.num != 0),
        Ty::Int32 | Ty::Sfixed32 => MapKey::Int(i64::from(occ.num as i32)),
        Ty::Sint32 => MapKey::Int(i64::from(zigzag32(occ.num))),
        Ty::Int64 | Ty::Sfixed64 => MapKey::Int(occ.num as i64),
        Ty::Sint64 => MapKey::Int(zigzag64(occ.num)),
        Ty::Uint32 | Ty::Fixed32 => MapKey::Uint(u64::from(occ.num as u32)),
        Ty::Uint64 | Ty::Fixed64 => MapKey::Uint(occ.num),
        Ty::String => MapKey::Str(utf8(occ.data)?),
        _ => return Err(invalid("invalid map key type")),
    })
}

fn zigzag32(num: u64) -> i32 {
    let v = num as u32;
    ((v >> 1) as i32) ^ (-((v & 1) as i32))
}

fn zigzag64(num: u64) -> i64 {
    ((num >> 1) as i64) ^ (-((num & 1) as i64))
}

// === wire primitives (prost's rules) ===

fn malformed(what: &str) -> Stop {
    invalid(format!("failed to decode Protobuf message: {what}"))
}

#[inline]
pub(crate) fn read_varint(data: &mut &[u8]) -> Result<u64> {
    if let Some((&b, rest)) = data.split_first()
        && b < 0x80
    {
        *data = rest;
        return Ok(u64::from(b));
    }
    read_varint_slow(data)
}

/// A varint whose first byte has its high bit set ([`read_varint`] read
/// the others): one of two bytes (lengths and numbers below 2^14) without
/// the loop.
fn read_varint_slow(data: &mut &[u8]) -> Result<u64> {
    let bytes = *data;
    if let [b0, b1, rest @ ..] = bytes
        && *b1 < 0x80
    {
        *data = rest;
        return Ok(u64::from(b0 & 0x7f) | u64::from(*b1) << 7);
    }
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(malformed("invalid varint"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *data = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(malformed("invalid varint"))
}

fn read_fixed32(data: &mut &[u8]) -> Result<u64> {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return Err(malformed("buffer underflow"));
    };
    *data = rest;
    Ok(u64::from(u32::from_le_bytes(*head)))
}

fn read_fixed64(data: &mut &[u8]) -> Result<u64> {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return Err(malformed("buffer underflow"));
    };
    *data = rest;
    Ok(u64::from_le_bytes(*head))
}

#[inline(always)]
fn read_key(data: &mut &[u8]) -> Result<(u32, u8)> {
    let key = read_varint(data)?;
    if key > u64::from(u32::MAX) {
        return Err(malformed("invalid key value"));
    }
    let wire = (key & 7) as u8;
    if wire > WIRE_FIXED32 {
        return Err(malformed("invalid wire type value"));
    }
    let number = (key as u32) >> 3;
    if number == 0 {
        return Err(malformed("invalid tag value: 0"));
    }
    Ok((number, wire))
}

fn read_len<'a>(data: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = read_varint(data)?;
    if len > data.len() as u64 {
        return Err(malformed("buffer underflow"));
    }
    let (head, rest) = data.split_at(len as usize);
    *data = rest;
    Ok(head)
}

/// Reads the value of a field whose key was read (not a group).
#[inline(always)]
fn read_value<'a>(data: &mut &'a [u8], number: u32, wire: u8) -> Result<Occ<'a>> {
    let mut occ = Occ {
        data: &[],
        num: 0,
        slot: 0,
        wire,
    };
    match wire {
        WIRE_VARINT => occ.num = read_varint(data)?,
        WIRE_FIXED64 => occ.num = read_fixed64(data)?,
        WIRE_FIXED32 => occ.num = read_fixed32(data)?,
        WIRE_LEN => occ.data = read_len(data)?,
        _ => {
            skip_value(data, number, wire)?;
            return Err(malformed("unexpected group"));
        }
    }
    Ok(occ)
}

/// Skips an unknown field's value, groups included (iteratively).
fn skip_value(data: &mut &[u8], number: u32, wire: u8) -> Result<()> {
    match wire {
        WIRE_VARINT => {
            read_varint(data)?;
        }
        WIRE_FIXED64 => {
            read_fixed64(data)?;
        }
        WIRE_FIXED32 => {
            read_fixed32(data)?;
        }
        WIRE_LEN => {
            read_len(data)?;
        }
        WIRE_START_GROUP => {
            let mut open = vec![number];
            while let Some(&current) = open.last() {
                if open.len() > crate::wire::MAX_MESSAGE_NESTING {
                    return Err(malformed("recursion limit reached"));
                }
                if data.is_empty() {
                    return Err(malformed("buffer underflow"));
                }
                let (n, w) = read_key(data)?;
                match w {
                    WIRE_START_GROUP => open.push(n),
                    WIRE_END_GROUP if n == current => {
                        open.pop();
                    }
                    WIRE_END_GROUP => return Err(malformed("unexpected end group tag")),
                    _ => skip_value(data, n, w)?,
                }
            }
        }
        _ => return Err(malformed("unexpected end group tag")),
    }
    Ok(())
}

/// Skips an unknown field's value; a group only if `checked` by the
/// pre-pass, which counts its depth (else [`Stop::Recheck`]).
#[inline]
fn skip_unknown(data: &mut &[u8], number: u32, wire: u8, checked: bool) -> Result<()> {
    if wire == WIRE_START_GROUP && !checked {
        return Err(Stop::Recheck);
    }
    skip_value(data, number, wire)
}

/// Checks that `bytes` are well-formed fields (for `Empty`; groups as in
/// [`skip_unknown`]).
fn check_wire_bytes(mut bytes: &[u8], checked: bool) -> Result<()> {
    while !bytes.is_empty() {
        let (number, wire) = read_key(&mut bytes)?;
        skip_unknown(&mut bytes, number, wire, checked)?;
    }
    Ok(())
}

// === JSON primitives ===

const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// `s` as a JSON string, escaped as serde_json does.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape_into(out, s.as_bytes(), false);
    out.push(b'"');
}

/// A string field's bytes as a JSON string: checked to be UTF-8 in the
/// same pass as the escaping when ASCII (most are), else by `from_utf8`.
fn write_wire_str(out: &mut Vec<u8>, data: &[u8]) -> Result<()> {
    let mark = out.len();
    out.reserve(data.len() + 2);
    out.push(b'"');
    if escape_into(out, data, true) {
        out.push(b'"');
    } else {
        out.truncate(mark);
        write_str(out, utf8(data)?);
    }
    Ok(())
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is below 0x20, `"` or `\` (and
/// maybe of bytes above such a byte: exact as to whether there is one).
#[inline]
fn escape_bits(x: u64) -> u64 {
    let control = x.wrapping_sub(LOW_BITS * 0x20) & !x;
    let quote = x ^ (LOW_BITS * u64::from(b'"'));
    let quote = quote.wrapping_sub(LOW_BITS) & !quote;
    let backslash = x ^ (LOW_BITS * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(LOW_BITS) & !backslash;
    (control | quote | backslash) & HIGH_BITS
}

/// [`escape_bits`], and the high bits of `x` kept by `stop`.
#[inline]
fn special_bits(x: u64, stop: u64) -> u64 {
    escape_bits(x) | (x & stop)
}

/// Appends `bytes` escaped (no quotes), eight bytes at a time while none
/// needs escaping. With `ascii_only`, stops at the first byte above 0x7f
/// and returns false (what was appended is then the caller's to drop).
#[inline]
fn escape_into(out: &mut Vec<u8>, bytes: &[u8], ascii_only: bool) -> bool {
    let stop = if ascii_only { HIGH_BITS } else { 0 };
    // Most strings need nothing: one test over all of it, one copy.
    let (chunks, _) = bytes.as_chunks::<8>();
    let mut found = special_bits(tail_word(bytes), stop);
    for chunk in chunks {
        found |= special_bits(u64::from_le_bytes(*chunk), stop);
    }
    if found == 0 {
        put_short(out, bytes);
        return true;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes[i..].first_chunk::<8>()
            && special_bits(u64::from_le_bytes(*chunk), stop) == 0
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        if ascii_only && b >= 0x80 {
            return false;
        }
        let escape = ESCAPE[b as usize];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..i]);
            match escape {
                b'u' => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 0xf) as usize]);
                }
                e => {
                    out.push(b'\\');
                    out.push(e);
                }
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    true
}

/// A word holding the last bytes of `bytes` (the last eight, or all of
/// them and copies of some, or only `a`s when empty), read without a
/// `memcpy` call: what [`escape_bits`] finds in it is in `bytes`.
#[inline]
fn tail_word(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    if let Some(last) = bytes.last_chunk::<8>() {
        return u64::from_le_bytes(*last);
    }
    let fill = LOW_BITS * u64::from(b'a');
    if let (Some(head), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*last)) << 32;
    }
    match bytes {
        [] => fill,
        // One to three bytes: the first, the middle and the last.
        [first, ..] => {
            let word =
                u64::from(*first) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16;
            word | (fill & !0xff_ffff)
        }
    }
}

/// Appends `bytes`; when short (a key, most strings) as one 16-byte move
/// and a truncation rather than a `memcpy` call.
#[inline]
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    let mut buf = [0u8; 16];
    if n <= 16
        && let (Some(head), Some(last)) = (bytes.first_chunk::<8>(), bytes.last_chunk::<8>())
    {
        // Two overlapping words.
        buf[..8].copy_from_slice(head);
        buf[n - 8..n].copy_from_slice(last);
    } else if let (Some(head), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>())
        && n < 8
    {
        buf[..4].copy_from_slice(head);
        buf[n - 4..n].copy_from_slice(last);
    } else if n < 4 {
        buf[..n].copy_from_slice(bytes);
    } else {
        out.extend_from_slice(bytes);
        return;
    }
    let at = out.len();
    out.extend_from_slice(&buf);
    out.truncate(at + n);
}

fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let start = out.len();
    let len = base64::encoded_len(data.len(), true).unwrap_or(0);
    out.push(b'"');
    out.resize(start + 1 + len, 0);
    let written = engine
        .encode_slice(data, &mut out[start + 1..])
        .unwrap_or(0);
    out.truncate(start + 1 + written);
    out.push(b'"');
}

fn write_int<I: itoa::Integer>(out: &mut Vec<u8>, i: I) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(i).as_bytes());
}

fn write_quoted_int<I: itoa::Integer>(out: &mut Vec<u8>, i: I) {
    let mut buf = itoa::Buffer::new();
    out.push(b'"');
    out.extend_from_slice(buf.format(i).as_bytes());
    out.push(b'"');
}

/// A double as protobuf's JSON printers write it: shortest round-trip
/// digits, no `.0` on whole numbers, non-finite values as strings.
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let mut buf = zmij::Buffer::new();
        write_trimmed(out, buf.format_finite(v));
    } else {
        write_non_finite(out, v.is_nan(), v > 0.0);
    }
}

/// A float, like [`write_f64`] with the shortest digits of an `f32`.
pub(crate) fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let mut buf = zmij::Buffer::new();
        write_trimmed(out, buf.format_finite(v));
    } else {
        write_non_finite(out, v.is_nan(), v > 0.0);
    }
}

fn write_trimmed(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.strip_suffix(".0").unwrap_or(s).as_bytes());
}

fn write_non_finite(out: &mut Vec<u8>, nan: bool, positive: bool) {
    out.extend_from_slice(match (nan, positive) {
        (true, _) => b"\"NaN\"",
        (false, true) => b"\"Infinity\"",
        (false, false) => b"\"-Infinity\"",
    });
}

fn write_display(out: &mut Vec<u8>, value: &impl std::fmt::Display) {
    use std::io::Write as _;
    out.push(b'"');
    let _ = write!(out, "{value}");
    out.push(b'"');
}

fn snake_to_camel(dst: &mut String, src: &str) -> std::result::Result<(), ()> {
    let mut upper_next = false;
    for ch in src.chars() {
        if ch.is_ascii_uppercase() {
            return Err(());
        }
        if upper_next {
            let upper = ch.to_ascii_uppercase();
            if upper == ch {
                return Err(());
            }
            dst.push(upper);
            upper_next = false;
        } else if ch == '_' {
            upper_next = true;
        } else {
            dst.push(ch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ASCII byte at every position of strings around the 8-byte
    /// steps, and non-ASCII text: escaped as serde_json escapes.
    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "héllo, wörld: ✓ 🦀".to_owned(),
            "🦀\"\\\u{7f}\u{1f}é".repeat(5),
        ];
        for len in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24] {
            for at in 0..len {
                for b in 0u8..0x80 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    cases.push(String::from_utf8(s).expect("ASCII"));
                }
            }
        }
        for s in cases {
            let expected = serde_json::to_string(&s).expect("serializes");
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(String::from_utf8_lossy(&out), expected);
            let mut out = b"[".to_vec();
            write_wire_str(&mut out, s.as_bytes()).expect("UTF-8");
            assert_eq!(String::from_utf8_lossy(&out[1..]), expected);
        }
    }

    /// `seconds_nanos` reads what prost reads from the bytes it accepts, and
    /// leaves any other field order or content to prost.
    #[test]
    fn seconds_nanos_agrees_with_prost() {
        for (seconds, nanos) in [
            (0, 0),
            (1, 0),
            (0, 1),
            (-1, -1),
            (i64::MAX, i32::MIN),
            (1_700_000_000, 999_999_999),
        ] {
            let t = prost_types::Timestamp { seconds, nanos };
            assert_eq!(seconds_nanos(&t.encode_to_vec()), Some((seconds, nanos)));
        }
        assert_eq!(seconds_nanos(&[]), Some((0, 0)));
        for other in [
            &[0x10, 1, 0x08, 1][..],
            &[0x08, 1, 0x08, 2],
            &[0x08, 1, 0x18, 2],
            &[0x08, 0x80],
            &[0x09, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(seconds_nanos(other), None);
        }
    }

    /// `put_short` appends exactly its bytes, at every length around its
    /// moves, after any output.
    #[test]
    fn put_short_appends_its_bytes() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (1..=len).collect();
            for before in [&b""[..], b"{", b"{\"key\":"] {
                let mut out = before.to_vec();
                put_short(&mut out, &bytes);
                assert_eq!(out, [before, &bytes].concat());
            }
        }
    }

    #[test]
    fn invalid_utf8_is_refused() {
        for bad in [
            &b"\xff"[..],
            b"abcdefgh\xc3",
            b"abcdefghijklmnop\xed\xa0\x80",
        ] {
            assert!(write_wire_str(&mut Vec::new(), bad).is_err());
        }
    }
}
