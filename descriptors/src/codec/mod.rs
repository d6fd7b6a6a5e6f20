//! A direct JSON ⇄ protobuf wire codec, following the proto3 JSON mapping
//! (<https://protobuf.dev/programming-guides/proto3/#json>) and the protobuf
//! encoding (<https://protobuf.dev/programming-guides/encoding/>), with no
//! intermediate message tree.
//!
//! A [`Codec`] belongs to one descriptor pool (one registry snapshot). For
//! each message type asked for, it compiles a [`Program`] once: the message
//! and every message type reachable from it, as plain data (field numbers,
//! wire types, JSON and proto names, enum name tables, well-known-type
//! handlers), so the hot path never touches prost-reflect's reference-counted
//! descriptor handles.
//!
//! - [`to_json`]: wire bytes → JSON text, one pass over the bytes per
//!   message level, writing straight into the output buffer.
//! - [`scan`]: JSON text → wire bytes, one pass over the text with a
//!   tokenizer of its own for the common shapes, handing any other value to
//! - [`from_json`]: serde_json driven by seeds that know the plan.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, PoisonError, RwLock, Weak,
        atomic::{AtomicU16, Ordering},
    },
};

use prost_reflect::{Cardinality, DescriptorPool, EnumDescriptor, Kind, MessageDescriptor};

pub(crate) mod from_json;
pub(crate) mod nesting;
pub(crate) mod scan;
pub mod time;
pub(crate) mod to_json;

/// The compiled plans of every message type of one descriptor pool, built
/// once, eagerly: the codec needs no descriptor pool once compiled.
#[derive(Debug)]
pub struct Codec {
    program: Program,
}

/// Every message and enum type of a pool as plain data; a type refers to
/// another by its index in `messages` / `enums`.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) messages: Vec<MessagePlan>,
    pub(crate) enums: Vec<EnumPlan>,
    /// `(hash of full name, message index)`, sorted: a call's type is
    /// found by one hash and, mostly, one comparison.
    by_full_name: Box<[(u32, u32)]>,
}

/// A byte range of a plan's `text`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

/// How one message type is read and written.
#[derive(Debug)]
pub(crate) struct MessagePlan {
    pub(crate) wkt: Option<Wkt>,
    /// Groups, extensions, or 65,535 fields or more: handled by the
    /// prost-reflect codec instead.
    pub(crate) unsupported: bool,
    /// This message or one it can contain is `unsupported`.
    pub(crate) unsupported_within: bool,
    /// Fields in field number order (the order JSON output follows).
    pub(crate) fields: Box<[FieldPlan]>,
    /// Slot in `fields` by field number, for numbers below its length.
    pub(crate) dense: Box<[u16]>,
    /// The JSON names and the proto names that differ from them, each as
    /// the high 16 bits of its name's hash over its slot, in an open
    /// addressing table (a power of two at most two-thirds full, probed
    /// linearly from the hash's low bits; [`LOOKUP_EMPTY`] where free). A
    /// name is compared after its hash matches.
    lookup: Box<[u32]>,
    /// No two fields share a JSON name (so a key equal to a field's JSON
    /// name names that field).
    json_names_unique: bool,
    /// The slot whose JSON name comes first in byte order ([`NO_SLOT`]
    /// when none).
    json_first: u16,
    /// `(slot, JSON name, proto name)` of the fields whose names escaping
    /// changed (a custom `json_name` with a quote, say): rare.
    raw_names: Box<[(u16, Span, Span)]>,
    /// How many oneofs (`FieldPlan::oneof` indexes them).
    oneofs: u16,
    /// The full name, then each field's keys and names.
    text: Box<str>,
    full_name: Span,
    /// JSON bytes per wire byte of the last message of this type written
    /// whole, in 64ths (0: none yet): sizes the output of the next one.
    json_per_wire: AtomicU16,
}

