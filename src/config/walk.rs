//! The path-tracking walk over a JSON document: a [`Node`] is a value with
//! the path that leads to it (`targets[1].filter.users[2]`), and an
//! [`Object`] is an object whose keys have been checked against the schema.
//!
//! Every reader returns a [`ConfigError`] at the node's path, so the parser
//! built on these never formats a path by hand.

use super::{clean_absolute, from_name, ConfigError, Named};
use crate::units::parse_duration;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A value in the document together with the path that leads to it.
#[derive(Debug)]
pub(super) struct Node<'a> {
    pub(super) value: &'a Value,
    pub(super) path: String,
}

/// An object whose keys have been checked against the schema.
#[derive(Debug)]
pub(super) struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Node<'a> {
    /// The document root, whose path is empty.
    pub(super) fn root(value: &'a Value) -> Node<'a> {
        Node {
            value,
            path: String::new(),
        }
    }

    pub(super) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path.clone(), message)
    }

    pub(super) fn object(&self, fields: &[&str]) -> Result<Object<'a>, ConfigError> {
        let Some(map) = self.value.as_object() else {
            return Err(self.error("expected an object"));
        };
        if let Some(key) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            let message = format!("unknown field (expected one of: {})", fields.join(", "));
            let key = key.escape_debug().to_string();
            return Err(ConfigError::new(field_path(&self.path, &key), message));
        }
        let path = self.path.clone();
        Ok(Object { map, path })
    }

    pub(super) fn list(&self, of: &str) -> Result<Vec<Node<'a>>, ConfigError> {
        let Some(items) = self.value.as_array() else {
            return Err(self.error(format!("expected a list of {of}")));
        };
        let at = |(i, value)| Node {
            value,
            path: format!("{}[{i}]", self.path),
        };
        Ok(items.iter().enumerate().map(at).collect())
    }

    pub(super) fn string(&self) -> Result<&'a str, ConfigError> {
        self.value
            .as_str()
            .ok_or_else(|| self.error("expected a string"))
    }

    pub(super) fn boolean(&self) -> Result<bool, ConfigError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.error("expected true or false"))
    }

    pub(super) fn whole(&self) -> Result<u64, ConfigError> {
        self.value
            .as_u64()
            .ok_or_else(|| self.error("expected a whole number"))
    }

    pub(super) fn duration(&self) -> Result<Duration, ConfigError> {
        let Some(text) = self.value.as_str() else {
            return Err(self.error("expected a duration string such as \"1s\""));
        };
        parse_duration(text).map_err(|e| self.error(e.to_string()))
    }

    pub(super) fn choice<T: Named>(&self) -> Result<T, ConfigError> {
        let text = self.string()?;
        from_name(text).ok_or_else(|| {
            let names: Vec<&str> = T::NAMES.iter().map(|(n, _)| *n).collect();
            self.error(format!(
                "unknown value '{}' (expected one of: {})",
                text.escape_debug(),
                names.join(", ")
            ))
        })
    }

    pub(super) fn absolute_path(&self) -> Result<PathBuf, ConfigError> {
        clean_absolute(self.string()?).map_err(|m| self.error(m))
    }
}

impl<'a> Object<'a> {
    pub(super) fn get(&self, key: &str) -> Option<Node<'a>> {
        let value = self.map.get(key)?;
        let path = field_path(&self.path, key);
        Some(Node { value, path })
    }

    pub(super) fn require(&self, key: &str) -> Result<Node<'a>, ConfigError> {
        self.get(key).ok_or_else(|| {
            ConfigError::new(self.path.clone(), format!("missing required field '{key}'"))
        })
    }

    /// The field read by `read`, or `default()` when it is absent.
    pub(super) fn or<T>(
        &self,
        key: &str,
        read: impl FnOnce(&Node<'a>) -> Result<T, ConfigError>,
        default: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            Some(node) => read(&node),
            None => Ok(default()),
        }
    }

    /// A list of non-empty strings, each accepted by `check`; absent is empty.
    pub(super) fn strings(
        &self,
        key: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in node.list("strings")? {
            let text = item.string()?;
            if text.is_empty() {
                return Err(item.error("must not be empty"));
            }
            check(text).map_err(|m| item.error(m))?;
            out.push(text.to_string());
        }
        Ok(out)
    }

    /// A list of items read by `read`; absent is empty.
    pub(super) fn items<T>(
        &self,
        key: &str,
        of: &str,
        mut read: impl FnMut(&Node<'a>) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(node) => node.list(of)?.iter().map(&mut read).collect(),
        }
    }
}

/// The path of the first key that an object of the document repeats, if
/// any. A `Value` keeps only the last of two equal keys, so a repeated
/// `targets` would silently drop a whole list of rules; this pass over the
/// raw document sees every key. Syntax errors are the value parser's to
/// report, so they count as "no duplicate" here.
pub(super) fn first_duplicate_key(bytes: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    DupCheck { path: "" }.deserialize(&mut de).ok().flatten()
}

/// Walks one JSON value, returning the path of the first repeated key.
struct DupCheck<'p> {
    path: &'p str,
}

impl<'de> DeserializeSeed<'de> for DupCheck<'_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupCheck<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0usize;
        loop {
            let path = format!("{}[{i}]", self.path);
            match seq.next_element_seed(DupCheck { path: &path })? {
                Some(inner) => found = found.or(inner),
                None => return Ok(found),
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let path = field_path(self.path, &key.escape_debug().to_string());
            if !keys.insert(key) && found.is_none() {
                found = Some(path.clone());
            }
            let inner = map.next_value_seed(DupCheck { path: &path })?;
            found = found.or(inner);
        }
        Ok(found)
    }
}

/// The path of field `key` of the object at `path` ("" is the document).
fn field_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_follow_fields_and_indexes() {
        let doc = json!({"a": {"b": [1, "x"]}});
        let root = Node::root(&doc);
        let a = root.object(&["a"]).unwrap().require("a").unwrap();
        assert_eq!(a.path, "a");
        let items = a.object(&["b"]).unwrap().require("b").unwrap();
        let items = items.list("things").unwrap();
        assert_eq!(items[1].path, "a.b[1]");
        assert_eq!(items[1].string(), Ok("x"));
        let err = items[0].string().unwrap_err();
        assert_eq!(err.to_string(), "a.b[0]: expected a string");
        let err = a.object(&["c", "d"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.b: unknown field (expected one of: c, d)"
        );
        let err = root.object(&["a"]).unwrap().require("z").unwrap_err();
        assert_eq!(err.to_string(), "missing required field 'z'");
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth() {
        let first = |doc: &str| first_duplicate_key(doc.as_bytes());
        assert_eq!(first(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#), None);
        assert_eq!(first(r#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            first(r#"{"t":[{"x":1},{"y":{"z":1,"q":[],"z":2}}]}"#).as_deref(),
            Some("t[1].y.z")
        );
        // The first one in document order wins; nested before a later one.
        assert_eq!(
            first(r#"{"a":{"b":1,"b":2},"a":3}"#).as_deref(),
            Some("a.b")
        );
        assert_eq!(first(r#"{"a\n":1,"a\n":1}"#).as_deref(), Some("a\\n"));
        assert_eq!(
            first(r#"{"a":1,"a":"#),
            None,
            "syntax errors are not duplicates"
        );
        assert_eq!(first(&"[".repeat(100_000)), None);
    }
}
