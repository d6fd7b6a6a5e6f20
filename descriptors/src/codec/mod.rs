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
//! - [`from_json`]: JSON text → wire bytes, one streaming pass over the JSON
//!   tokens (serde_json driven by seeds that know the plan).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, Weak},
};

use prost_reflect::{Cardinality, DescriptorPool, EnumDescriptor, Kind, MessageDescriptor};

pub(crate) mod from_json;
pub(crate) mod nesting;
pub(crate) mod to_json;

/// The compiled plans of one descriptor pool, filled lazily per message type.
#[derive(Debug)]
pub struct Codec {
    pool: DescriptorPool,
    programs: RwLock<HashMap<Box<str>, Arc<Program>>>,
}

/// One message type and the closure of the message types it refers to.
/// Message 0 is the root.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) messages: Vec<MessagePlan>,
    pub(crate) enums: Vec<EnumPlan>,
    /// Some message needs the prost-reflect codec (groups, extensions).
    pub(crate) unsupported: bool,
}

/// How one message type is read and written.
#[derive(Debug)]
pub(crate) struct MessagePlan {
    pub(crate) wkt: Option<Wkt>,
    /// Fields in field number order (the order JSON output follows).
    pub(crate) fields: Vec<FieldPlan>,
    /// Slot in `fields` by field number, for numbers below its length.
    pub(crate) dense: Vec<u16>,
    /// Field slot by JSON name and by proto name.
    pub(crate) by_name: HashMap<Box<str>, u16, Fnv>,
    /// Names of the oneofs (`FieldPlan::oneof` indexes them).
    pub(crate) oneofs: Vec<Box<str>>,
    /// Groups or extensions: handled by the prost-reflect codec instead.
    pub(crate) unsupported: bool,
}

/// How one field is read and written.
#[derive(Debug)]
pub(crate) struct FieldPlan {
    pub(crate) number: u32,
    /// `"jsonName":` and `"proto_name":`, escaped and quoted.
    pub(crate) json_key: Box<str>,
    pub(crate) proto_key: Box<str>,
    pub(crate) json_name: Box<str>,
    pub(crate) proto_name: Box<str>,
    pub(crate) ty: Ty,
    pub(crate) card: Card,
    /// Index into `MessagePlan::oneofs` (synthetic oneofs of proto3
    /// `optional` included: a JSON key given twice for one is refused).
    pub(crate) oneof: Option<u16>,
    /// Written as one packed length-delimited record (repeated scalars).
    pub(crate) packed: bool,
}

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
    pub(crate) names: Vec<(i32, Box<str>)>,
    pub(crate) by_name: HashMap<Box<str>, i32, Fnv>,
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

/// Live codecs, by pool, so a bare `MessageDescriptor` finds the codec of its
/// snapshot. Weak: a codec lives as long as its snapshot holds it.
static LIVE: RwLock<Vec<Weak<Codec>>> = RwLock::new(Vec::new());

impl Codec {
    /// The codec of `pool`: the one its snapshot holds if alive, else a new
    /// one (kept alive only by the caller).
    pub fn for_pool(pool: &DescriptorPool) -> Arc<Codec> {
        {
            let live = LIVE.read().unwrap_or_else(PoisonError::into_inner);
            for weak in live.iter() {
                if let Some(codec) = weak.upgrade().filter(|c| c.pool == *pool) {
                    return codec;
                }
            }
        }
        let codec = Arc::new(Codec {
            pool: pool.clone(),
            programs: RwLock::new(HashMap::new()),
        });
        let mut live = LIVE.write().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&codec));
        codec
    }

    /// The pool this codec compiles from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The program of message type `full_name`, compiled on first use.
    pub(crate) fn program(&self, full_name: &str) -> Option<Arc<Program>> {
        if let Some(p) = self
            .programs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(full_name)
        {
            return Some(p.clone());
        }
        let desc = self.pool.get_message_by_name(full_name)?;
        let program = Arc::new(Program::compile(&desc));
        self.programs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(full_name.into(), program.clone());
        Some(program)
    }
}

// === impl Program ===