/// How one field is read and written.
#[derive(Debug)]
pub(crate) struct FieldPlan {
    pub(crate) number: u32,
    pub(crate) ty: Ty,
    pub(crate) card: Card,
    /// Index into `MessagePlan::oneofs` (synthetic oneofs of proto3
    /// `optional` included: a JSON key given twice for one is refused).
    pub(crate) oneof: Option<u16>,
    /// Written as one packed length-delimited record (repeated scalars).
    pub(crate) packed: bool,
    /// `"jsonName":` and `"proto_name":`, escaped and quoted.
    json_key: Span,
    proto_key: Span,
    /// A name changed by escaping: the names are in `MessagePlan::raw_names`
    /// (else they are the keys without quotes and colon).
    escaped: bool,
    /// The slot whose JSON name comes next in byte order ([`NO_SLOT`] for
    /// the last): where a key after this one most likely is when a writer
    /// sorts its keys (serde_json's `Value`, Go's maps, `jq -S`, Python's
    /// `sort_keys`).
    json_next: u16,
}

/// No slot: the end of the [`FieldPlan::json_next`] chain.
const NO_SLOT: u16 = u16::MAX;

/// Cardinality, with presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Card {
    /// Singular without presence: written only when not the default.
    Implicit,
    /// Singular with presence (message, oneof member, `optional`, proto2).
    Explicit,
    Repeated,
    /// A map; the entry type's key and value are its fields 1 and 2.
    Map,
}

/// A field's value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    /// Index into `Program::enums`.
    Enum(u32),
    /// Index into `Program::messages`.
    Message(u32),
}

/// Well-known types with their own JSON form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wkt {
    Any,
    Timestamp,
    Duration,
    FieldMask,
    Struct,
    Value,
    ListValue,
    Empty,
    DoubleValue,
    FloatValue,
    Int64Value,
    UInt64Value,
    Int32Value,
    UInt32Value,
    BoolValue,
    StringValue,
    BytesValue,
}

/// Enum value names by number, and numbers by name.
#[derive(Debug)]
pub(crate) struct EnumPlan {
    /// `google.protobuf.NullValue`: always `null`.
    pub(crate) is_null_value: bool,
    /// The first declared value (the default).
    pub(crate) default: i32,
    /// `(number, "NAME")` (quoted) sorted by number, first name per number.
    names: Box<[(i32, Span)]>,
    /// `(hash of name, number, name)` of every value, sorted.
    lookup: Box<[(u32, i32, Span)]>,
    /// The full name, then the value names.
    text: Box<str>,
    full_name: Span,
}

/// Wire types.
pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_LEN: u8 = 2;
pub(crate) const WIRE_START_GROUP: u8 = 3;
pub(crate) const WIRE_END_GROUP: u8 = 4;
pub(crate) const WIRE_FIXED32: u8 = 5;

/// Largest field number given a slot in `MessagePlan::dense`.
const MAX_DENSE_NUMBER: u32 = 256;

// === impl Codec ===

/// Codecs made by [`Codec::for_pool`], by pool, so a bare `MessageDescriptor`
/// finds one already compiled (weak: alive while [`RECENT`] or a call holds
/// them). The registry's snapshots hold their own codecs, and no pool.
static LIVE: RwLock<Vec<(DescriptorPool, Weak<Codec>)>> = RwLock::new(Vec::new());
static RECENT: std::sync::Mutex<VecDeque<Arc<Codec>>> = std::sync::Mutex::new(VecDeque::new());

/// How many codecs of pools outside the registry [`RECENT`] keeps.
const RECENT_CODECS: usize = 4;

impl Codec {
    /// Compiles every message type of `pool`.
    pub fn compile(pool: &DescriptorPool) -> Codec {
        Codec {
            program: Program::compile(pool),
        }
    }

    /// Compiles every message type of `pool`, findable by [`Codec::for_pool`]
    /// while the returned codec lives.
    fn compile_shared(pool: &DescriptorPool) -> Arc<Codec> {
        let codec = Arc::new(Codec::compile(pool));
        let mut live = LIVE.write().unwrap_or_else(PoisonError::into_inner);
        live.retain(|(_, w)| w.strong_count() > 0);
        live.push((pool.clone(), Arc::downgrade(&codec)));
        codec
    }

