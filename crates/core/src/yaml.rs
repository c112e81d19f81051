//! Located YAML: the small engine under config and sweep files.
//!
//! Configs arrive in layers (a sweep's base config, then a variant's partial
//! config), so loading works on a small YAML tree that remembers, for every
//! node, the file and line it came from. Layers are deep-merged as trees and
//! only then deserialized (through a serde `Deserializer` over the tree); that
//! way an error in the merged result still points at the file and line that
//! supplied the offending value, together with its dotted key path.
//!
//! Why not serde-saphyr's own located errors (`Spanned`, its path map and
//! validation features) with a key-path → location table instead of the
//! deserializer below? They locate errors in the one document being parsed,
//! while a merged config has no such document: its values come from several
//! files. Using them would mean writing the merged tree back out as YAML,
//! parsing that again, and translating every error's position in the
//! synthesized text back to the layer that wrote the value — the same tree,
//! plus a round trip and a translation table. The deserializer here is the
//! simpler whole, so it stays; serde-saphyr does the parsing (with `Spanned`
//! positions for every node) and the serialization.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer};

/// Where in which file something was found; line and column are 1-based and
/// absent when unknown (e.g. a default value that no file wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Why a config could not be loaded. Every variant's message starts with the
/// file (and line and column where known) so that editors can jump to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML (or not a mapping at the top level).
    #[error("{location}: {message}")]
    Syntax {
        location: SourceLocation,
        message: String,
    },
    /// Valid YAML, but an unknown key, a wrong type or an impossible value.
    /// `key` is the dotted key path (`training.optimizer`, `model.hidden_sizes[0]`).
    #[error("{location}: {}{message}", key_prefix(key))]
    Invalid {
        location: SourceLocation,
        key: String,
        message: String,
    },
    /// `from_layers` was given nothing to load.
    #[error("no config layers given")]
    NoLayers,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// Reads a UTF-8 text file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------
// The located YAML tree

/// Where a node starts: its file and 1-based line and column (`None` when the
/// parser did not know).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pos {
    file: Arc<Path>,
    line_column: Option<(u64, u64)>,
}

impl Pos {
    fn location(&self) -> SourceLocation {
        SourceLocation {
            file: self.file.to_path_buf(),
            line: self.line_column.map(|(line, _)| line),
            column: self.line_column.map(|(_, column)| column),
        }
    }
}

/// A YAML node with the position it was read from. Scalars keep the type
/// YAML's core schema gave them, so that `epochs: "20"` stays a string and is
/// rejected where a number is expected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    value: Value,
    pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a mapping, with the position of the key itself (unknown-key
/// errors point there; value errors point at the value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    key_pos: Pos,
    pub(crate) value: Node,
}

impl Entry {
    /// Where the key is written.
    pub(crate) fn key_location(&self) -> SourceLocation {
        self.key_pos.location()
    }
}

/// Parses one YAML document whose top level must be a mapping; an empty
/// document (or one of comments only) is an empty mapping, so that an empty
/// variant file means "the base config unchanged".
pub(crate) fn parse_yaml(text: &str, file: &Path) -> Result<Node, ConfigError> {
    let file: Arc<Path> = Arc::from(file);
    // Non-finite floats (`.nan`, `.inf`) pass through so that validation
    // rejects them with the key path, which a parse error could not name.
    let options = serde_saphyr::options! {
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::PassThrough,
    };
    let raw: Option<serde_saphyr::Spanned<Raw>> =
        serde_saphyr::from_str_with_options(text, options).map_err(|err| {
            let err = err.without_snippet();
            let message = serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::DefaultMessageFormatter,
                err,
            );
            ConfigError::Syntax {
                location: Pos {
                    file: file.clone(),
                    line_column: line_column(err.location()),
                }
                .location(),
                message: message.into_owned(),
            }
        })?;
    let node = match raw {
        Some(raw) => Node::from_raw(raw, &file),
        None => Node {
            value: Value::Map(Vec::new()),
            pos: Pos {
                file: file.clone(),
                line_column: None,
            },
        },
    };
    match node.value {
        Value::Map(_) => Ok(node),
        Value::Null => Ok(Node {
            value: Value::Map(Vec::new()),
            pos: node.pos,
        }),
        _ => Err(ConfigError::Syntax {
            location: node.pos.location(),
            message: format!(
                "expected a mapping of keys at the top level, found {}",
                node.value.describe()
            ),
        }),
    }
}

fn line_column(location: Option<serde_saphyr::Location>) -> Option<(u64, u64)> {
    location
        .filter(|loc| loc.line() > 0)
        .map(|loc| (loc.line(), loc.column()))
}

