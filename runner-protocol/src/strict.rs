//! Parsing a request into a JSON value, refusing keys given twice.
//!
//! serde_json keeps the last of two equal keys, silently: a line
//! `{"type":"cancel","type":"run",...}` would start a run, and
//! `{"id":"a","id":"b",...}` would answer as `b` a client that waits for `a`.
//! RFC 8259 leaves such objects to each reader; here a request is refused
//! instead, and the answer names the key and where it was.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a line did not parse.
#[derive(Debug)]
pub(crate) enum StrictError {
    /// Not JSON (serde_json's error).
    Json(serde_json::Error),
    /// The top-level object had `key` twice.
    Duplicate {
        /// The repeated key.
        key: String,
    },
}

/// A key given twice in a nested object: `at` is that object's path
/// (`params.env`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NestedDuplicate {
    /// The object's path.
    pub at: String,
    /// The repeated key.
    pub key: String,
}

/// Parses `text` as serde_json would, but a key given twice at the top
/// level is an error, and the first key given twice in a nested object is
/// reported beside the value (which keeps that key's first value). Parsing
/// goes on after a nested one, so that a top-level key given twice later
/// in the line is still refused.
pub(crate) fn parse(text: &str) -> Result<(Value, Option<NestedDuplicate>), StrictError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Node {
        path: &Path::Root,
        found: &found,
    };
    match seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(value) => Ok((
            value,
            found
                .into_inner()
                .map(|(at, key)| NestedDuplicate { at, key }),
        )),
        Err(e) => Err(match found.into_inner() {
            Some((at, key)) if at.is_empty() => StrictError::Duplicate { key },
            _ => StrictError::Json(e),
        }),
    }
}

/// Where a value sits, for the message (no allocation unless it is needed).
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key with a control character is quoted, so the message stays one line.
        let key = |f: &mut fmt::Formatter<'_>, key: &str| {
            if key.chars().any(char::is_control) {
                write!(f, "{key:?}")
            } else {
                f.write_str(key)
            }
        };
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => key(f, k),
            Path::Key(parent, k) => {
                write!(f, "{parent}.")?;
                key(f, k)
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// One value to parse, at `path`.
#[derive(Clone, Copy)]
struct Node<'a> {
    path: &'a Path<'a>,
    found: &'a RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this never yields null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = Path::Index(self.path, items.len());
            let node = Node {
                path: &path,
                found: self.found,
            };
            match seq.next_element_seed(node)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = Path::Key(self.path, &key);
            let value = map.next_value_seed(Node {
                path: &path,
                found: self.found,
            })?;
            if object.contains_key(&key) {
                if matches!(self.path, Path::Root) {
                    *self.found.borrow_mut() = Some((String::new(), key.clone()));
                    return Err(de::Error::custom(format_args!("key {key:?} given twice")));
                }
                let mut found = self.found.borrow_mut();
                if found.is_none() {
                    *found = Some((self.path.to_string(), key));
                }
                continue;
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> (String, String) {
        match parse(text) {
            Err(StrictError::Duplicate { key }) => (String::new(), key),
            Ok((_, Some(NestedDuplicate { at, key }))) => (at, key),
            other => panic!("{text}: expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn the_same_value_as_serde_json_when_keys_are_unique() {
        for text in [
            r#"{"a":1,"b":[true,null,-2,3.5,1e300,18446744073709551615],"c":{"d":"\u00e9"}}"#,
            r#"[{"a":{}},{"a":[]}]"#,
            r#" "s" "#,
            "-0",
        ] {
            let (ours, duplicate) = parse(text).unwrap();
            assert_eq!(ours, serde_json::from_str::<Value>(text).unwrap(), "{text}");
            assert_eq!(duplicate, None);
        }
    }

    #[test]
    fn a_key_given_twice_is_named_with_its_place() {
        assert_eq!(
            duplicate(r#"{"id":"a","id":"b"}"#),
            ("".into(), "id".into())
        );
        assert_eq!(
            duplicate(r#"{"params":{"env":{"A":"1","B":"2","A":"3"}}}"#),
            ("params.env".into(), "A".into())
        );
        assert_eq!(
            duplicate(r#"{"x":[{"k":1},{"k":1,"k":2}]}"#),
            ("x[1]".into(), "k".into())
        );
        assert_eq!(
            duplicate(r#"{"a\nb":{"k":1,"k":2}}"#),
            (r#""a\nb""#.into(), "k".into()),
            "one line"
        );
        // Equal keys in different objects are fine.
        assert!(matches!(
            parse(r#"{"a":{"k":1},"b":{"k":1}}"#),
            Ok((_, None))
        ));
    }

    #[test]
    fn a_top_level_key_given_twice_is_refused_after_a_nested_one_too() {
        // serde_json's last-wins would answer as `c` a client waiting on `b`.
        let text = r#"{"type":"run","id":"b","params":{"env":{"K":"1","K":"2"}},"id":"c"}"#;
        assert_eq!(duplicate(text), ("".into(), "id".into()));
        // The first nested one is named; the first value is kept.
        let text = r#"{"a":{"k":1,"k":2},"b":{"j":1,"j":2}}"#;
        let (value, found) = parse(text).unwrap();
        assert_eq!(value["a"]["k"], 1);
        assert_eq!(
            found,
            Some(NestedDuplicate {
                at: "a".into(),
                key: "k".into()
            })
        );
    }

    #[test]
    fn what_is_not_json_stays_serde_jsons_error() {
        for text in ["{", r#"{"a":1} x"#, "1e999999", r#"{"a":nul}"#] {
            assert!(matches!(parse(text), Err(StrictError::Json(_))), "{text}");
        }
        // Its depth limit holds as well.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(parse(&deep), Err(StrictError::Json(_))));
    }
}