    /// The codec of `pool`: one compiled earlier for it if still in use,
    /// else a new one (kept with the last few). For callers holding only a
    /// descriptor (tests, tools); the gateway's calls use their snapshot's.
    pub fn for_pool(pool: &DescriptorPool) -> Arc<Codec> {
        {
            let live = LIVE.read().unwrap_or_else(PoisonError::into_inner);
            for (p, weak) in live.iter() {
                if p == pool
                    && let Some(codec) = weak.upgrade()
                {
                    return codec;
                }
            }
        }
        let codec = Codec::compile_shared(pool);
        let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_CODECS {
            recent.pop_front();
        }
        recent.push_back(codec.clone());
        codec
    }

    /// The plans.
    pub(crate) fn program(&self) -> &Program {
        &self.program
    }

    /// The index of message type `full_name`.
    pub(crate) fn find(&self, full_name: &str) -> Option<u32> {
        self.program.find(full_name)
    }

    /// The index of message type `full_name` if the codec covers it and
    /// every type it can contain (no proto2 groups or extensions).
    pub(crate) fn root(&self, full_name: &str) -> Option<u32> {
        self.find(full_name)
            .filter(|&m| !self.program.messages[m as usize].unsupported_within)
    }
}

// === impl Program ===

impl Program {
    fn compile(pool: &DescriptorPool) -> Self {
        let mut compiler = Compiler::default();
        let descs: Vec<MessageDescriptor> = pool.all_messages().collect();
        for (i, desc) in descs.iter().enumerate() {
            compiler
                .message_index
                .insert(desc.full_name().to_owned(), i as u32);
        }
        let mut messages: Vec<MessagePlan> = descs.iter().map(|d| compiler.plan(d)).collect();
        mark_unsupported_within(&mut messages);
        let mut by_full_name: Vec<(u32, u32)> = (0..messages.len() as u32)
            .map(|m| (name_hash(messages[m as usize].full_name().as_bytes()), m))
            .collect();
        by_full_name.sort_unstable();
        Program {
            messages,
            enums: compiler.enums,
            by_full_name: by_full_name.into(),
        }
    }

    /// The index of message type `full_name`.
    pub(crate) fn find(&self, full_name: &str) -> Option<u32> {
        let hash = name_hash(full_name.as_bytes());
        let from = self.by_full_name.partition_point(|&(h, _)| h < hash);
        self.by_full_name[from..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, m)| m)
            .find(|&m| self.messages[m as usize].full_name() == full_name)
    }
}

/// Sets `unsupported_within` of every message that is or can contain an
/// unsupported one (a walk back along the field edges).
fn mark_unsupported_within(messages: &mut [MessagePlan]) {
    let mut parents: Vec<Vec<u32>> = vec![Vec::new(); messages.len()];
    for (m, plan) in messages.iter().enumerate() {
        for field in plan.fields.iter() {
            if let Ty::Message(child) = field.ty {
                parents[child as usize].push(m as u32);
            }
        }
    }
    let mut queue: VecDeque<u32> = (0..messages.len() as u32)
        .filter(|&m| messages[m as usize].unsupported)
        .collect();
    for &m in &queue {
        messages[m as usize].unsupported_within = true;
    }
    while let Some(m) = queue.pop_front() {
        for &parent in &parents[m as usize] {
            let plan = &mut messages[parent as usize];
            if !plan.unsupported_within {
                plan.unsupported_within = true;
                queue.push_back(parent);
            }
        }
    }
}

#[derive(Default)]
struct Compiler {
    message_index: HashMap<String, u32>,
    enum_index: HashMap<String, u32>,
    enums: Vec<EnumPlan>,
}

/// Builds a plan's `text`.
#[derive(Default)]
struct Text(String);

impl Text {
    fn push(&mut self, s: &str) -> Span {
        let at = self.0.len();
        self.0.push_str(s);
        span(at, s.len())
    }

