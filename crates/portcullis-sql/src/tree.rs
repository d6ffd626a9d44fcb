//! A generic, complete view of pg_query's parse tree.
//!
//! pg_query's own traversal (`ParseResult::nodes`) visits only the node types
//! it cares about: it does not descend into `VALUES` lists, `RETURNING`
//! lists, `ARRAY[...]`, `LIMIT`, window definitions, `MERGE` actions and
//! more, so a function call or a data-modifying statement placed there would
//! go unseen. A hand-written walker over the ~270 node types would have the
//! same failure mode the day one is forgotten or a new one appears.
//!
//! Every protobuf type of pg_query derives `serde::Serialize`, which gives a
//! reflection that is complete by construction: this module serializes a
//! statement into a small generic tree ([`Value`]) in which every struct
//! keeps its type name and field names. The walker in `walk.rs` then visits
//! every node without knowing the node types in advance.

use std::fmt;

use serde::ser::{self, Serialize};

/// One value of the generic tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Floats, unsigned integers that do not fit `i64` and other scalars the
    /// classification never looks at.
    Other,
    Str(String),
    List(Vec<Value>),
    Struct(Struct),
}

/// A protobuf message: its Rust type name and its fields in declaration order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Struct {
    pub name: &'static str,
    pub fields: Vec<(&'static str, Value)>,
}

impl Struct {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value)
    }

    /// The string field `field`, or `""` when absent.
    pub fn str(&self, field: &str) -> &str {
        match self.get(field) {
            Some(Value::Str(text)) => text,
            _ => "",
        }
    }

    pub fn int(&self, field: &str) -> Option<i64> {
        match self.get(field) {
            Some(Value::Int(number)) => Some(*number),
            _ => None,
        }
    }

    /// Whether the optional field `field` is present (not `None`).
    pub fn has(&self, field: &str) -> bool {
        !matches!(self.get(field), None | Some(Value::Null))
    }

    /// The list field `field`, or an empty slice.
    pub fn list(&self, field: &str) -> &[Value] {
        match self.get(field) {
            Some(Value::List(items)) => items,
            _ => &[],
        }
    }
}

/// Converts any pg_query protobuf value into the generic tree.
///
/// `Node` wrappers (a message whose only field is the `node` oneof) are
/// collapsed, so a `Vec<Node>` of range variables becomes a list of
/// `RangeVar` structs.
pub(crate) fn to_tree<T: Serialize + ?Sized>(value: &T) -> Result<Value, TreeError> {
    value.serialize(TreeSerializer)
}

#[derive(Debug)]
pub(crate) struct TreeError(String);

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TreeError {}

impl ser::Error for TreeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        TreeError(message.to_string())
    }
}

struct TreeSerializer;

fn int<T: TryInto<i64>>(number: T) -> Value {
    number.try_into().map_or(Value::Other, Value::Int)
}

impl ser::Serializer for TreeSerializer {
    type Ok = Value;
    type Error = TreeError;
    type SerializeSeq = ListBuilder;
    type SerializeTuple = ListBuilder;
    type SerializeTupleStruct = ListBuilder;
    type SerializeTupleVariant = ListBuilder;
    type SerializeMap = ListBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, TreeError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, TreeError> {
        Ok(int(v))
    }
    fn serialize_f32(self, _v: f32) -> Result<Value, TreeError> {
        Ok(Value::Other)
    }
    fn serialize_f64(self, _v: f64) -> Result<Value, TreeError> {
        Ok(Value::Other)
    }
    fn serialize_char(self, v: char) -> Result<Value, TreeError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, TreeError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Value, TreeError> {
        Ok(Value::Other)
    }
    fn serialize_none(self) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, TreeError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    // The `node` oneof of `Node` arrives here; the struct inside carries its
    // own type name, so the variant name adds nothing.
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<ListBuilder, TreeError> {
        Ok(ListBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<ListBuilder, TreeError> {
        Ok(ListBuilder(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<ListBuilder, TreeError> {
        Ok(ListBuilder(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<ListBuilder, TreeError> {
        Ok(ListBuilder(Vec::with_capacity(len)))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<ListBuilder, TreeError> {
        Ok(ListBuilder(Vec::new()))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructBuilder, TreeError> {
        Ok(StructBuilder(Struct {
            name,
            fields: Vec::with_capacity(len),
        }))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructBuilder, TreeError> {
        Ok(StructBuilder(Struct {
            name: variant,
            fields: Vec::with_capacity(len),
        }))
    }
}

pub(crate) struct ListBuilder(Vec<Value>);

impl ListBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.0.push(value.serialize(TreeSerializer)?);
        Ok(())
    }
}

impl ser::SerializeSeq for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTuple for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTupleStruct for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTupleVariant for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

// pg_query's messages have no map fields; a map would still be walked in
// full, as a flat list of keys and values.
impl ser::SerializeMap for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), TreeError> {
        self.push(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.0))
    }
}

pub(crate) struct StructBuilder(Struct);

impl StructBuilder {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        self.0.fields.push((key, value.serialize(TreeSerializer)?));
        Ok(())
    }

    fn finish(self) -> Value {
        let Struct { name, mut fields } = self.0;
        // Collapse `Node { node: <oneof> }` into the node itself.
        if name == "Node" && fields.len() == 1 {
            if let Some((_, inner)) = fields.pop() {
                return inner;
            }
        }
        Value::Struct(Struct { name, fields })
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for StructBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_statement(sql: &str) -> Value {
        let parsed = pg_query::parse(sql, 0).unwrap();
        let node = parsed.protobuf.stmts[0]
            .stmt
            .as_ref()
            .unwrap()
            .node
            .as_ref()
            .unwrap();
        to_tree(node).unwrap()
    }

    #[test]
    fn keeps_type_and_field_names_and_collapses_node_wrappers() {
        let Value::Struct(select) = first_statement("select a from s.t") else {
            panic!("not a struct");
        };
        assert_eq!(select.name, "SelectStmt");
        let [Value::Struct(range_var)] = select.list("from_clause") else {
            panic!(
                "from clause is not one struct: {:?}",
                select.get("from_clause")
            );
        };
        assert_eq!(range_var.name, "RangeVar");
        assert_eq!(range_var.str("schemaname"), "s");
        assert_eq!(range_var.str("relname"), "t");
        assert!(!select.has("where_clause"));
        assert!(select.int("op").is_some());
    }
}
