//! JSON objects with keys in the order we write them. The real CLI prints `"type"`
//! first; serde_json's `Map` sorts keys, and enabling its `preserve_order` feature here
//! would change serde_json for every crate of the workspace built alongside us.

use serde_json::Value;

/// An object under construction, as JSON text.
pub struct Obj(String);

impl Default for Obj {
    fn default() -> Self {
        Self::new()
    }
}

impl Obj {
    pub fn new() -> Self {
        Obj(String::from("{"))
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&Value::from(k).to_string());
        self.0.push(':');
    }

    /// A field whose value serde_json serialises (strings, numbers, null, `json!` data).
    pub fn val(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.key(k);
        self.0.push_str(&v.into().to_string());
        self
    }

    /// A field whose value is already JSON text, e.g. a nested [`Obj::done`].
    pub fn raw(mut self, k: &str, json: &str) -> Self {
        self.key(k);
        self.0.push_str(json);
        self
    }

    /// Closes the object and returns its text.
    pub fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_escapes() {
        let inner = Obj::new().val("z", 1).val("a", Value::Null).done();
        let s = Obj::new().val("type", "x\"y").raw("item", &inner).done();
        assert_eq!(s, r#"{"type":"x\"y","item":{"z":1,"a":null}}"#);
        assert_eq!(Obj::new().done(), "{}");
    }
}