    /// `"name":` and the span of `name` in it (the raw name, if escaping
    /// left it as it was).
    fn key(&mut self, name: &str) -> (Span, Span) {
        let quoted = quoted(name);
        let key = self.push(&format!("{quoted}:"));
        let raw = if quoted.len() == name.len() + 2 {
            span(key.start as usize + 1, name.len())
        } else {
            self.push(name)
        };
        (key, raw)
    }
}

fn span(start: usize, len: usize) -> Span {
    Span {
        start: start as u32,
        len: len as u32,
    }
}

impl Compiler {
    fn enumeration(&mut self, desc: &EnumDescriptor) -> u32 {
        if let Some(&i) = self.enum_index.get(desc.full_name()) {
            return i;
        }
        let mut text = Text::default();
        let full_name = text.push(desc.full_name());
        let mut names: Vec<(i32, Span)> = Vec::new();
        let mut lookup: Vec<(u32, i32, Span)> = Vec::new();
        for value in desc.values() {
            let quoted = text.push(&quoted(value.name()));
            let raw = if quoted.len as usize == value.name().len() + 2 {
                span(quoted.start as usize + 1, value.name().len())
            } else {
                text.push(value.name())
            };
            lookup.push((fnv32(value.name().as_bytes()), value.number(), raw));
            names.push((value.number(), quoted));
        }
        // Stable: the first declared name of an alias wins, as get_value does.
        names.sort_by_key(|(n, _)| *n);
        names.dedup_by_key(|(n, _)| *n);
        lookup.sort_by_key(|(h, _, _)| *h);
        let plan = EnumPlan {
            is_null_value: desc.full_name() == "google.protobuf.NullValue",
            default: desc.default_value().number(),
            names: names.into(),
            lookup: lookup.into(),
            text: text.0.into(),
            full_name,
        };
        let i = self.enums.len() as u32;
        self.enums.push(plan);
        self.enum_index.insert(desc.full_name().to_owned(), i);
        i
    }

