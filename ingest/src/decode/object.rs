//! One JSON object as a flat list of `(key, raw value)` pairs, borrowed from the payload.
//!
//! This is the decoder's only general JSON parse: serde_json validates the object and slices
//! each member's value text without building it, and the caller then reads just the members a
//! table maps, each with a typed read. No `serde_json::Value` is built per event. Keys are
//! borrowed unless they contain escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Members of one object, in document order.
pub(crate) type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// What a JSON document turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Object,
    /// Valid JSON, but not an object; the name of what it is.
    NotObject(&'static str),
}

/// Parses `text` as a JSON object into `into` (cleared first).
pub(crate) fn parse_object<'a>(
    text: &'a str,
    into: &mut Fields<'a>,
) -> Result<Shape, serde_json::Error> {
    into.clear();
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = ObjectSeed { fields: into }.deserialize(&mut de)?;
    de.end()?;
    Ok(shape)
}

/// Parses an object that serde_json already validated (a member's raw value).
pub(crate) fn parse_nested<'a>(raw: &'a RawValue, into: &mut Fields<'a>) -> bool {
    raw.get().starts_with('{') && matches!(parse_object(raw.get(), into), Ok(Shape::Object))
}

/// Hands a vector's allocation to a vector of another lifetime.
///
/// Scratch vectors hold borrows of one payload and must be emptied before the next. Collecting
/// an emptied vector through `filter_map` reuses its buffer in place (the element layouts are
/// identical, only lifetimes differ), so the hot path allocates nothing per event without any
/// unsafe code.
pub(crate) fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

struct ObjectSeed<'v, 'a> {
    fields: &'v mut Fields<'a>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            self.fields.push((key, value));
        }
        Ok(Shape::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::NotObject("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::NotObject("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::NotObject("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::NotObject("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::NotObject("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::NotObject("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::NotObject("null"))
    }
}

/// Deserializes a key as borrowed text when the payload allows it.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn members_in_order_with_raw_values() {
        let text = r#" {"a": 1, "b" : {"c":[1, 2]}, "d\"e":"x\ny", "f":null} "#;
        let mut fields = Fields::new();
        assert_eq!(parse_object(text, &mut fields).unwrap(), Shape::Object);
        let got: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(
            got,
            [
                ("a", "1"),
                ("b", r#"{"c":[1, 2]}"#),
                ("d\"e", r#""x\ny""#),
                ("f", "null")
            ]
        );
        assert!(matches!(fields[0].0, Cow::Borrowed(_)));
        assert!(matches!(fields[2].0, Cow::Owned(_)));
        let mut nested = Fields::new();
        assert!(parse_nested(fields[1].1, &mut nested));
        assert_eq!(nested[0].0, "c");
        assert!(!parse_nested(fields[0].1, &mut nested));
    }

    #[test]
    fn not_objects_and_errors() {
        let mut fields = Fields::new();
        assert_eq!(
            parse_object("[1,{\"a\":2}]", &mut fields).unwrap(),
            Shape::NotObject("an array")
        );
        assert_eq!(
            parse_object("\"s\"", &mut fields).unwrap(),
            Shape::NotObject("a string")
        );
        assert_eq!(
            parse_object("12.5", &mut fields).unwrap(),
            Shape::NotObject("a number")
        );
        assert_eq!(
            parse_object("null", &mut fields).unwrap(),
            Shape::NotObject("null")
        );
        assert_eq!(
            parse_object("true", &mut fields).unwrap(),
            Shape::NotObject("a boolean")
        );
        let e = parse_object("{\"a\":}", &mut fields).unwrap_err();
        assert_eq!((e.line(), e.column()), (1, 6));
        assert!(parse_object("{} x", &mut fields).is_err());
        assert!(parse_object("", &mut fields).is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // A member's value is skipped iteratively, whatever its depth.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = format!("{{\"a\":{deep}}}");
        let mut fields = Fields::new();
        assert_eq!(parse_object(&text, &mut fields).unwrap(), Shape::Object);
        assert_eq!(fields[0].1.get().len(), 200_000);
        assert!(!matches!(
            parse_object(&deep, &mut fields),
            Ok(Shape::Object)
        ));
    }

    #[test]
    fn recycle_keeps_the_allocation() {
        let mut v: Vec<(Cow<'static, str>, u64)> = Vec::with_capacity(32);
        v.push((Cow::Borrowed("x"), 1));
        let ptr = v.as_ptr() as usize;
        let text = String::from("y");
        let mut w: Vec<(Cow<'_, str>, u64)> = recycle(v);
        assert!(w.is_empty());
        assert!(w.capacity() >= 32);
        assert_eq!(w.as_ptr() as usize, ptr);
        w.push((Cow::Borrowed(text.as_str()), 2));
        assert_eq!(w.len(), 1);
    }
}