impl Node {
    fn from_raw(raw: serde_saphyr::Spanned<Raw>, file: &Arc<Path>) -> Node {
        let pos = Pos {
            file: file.clone(),
            line_column: line_column(Some(raw.referenced)),
        };
        let value = match raw.value {
            Raw::Null => Value::Null,
            Raw::Bool(value) => Value::Bool(value),
            Raw::Int(value) => Value::Int(value),
            Raw::UInt(value) => Value::UInt(value),
            Raw::Float(value) => Value::Float(value),
            Raw::Str(value) => Value::Str(value),
            Raw::Seq(items) => Value::Seq(
                items
                    .into_iter()
                    .map(|item| Node::from_raw(item, file))
                    .collect(),
            ),
            Raw::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(key, value)| Entry {
                        key: key.value,
                        key_pos: Pos {
                            file: file.clone(),
                            line_column: line_column(Some(key.referenced)),
                        },
                        value: Node::from_raw(value, file),
                    })
                    .collect(),
            ),
        };
        Node { value, pos }
    }

    /// Where this node starts.
    pub(crate) fn location(&self) -> SourceLocation {
        self.pos.location()
    }

    /// Deep merge: mappings merge key by key, anything else is replaced by
    /// `over` (with its position, so errors blame the layer that wrote it).
    pub(crate) fn merge(&mut self, over: Node) {
        match (&mut self.value, over.value) {
            (Value::Map(base), Value::Map(over_entries)) => {
                for entry in over_entries {
                    match base.iter_mut().find(|existing| existing.key == entry.key) {
                        Some(existing) => {
                            existing.key_pos = entry.key_pos;
                            existing.value.merge(entry.value);
                        }
                        None => base.push(entry),
                    }
                }
            }
            (_, value) => {
                *self = Node {
                    value,
                    pos: over.pos,
                }
            }
        }
    }

    /// The items of a sequence node (None for other nodes).
    pub(crate) fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// `value` under the dotted `key` (`a.b` gives `{a: {b: value}}`), each
    /// key placed where `key_at` names the path, so that an error about a key
    /// (unknown to the schema) points at the line that wrote it.
    pub(crate) fn nested(key: &str, key_at: &Entry, value: Node) -> Node {
        let mut node = value;
        for part in key.rsplit('.').filter(|part| !part.is_empty()) {
            node = Node {
                pos: key_at.key_pos.clone(),
                value: Value::Map(vec![Entry {
                    key: part.to_string(),
                    key_pos: key_at.key_pos.clone(),
                    value: node,
                }]),
            };
        }
        node
    }

    /// A number placed where `at` is written (a value drawn from the
    /// distribution there): errors about it point at that line.
    pub(crate) fn number_at(value: f64, at: &Node) -> Node {
        Node {
            value: Value::Float(value),
            pos: at.pos.clone(),
        }
    }

    /// The entries of a mapping node (none for other nodes).
    pub(crate) fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Removes and returns the entry `key` of a mapping node.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry> {
        match &mut self.value {
            Value::Map(entries) => {
                let index = entries.iter().position(|entry| entry.key == key)?;
                Some(entries.remove(index))
            }
            _ => None,
        }
    }

    /// Whether this node is a mapping, or null (which a layer may use for
    /// "nothing to change").
    pub(crate) fn is_map_or_null(&self) -> bool {
        matches!(self.value, Value::Map(_) | Value::Null)
    }

    /// Turns a null node into an empty mapping at the same position.
    pub(crate) fn null_to_empty_map(mut self) -> Node {
        if matches!(self.value, Value::Null) {
            self.value = Value::Map(Vec::new());
        }
        self
    }

    /// Deserializes this node, turning serde's errors into located ones.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(NodeDe {
            node: self,
            path: String::new(),
        })
        .map_err(|err| {
            let (location, key) = match err.located {
                Some((pos, key)) => (pos.location(), key),
                None => (self.pos.location(), String::new()),
            };
            ConfigError::Invalid {
                location,
                key,
                message: err.message,
            }
        })
    }

    /// An error about the value at the dotted `key` path (`a.b[2].c`),
    /// located at that value, or at its deepest ancestor present in the tree
    /// when the value is a default that no file wrote.
    pub(crate) fn error_at(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            location: self.location_of(key),
            key: key.to_string(),
            message,
        }
    }

    /// Where the value at the dotted `key` path starts, or its deepest
    /// ancestor present in the tree.
    pub(crate) fn location_of(&self, key: &str) -> SourceLocation {
        self.find_nearest(key).pos.location()
    }

    fn find_nearest(&self, key: &str) -> &Node {
        let mut node = self;
        for step in key_steps(key) {
            let child = match (&node.value, step) {
                (Value::Map(entries), KeyStep::Key(name)) => entries
                    .iter()
                    .find(|entry| entry.key == name)
                    .map(|entry| &entry.value),
                (Value::Seq(items), KeyStep::Index(index)) => items.get(index),
                _ => None,
            };
            match child {
                Some(child) => node = child,
                None => break,
            }
        }
        node
    }
}