    fn plan(&mut self, desc: &MessageDescriptor) -> MessagePlan {
        // Slots (and oneof indexes) are `u16`s, `u16::MAX` none: a message
        // with more fields is left to prost-reflect, its fields not planned.
        let too_wide = desc.fields().len() >= usize::from(u16::MAX);
        let mut unsupported = desc.extension_ranges().len() > 0 || too_wide;
        let mut text = Text::default();
        let full_name = text.push(desc.full_name());
        let mut oneofs: u16 = 0;
        let mut oneof_index: HashMap<String, u16> = HashMap::new();
        let mut fields = Vec::new();
        let mut raw: Vec<(u32, Span, Span)> = Vec::new();
        for field in desc.fields().take(if too_wide { 0 } else { usize::MAX }) {
            let kind = field.kind();
            if field.is_group() {
                unsupported = true;
            }
            let ty = match &kind {
                Kind::Double => Ty::Double,
                Kind::Float => Ty::Float,
                Kind::Int32 => Ty::Int32,
                Kind::Int64 => Ty::Int64,
                Kind::Uint32 => Ty::Uint32,
                Kind::Uint64 => Ty::Uint64,
                Kind::Sint32 => Ty::Sint32,
                Kind::Sint64 => Ty::Sint64,
                Kind::Fixed32 => Ty::Fixed32,
                Kind::Fixed64 => Ty::Fixed64,
                Kind::Sfixed32 => Ty::Sfixed32,
                Kind::Sfixed64 => Ty::Sfixed64,
                Kind::Bool => Ty::Bool,
                Kind::String => Ty::String,
                Kind::Bytes => Ty::Bytes,
                Kind::Enum(e) => Ty::Enum(self.enumeration(e)),
                Kind::Message(m) => match self.message_index.get(m.full_name()) {
                    Some(&i) => Ty::Message(i),
                    // Every message of the pool is indexed; not reached.
                    None => {
                        unsupported = true;
                        Ty::Bytes
                    }
                },
            };
            let card = if field.is_map() {
                Card::Map
            } else if field.is_list() {
                Card::Repeated
            } else if field.supports_presence() {
                Card::Explicit
            } else {
                Card::Implicit
            };
            debug_assert!(field.cardinality() != Cardinality::Repeated || card != Card::Implicit);
            let oneof = field.containing_oneof().map(|o| {
                *oneof_index.entry(o.name().to_owned()).or_insert_with(|| {
                    oneofs += 1;
                    oneofs - 1
                })
            });
            let (json_key, json_name) = text.key(field.json_name());
            let (proto_key, proto_name) = if field.json_name() == field.name() {
                (json_key, json_name)
            } else {
                text.key(field.name())
            };
            let escaped =
                json_name.start != json_key.start + 1 || proto_name.start != proto_key.start + 1;
            if escaped {
                raw.push((field.number(), json_name, proto_name));
            }
            fields.push(FieldPlan {
                number: field.number(),
                ty,
                card,
                oneof,
                packed: field.is_packed(),
                json_key,
                proto_key,
                escaped,
                json_next: NO_SLOT,
            });
        }
        fields.sort_by_key(|f| f.number);
        let raw_names: Box<[(u16, Span, Span)]> = raw
            .iter()
            .filter_map(|&(number, json, proto)| {
                let slot = fields.iter().position(|f| f.number == number)?;
                Some((slot as u16, json, proto))
            })
            .collect();
        let mut dense = Vec::new();
        let mut lookup = Vec::new();
        let mut plan = MessagePlan {
            json_names_unique: false,
            json_first: NO_SLOT,
            wkt: wkt_of(desc.full_name()),
            unsupported,
            unsupported_within: false,
            fields: fields.into(),
            dense: Box::default(),
            lookup: Box::default(),
            raw_names,
            oneofs,
            text: text.0.into(),
            full_name,
            json_per_wire: AtomicU16::new(0),
        };
        for (slot, field) in plan.fields.iter().enumerate() {
            if field.number < MAX_DENSE_NUMBER {
                let n = field.number as usize;
                if dense.len() <= n {
                    dense.resize(n + 1, u16::MAX);
                }
                dense[n] = slot as u16;
            }
            let (json_name, proto_name) = plan.names(slot);
            lookup.push((fnv32(json_name.as_bytes()), slot));
            if proto_name != json_name {
                lookup.push((fnv32(proto_name.as_bytes()), slot));
            }
        }
        let mut by_json_name: Vec<(&str, u16)> = (0..plan.fields.len())
            .map(|s| (plan.names(s).0, s as u16))
            .collect();
        by_json_name.sort_unstable();
        let unique = by_json_name.windows(2).all(|w| w[0].0 != w[1].0);
        let order: Vec<u16> = by_json_name.iter().map(|&(_, s)| s).collect();
        plan.json_names_unique = unique;
        plan.json_first = order.first().copied().unwrap_or(NO_SLOT);
        for pair in order.windows(2) {
            plan.fields[pair[0] as usize].json_next = pair[1];
        }
        plan.dense = dense.into();
        plan.lookup = lookup_table(&lookup);
        plan
    }
}

// === impl MessagePlan ===

impl MessagePlan {
    #[inline]
    fn str(&self, s: Span) -> &str {
        self.text
            .get(s.start as usize..(s.start + s.len) as usize)
            .unwrap_or_default()
    }

    /// A map entry type's key and value fields (its fields 1 and 2).
    #[inline]
    pub(crate) fn map_entry(&self) -> Option<(&FieldPlan, &FieldPlan)> {
        let field = |number| self.slot(number).map(|s| &self.fields[s]);
        Some((field(1)?, field(2)?))
    }

    /// The slot of field `number`.
    #[inline]
    pub(crate) fn slot(&self, number: u32) -> Option<usize> {
        if let Some(&slot) = self.dense.get(number as usize) {
            return (slot != u16::MAX).then_some(slot as usize);
        }
        if number < MAX_DENSE_NUMBER {
            return None;
        }
        self.fields.binary_search_by_key(&number, |f| f.number).ok()
    }