impl Program {
    fn compile(root: &MessageDescriptor) -> Self {
        let mut compiler = Compiler::default();
        compiler.message(root);
        while let Some(desc) = compiler.queue.pop() {
            let plan = compiler.plan(&desc);
            let index = compiler.message_index[desc.full_name()] as usize;
            compiler.messages[index] = Some(plan);
        }
        let messages: Vec<MessagePlan> = compiler.messages.into_iter().flatten().collect();
        Program {
            unsupported: messages.iter().any(|m| m.unsupported),
            messages,
            enums: compiler.enums,
        }
    }
}

#[derive(Default)]
struct Compiler {
    message_index: HashMap<String, u32>,
    messages: Vec<Option<MessagePlan>>,
    queue: Vec<MessageDescriptor>,
    enum_index: HashMap<String, u32>,
    enums: Vec<EnumPlan>,
}

impl Compiler {
    fn message(&mut self, desc: &MessageDescriptor) -> u32 {
        if let Some(&i) = self.message_index.get(desc.full_name()) {
            return i;
        }
        let i = self.messages.len() as u32;
        self.messages.push(None);
        self.message_index.insert(desc.full_name().to_owned(), i);
        self.queue.push(desc.clone());
        i
    }

    fn enumeration(&mut self, desc: &EnumDescriptor) -> u32 {
        if let Some(&i) = self.enum_index.get(desc.full_name()) {
            return i;
        }
        let mut names: Vec<(i32, Box<str>)> = Vec::new();
        let mut by_name = HashMap::default();
        for value in desc.values() {
            by_name.insert(value.name().into(), value.number());
            names.push((value.number(), quoted(value.name())));
        }
        // Stable: the first declared name of an alias wins, as get_value does.
        names.sort_by_key(|(n, _)| *n);
        names.dedup_by_key(|(n, _)| *n);
        let plan = EnumPlan {
            is_null_value: desc.full_name() == "google.protobuf.NullValue",
            default: desc.default_value().number(),
            names,
            by_name,
        };
        let i = self.enums.len() as u32;
        self.enums.push(plan);
        self.enum_index.insert(desc.full_name().to_owned(), i);
        i
    }

    fn plan(&mut self, desc: &MessageDescriptor) -> MessagePlan {
        let mut unsupported = desc.extension_ranges().len() > 0;
        let mut oneofs = Vec::new();
        let mut oneof_index: HashMap<String, u16> = HashMap::new();
        let mut fields = Vec::new();
        for field in desc.fields() {
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
                Kind::Message(m) => Ty::Message(self.message(m)),
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
                    oneofs.push(o.name().into());
                    (oneofs.len() - 1) as u16
                })
            });
            fields.push(FieldPlan {
                number: field.number(),
                json_key: format!("{}:", quoted(field.json_name())).into(),
                proto_key: format!("{}:", quoted(field.name())).into(),
                json_name: field.json_name().into(),
                proto_name: field.name().into(),
                ty,
                card,
                oneof,
                packed: field.is_packed(),
            });
        }
        fields.sort_by_key(|f| f.number);
        let mut dense = Vec::new();
        let mut by_name = HashMap::default();
        for (slot, field) in fields.iter().enumerate() {
            if field.number < MAX_DENSE_NUMBER {
                let n = field.number as usize;
                if dense.len() <= n {
                    dense.resize(n + 1, u16::MAX);
                }
                dense[n] = slot as u16;
            }
            // JSON names first: `get_field_by_json_name` wins over the proto name.
            by_name.insert(field.json_name.clone(), slot as u16);
        }
        for (slot, field) in fields.iter().enumerate() {
            by_name
                .entry(field.proto_name.clone())
                .or_insert(slot as u16);
        }
        MessagePlan {
            wkt: wkt_of(desc.full_name()),
            fields,
            dense,
            by_name,
            oneofs,
            unsupported,
        }
    }
}

// === impl MessagePlan ===

impl MessagePlan {
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
}

// === impl EnumPlan ===

impl EnumPlan {
    /// `"NAME"` (quoted) of `number`, if the enum declares it.
    #[inline]
    pub(crate) fn name(&self, number: i32) -> Option<&str> {
        self.names
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| &*self.names[i].1)
    }
}

/// FNV-1a for the name tables: short keys, looked up once per JSON key
/// (SipHash was 9% of JSON -> wire). The tables are built from descriptors;
/// a lookup with a colliding key costs at most a scan of one message's names.
pub(crate) type Fnv = std::hash::BuildHasherDefault<FnvHasher>;

/// See [`Fnv`].
#[derive(Default)]
pub(crate) struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
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