impl Value {
    fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }

    fn unexpected(&self) -> de::Unexpected<'_> {
        match self {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(value) => de::Unexpected::Bool(*value),
            Value::Int(value) => de::Unexpected::Signed(*value),
            Value::UInt(value) => de::Unexpected::Unsigned(*value),
            Value::Float(value) => de::Unexpected::Float(*value),
            Value::Str(value) => de::Unexpected::Str(value),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }
}

enum KeyStep<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into `a`, `b`, `2`, `c`. Keys never contain `.` or `[`
/// here: the paths come from this module's own field names.
fn key_steps(key: &str) -> impl Iterator<Item = KeyStep<'_>> {
    key.split('.')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let mut pieces = part.split('[');
            let name = pieces
                .next()
                .filter(|name| !name.is_empty())
                .map(KeyStep::Key);
            let indices = pieces.map(|piece| {
                KeyStep::Index(piece.trim_end_matches(']').parse().unwrap_or(usize::MAX))
            });
            name.into_iter().chain(indices)
        })
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ---------------------------------------------------------------------------
// Reading the tree out of serde-saphyr

/// The YAML value as serde-saphyr resolves it, each node wrapped in
/// `Spanned` to keep its position.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<serde_saphyr::Spanned<Raw>>),
    Map(Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> de::Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Raw, E> {
        Ok(Raw::Int(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Raw, E> {
        Ok(Raw::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Raw, E> {
        Ok(Raw::Str(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Raw, E> {
        Ok(Raw::Str(value))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries: Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Raw>)> =
            Vec::new();
        while let Some(key) = map.next_key::<serde_saphyr::Spanned<String>>()? {
            // serde-saphyr rejects duplicate keys itself; this guards the
            // merge, which would otherwise see only the first of them.
            if entries
                .iter()
                .any(|(existing, _)| existing.value == key.value)
            {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {:?}",
                    key.value
                )));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

// ---------------------------------------------------------------------------
// Deserializing the config out of the tree

/// A serde error that learns, on its way up, the position and key path of the
/// innermost node it came from.
#[derive(Debug)]
struct DeError {
    message: String,
    /// Set by `missing_field`: the key path then names the absent key, whose
    /// parent mapping is where the error is reported.
    missing: Option<&'static str>,
    located: Option<(Pos, String)>,
}

impl DeError {
    fn new(message: String) -> Self {
        DeError {
            message,
            missing: None,
            located: None,
        }
    }

    fn locate(mut self, pos: &Pos, path: &str) -> Self {
        if self.located.is_none() {
            let key = match self.missing {
                Some(field) => join_key(path, field),
                None => path.to_string(),
            };
            self.located = Some((pos.clone(), key));
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

fn one_of(names: &'static [&'static str]) -> String {
    match names {
        [] => "no keys are allowed here".to_string(),
        _ => format!("expected one of {}", names.join(", ")),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        DeError::new(message.to_string())
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("unknown variant {variant:?}, {}", one_of(expected)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("unknown key {field:?}, {}", one_of(expected)))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field),
            ..DeError::new("missing required key".to_string())
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(format!("duplicate key {field:?}"))
    }
}

/// Deserializes one node; `path` is its dotted key path.
struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl NodeDe<'_> {
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|err| err.locate(&self.node.pos, &self.path))
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(value) => visitor.visit_bool(*value),
            Value::Int(value) => visitor.visit_i64(*value),
            Value::UInt(value) => visitor.visit_u64(*value),
            Value::Float(value) => visitor.visit_f64(*value),
            Value::Str(value) => visitor.visit_borrowed_str(value),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                pending: None,
                path: &self.path,
            }),
        };
        self.locate(result)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => self.locate(visitor.visit_none()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Only unit variants are written in configs (`optimizer: adam`);
        // variants with data have their own mapping forms.
        let result = match &self.node.value {
            Value::Str(name) => visitor.visit_enum(name.as_str().into_deserializer()),
            other => Err(de::Error::invalid_type(other.unexpected(), &visitor)),
        };
        self.locate(result)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct SeqDe<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p str,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((index, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{index}]", self.path);
        // Locating here too catches errors raised after the element's own
        // deserializer returned (`try_from` conversions).
        let result = seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        });
        result.map(Some).map_err(|err| err.locate(&node.pos, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, Entry>,
    pending: Option<&'a Entry>,
    path: &'p str,
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(entry);
        let key: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(&entry.key);
        seed.deserialize(key)
            .map(Some)
            .map_err(|err| err.locate(&entry.key_pos, &join_key(self.path, &entry.key)))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let entry = self
            .pending
            .take()
            .ok_or_else(|| DeError::new("value requested before its key".to_string()))?;
        let path = join_key(self.path, &entry.key);
        // Locating here too catches errors raised after the value's own
        // deserializer returned (`try_from` conversions).
        let result = seed.deserialize(NodeDe {
            node: &entry.value,
            path: path.clone(),
        });
        result.map_err(|err| err.locate(&entry.value.pos, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