    /// The slot of the field named `name` in JSON (its JSON name, or its
    /// proto name; a JSON name wins where one field's JSON name is another's
    /// proto name, as prost-reflect's `get_field_by_json_name` does).
    #[inline]
    pub(crate) fn field_by_name(&self, name: &str) -> Option<u16> {
        self.lookup_name(name, false)
    }

    /// [`MessagePlan::field_by_name`], trying first the slots a key after
    /// `last` (the slot of the key before it) most likely names: the next
    /// in field order, then the next by JSON name (keys written sorted).
    #[inline]
    pub(crate) fn field_by_name_after(&self, name: &str, last: Option<u16>) -> Option<u16> {
        let next = last.map_or(0, |last| last as usize + 1);
        if self.json_names_unique && self.is_json_name(next, name) {
            return Some(next as u16);
        }
        self.field_by_name_sorted_after(name, last)
    }

    /// [`MessagePlan::field_by_name_after`] past the slot next in field
    /// order.
    #[inline(never)]
    fn field_by_name_sorted_after(&self, name: &str, last: Option<u16>) -> Option<u16> {
        let next = match last {
            Some(last) => self
                .fields
                .get(last as usize)
                .map_or(NO_SLOT, |f| f.json_next),
            None => self.json_first,
        };
        if self.json_names_unique && self.is_json_name(next as usize, name) {
            return Some(next);
        }
        self.field_by_name(name)
    }

    /// Whether `name` is the JSON name of field `slot` (one whose names
    /// escaping left as they are).
    #[inline]
    fn is_json_name(&self, slot: usize, name: &str) -> bool {
        self.fields
            .get(slot)
            .is_some_and(|field| !field.escaped && self.key_names(field.json_key, name))
    }

    /// The slot of the field named `name` in a path or query parameter: its
    /// proto name, else its JSON name (as prost-reflect's
    /// `get_field_by_name`, then `get_field_by_json_name`).
    pub(crate) fn field_by_proto_name(&self, name: &str) -> Option<u16> {
        self.lookup_name(name, true)
    }

    /// The field whose preferred name (proto or JSON) is `name`, else the
    /// one whose other name is.
    #[inline]
    fn lookup_name(&self, name: &str, proto_first: bool) -> Option<u16> {
        let hash = fnv32(name.as_bytes());
        let mask = self.lookup.len().wrapping_sub(1);
        let mut at = hash as usize & mask;
        let mut second = None;
        // Up to the first free entry (there is one: the table is at most
        // two-thirds full).
        while let Some(&entry) = self.lookup.get(at)
            && entry != LOOKUP_EMPTY
        {
            at = (at + 1) & mask;
            if entry & LOOKUP_HASH != hash & LOOKUP_HASH {
                continue;
            }
            let slot = entry as u16;
            let field = &self.fields[slot as usize];
            if !field.escaped {
                // The names are inside their keys: compared in place.
                let (first_key, other_key) = if proto_first {
                    (field.proto_key, field.json_key)
                } else {
                    (field.json_key, field.proto_key)
                };
                if self.key_names(first_key, name) {
                    return Some(slot);
                }
                if second.is_none() && self.key_names(other_key, name) {
                    second = Some(slot);
                }
                continue;
            }
            let (json_name, proto_name) = self.names(slot as usize);
            let (first_name, other_name) = if proto_first {
                (proto_name, json_name)
            } else {
                (json_name, proto_name)
            };
            if first_name == name {
                return Some(slot);
            }
            if second.is_none() && other_name == name {
                second = Some(slot);
            }
        }
        second
    }

    /// Whether `key` (`"name":`, of a field whose names escaping left as
    /// they are) holds `name`.
    #[inline]
    fn key_names(&self, key: Span, name: &str) -> bool {
        key.len as usize == name.len() + 3
            && self
                .text
                .as_bytes()
                .get(key.start as usize + 1..)
                .is_some_and(|inner| short_eq(name.as_bytes(), inner))
    }

    /// The JSON name and the proto name of field `slot`.
    #[inline]
    fn names(&self, slot: usize) -> (&str, &str) {
        let field = &self.fields[slot];
        if field.escaped
            && let Some(&(_, json, proto)) = self.raw_names.iter().find(|r| r.0 as usize == slot)
        {
            return (self.str(json), self.str(proto));
        }
        // `"name":` without its quotes and colon.
        let inner = |key: Span| Span {
            start: key.start + 1,
            len: key.len.saturating_sub(3),
        };
        (
            self.str(inner(field.json_key)),
            self.str(inner(field.proto_key)),
        )
    }

    /// `"name":` of field `slot`, by its proto name or its JSON name (bytes:
    /// no UTF-8 boundary checks on the writer's path).
    #[inline]
    pub(crate) fn key(&self, slot: usize, proto_names: bool) -> &[u8] {
        let field = &self.fields[slot];
        let key = if proto_names {
            field.proto_key
        } else {
            field.json_key
        };
        let start = key.start as usize;
        self.text
            .as_bytes()
            .get(start..start + key.len as usize)
            .unwrap_or_default()
    }

    /// The number of oneofs.
    #[inline]
    pub(crate) fn oneof_count(&self) -> usize {
        self.oneofs as usize
    }

    /// The message type's full name.
    pub(crate) fn full_name(&self) -> &str {
        self.str(self.full_name)
    }

    /// The JSON size of a `wire_len`-byte message of this type, from the
    /// last one written (a sixteenth more, and 8 bytes); `None` before one.
    pub(crate) fn json_size(&self, wire_len: usize) -> Option<usize> {
        let per_wire = self.json_per_wire.load(Ordering::Relaxed);
        (per_wire != 0).then(|| {
            (wire_len.saturating_mul(per_wire as usize) / 64)
                .saturating_add(wire_len / 16)
                .saturating_add(8)
        })
    }

    /// Notes that a `wire_len`-byte message of this type was `json_len`
    /// bytes of JSON (stored when it changed by more than a sixteenth).
    pub(crate) fn learn_json_size(&self, wire_len: usize, json_len: usize) {
        let per_wire = u16::try_from(json_len.saturating_mul(64) / wire_len.max(1))
            .unwrap_or(u16::MAX)
            .max(1);
        let old = self.json_per_wire.load(Ordering::Relaxed);
        if per_wire.abs_diff(old) > old / 16 {
            self.json_per_wire.store(per_wire, Ordering::Relaxed);
        }
    }
}

// === impl EnumPlan ===

impl EnumPlan {
    #[inline]
    fn str(&self, s: Span) -> &str {
        self.text
            .get(s.start as usize..(s.start + s.len) as usize)
            .unwrap_or_default()
    }

    /// `"NAME"` (quoted) of `number`, if the enum declares it.
    #[inline]
    pub(crate) fn name(&self, number: i32) -> Option<&str> {
        self.names
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| self.str(self.names[i].1))
    }

    /// The enum type's full name.
    pub(crate) fn full_name(&self) -> &str {
        self.str(self.full_name)
    }

    /// The number of the value named `name`.
    #[inline]
    pub(crate) fn number(&self, name: &str) -> Option<i32> {
        let hash = fnv32(name.as_bytes());
        let from = self.lookup.partition_point(|&(h, _, _)| h < hash);
        self.lookup[from..]
            .iter()
            .take_while(|&&(h, _, _)| h == hash)
            .find(|&&(_, _, s)| self.str(s) == name)
            .map(|&(_, n, _)| n)
    }
}

/// Whether `b` starts with `a`: eight bytes at a time (a JSON key is mostly
/// short; `==` called `memcmp` for each key, 5 % of JSON -> wire).
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let Some(b) = b.get(..a.len()) else {
        return false;
    };
    let (a_chunks, a_tail) = a.as_chunks::<8>();
    let (b_chunks, b_tail) = b.as_chunks::<8>();
    a_chunks
        .iter()
        .zip(b_chunks)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_tail.iter().zip(b_tail).all(|(x, y)| x == y)
}

/// The bits of a [`MessagePlan::lookup`] entry that hold the name's hash.
const LOOKUP_HASH: u32 = 0xFFFF_0000;

/// A free [`MessagePlan::lookup`] entry (slot `u16::MAX` is never a field's).
const LOOKUP_EMPTY: u32 = u32::MAX;

/// The [`MessagePlan::lookup`] table of `names` (`(hash, slot)`).
fn lookup_table(names: &[(u32, usize)]) -> Box<[u32]> {
    let names: Vec<(u32, u16)> = names
        .iter()
        .filter_map(|&(hash, slot)| {
            Some((hash, u16::try_from(slot).ok().filter(|&s| s != u16::MAX)?))
        })
        .collect();
    if names.is_empty() {
        return Box::default();
    }
    let size = (names.len() * 3 / 2 + 1).next_power_of_two();
    let mask = size - 1;
    let mut table = vec![LOOKUP_EMPTY; size];
    for (hash, slot) in names {
        let mut at = hash as usize & mask;
        while table[at] != LOOKUP_EMPTY {
            at = (at + 1) & mask;
        }
        table[at] = (hash & LOOKUP_HASH) | u32::from(slot);
    }
    table.into()
}

/// FNV-1a, 32 bits, for the name tables: short keys, looked up once per
/// JSON key (SipHash was 9 % of JSON -> wire). The tables are built from
/// descriptors; a colliding key costs a comparison more.
#[inline]
fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A hash of a type's full name, eight bytes at a time (names share long
/// package prefixes, so a binary search by name compared many bytes per
/// step: 30 % of rendering a small message).
#[inline]
fn name_hash(bytes: &[u8]) -> u32 {
    let (chunks, tail) = bytes.as_chunks::<8>();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    let mut h = bytes.len() as u64;
    for chunk in chunks.iter().chain([&last]) {
        h = (h ^ u64::from_le_bytes(*chunk)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
    }
    h as u32
}

fn wkt_of(full_name: &str) -> Option<Wkt> {
    Some(match full_name {
        "google.protobuf.Any" => Wkt::Any,
        "google.protobuf.Timestamp" => Wkt::Timestamp,
        "google.protobuf.Duration" => Wkt::Duration,
        "google.protobuf.FieldMask" => Wkt::FieldMask,
        "google.protobuf.Struct" => Wkt::Struct,
        "google.protobuf.Value" => Wkt::Value,
        "google.protobuf.ListValue" => Wkt::ListValue,
        "google.protobuf.Empty" => Wkt::Empty,
        "google.protobuf.DoubleValue" => Wkt::DoubleValue,
        "google.protobuf.FloatValue" => Wkt::FloatValue,
        "google.protobuf.Int64Value" => Wkt::Int64Value,
        "google.protobuf.UInt64Value" => Wkt::UInt64Value,
        "google.protobuf.Int32Value" => Wkt::Int32Value,
        "google.protobuf.UInt32Value" => Wkt::UInt32Value,
        "google.protobuf.BoolValue" => Wkt::BoolValue,
        "google.protobuf.StringValue" => Wkt::StringValue,
        "google.protobuf.BytesValue" => Wkt::BytesValue,
        _ => return None,
    })
}

/// `s` as a JSON string literal.
fn quoted(s: &str) -> Box<str> {
    let mut out = Vec::with_capacity(s.len() + 2);
    to_json::write_str(&mut out, s);
    String::from_utf8(out).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::short_eq;

    /// `short_eq(a, b)` is `b.starts_with(a)`, around the eight-byte steps.
    #[test]
    fn short_eq_is_starts_with() {
        for len in 0..20 {
            let a: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            for extra in 0..3 {
                let mut b = a.clone();
                b.extend(std::iter::repeat_n(b'"', extra));
                assert!(short_eq(&a, &b));
                for at in 0..len {
                    let mut c = b.clone();
                    c[at] ^= 1;
                    assert!(!short_eq(&a, &c));
                }
            }
            assert_eq!(short_eq(&a, &a[..len.saturating_sub(1)]), len == 0);
        }
    }
}
