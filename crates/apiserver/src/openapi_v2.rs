//! OpenAPI v2 (`/openapi/v2`), for the clients that still read it: kubectl validates a `kind:
//! List` file against v2, and asks for it as protobuf only (gnostic's `openapi.v2.Document`).
//! The document holds every definition of the v3 documents (`#/components/schemas/` refs
//! become `#/definitions/`) and no paths, which is all those clients read from it.
//!
//! The protobuf is written by hand: a few message types, a handful of field numbers.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The media type served. kubectl asks for the deprecated `...spec.v2@v1.0+protobuf`, but
/// answers must use the dotted form: Go's media type parser rejects the `@`.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const V3_REF: &str = "#/components/schemas/";
const V2_REF: &str = "#/definitions/";

/// The v2 JSON document for the definitions of all v3 documents.
pub fn json_document(defs: &BTreeMap<String, Value>, version: &str) -> Value {
    let definitions: Map<String, Value> = defs.iter().map(|(k, v)| (k.clone(), to_v2(v))).collect();
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}, "definitions": definitions})
}

/// A v3 schema as v2 spells it: refs into `#/definitions/`, a single-ref `allOf` (v3's way of
/// giving a ref a description) back to a plain ref, one type, no `nullable`/`oneOf`/`anyOf`,
/// and arrays always with items (v2 readers reject an array without them).
fn to_v2(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                match k.as_str() {
                    "$ref" => {
                        let r = val.as_str().unwrap_or_default();
                        out.insert(k.clone(), json!(r.replace(V3_REF, V2_REF)));
                    }
                    "allOf" if val.as_array().is_some_and(|a| a.len() == 1 && a[0].get("$ref").is_some()) => {
                        out.insert("$ref".into(), to_v2(&val[0]["$ref"]).as_str().map(|r| json!(r.replace(V3_REF, V2_REF))).unwrap_or_default());
                    }
                    "nullable" | "oneOf" | "anyOf" | "not" => {}
                    "type" => {
                        let t = match val {
                            Value::Array(a) => a.iter().find(|t| t.as_str() != Some("null")).cloned().unwrap_or(Value::Null),
                            other => other.clone(),
                        };
                        if !t.is_null() {
                            out.insert(k.clone(), t);
                        }
                    }
                    "properties" | "definitions" => {
                        let props: Map<String, Value> = val.as_object().map(|p| p.iter().map(|(n, s)| (n.clone(), to_v2(s))).collect()).unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "items" | "additionalProperties" if val.is_object() => {
                        out.insert(k.clone(), to_v2(val));
                    }
                    _ => {
                        out.insert(k.clone(), val.clone());
                    }
                }
            }
            if out.get("type").and_then(Value::as_str) == Some("array") && !out.contains_key("items") {
                out.insert("items".into(), json!({}));
            }
            // A ref carries nothing else in v2 readers' eyes; the description may stay.
            if out.contains_key("$ref") {
                out.retain(|k, _| k == "$ref" || k == "description");
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Protobuf writing: just what these messages need.
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.varint(((field as u64) << 3) | 2);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.varint((field as u64) << 3);
            self.varint(1);
        }
    }
    fn int(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.varint((field as u64) << 3);
            self.varint(v as u64);
        }
    }
    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.varint(((field as u64) << 3) | 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer(Vec::new());
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// gnostic's `Any`: the value as YAML text (JSON is YAML).
fn any(w: &mut Writer, field: u32, v: &Value) {
    w.message(field, |a| a.string(2, &v.to_string()));
}

/// `NamedAny` entries for the `x-` keys of a schema.
fn vendor_extensions(w: &mut Writer, field: u32, m: &Map<String, Value>) {
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        w.message(field, |n| {
            n.string(1, k);
            any(n, 2, v);
        });
    }
}

/// An `openapi.v2.Schema` from a v2 JSON schema.
fn schema(w: &mut Writer, v: &Value) {
    let Some(m) = v.as_object() else { return };
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
    let f = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or_default();
    let i = |k: &str| m.get(k).and_then(Value::as_i64).unwrap_or_default();
    let b = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or_default();
    w.string(1, s("$ref"));
    w.string(2, s("format"));
    w.string(3, s("title"));
    w.string(4, s("description"));
    if let Some(d) = m.get("default") {
        any(w, 5, d);
    }
    w.double(6, f("multipleOf"));
    w.double(7, f("maximum"));
    w.boolean(8, b("exclusiveMaximum"));
    w.double(9, f("minimum"));
    w.boolean(10, b("exclusiveMinimum"));
    w.int(11, i("maxLength"));
    w.int(12, i("minLength"));
    w.string(13, s("pattern"));
    w.int(14, i("maxItems"));
    w.int(15, i("minItems"));
    w.boolean(16, b("uniqueItems"));
    w.int(17, i("maxProperties"));
    w.int(18, i("minProperties"));
    for r in m.get("required").and_then(Value::as_array).into_iter().flatten() {
        w.string(19, r.as_str().unwrap_or_default());
    }
    for e in m.get("enum").and_then(Value::as_array).into_iter().flatten() {
        any(w, 20, e);
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(ap)) => w.message(21, |a| {
            // A oneof member keeps its field even when false.
            a.varint(2 << 3);
            a.varint(*ap as u64);
        }),
        Some(ap @ Value::Object(_)) => w.message(21, |a| a.message(1, |sc| schema(sc, ap))),
        _ => {}
    }
    if let Some(t) = m.get("type").and_then(Value::as_str) {
        w.message(22, |ti| ti.string(1, t));
    }
    if let Some(items) = m.get("items") {
        w.message(23, |it| it.message(1, |sc| schema(sc, items)));
    }
    for a in m.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        w.message(24, |sc| schema(sc, a));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        w.message(25, |p| {
            for (name, sub) in props {
                p.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |sc| schema(sc, sub));
                });
            }
        });
    }
    w.boolean(27, b("readOnly"));
    vendor_extensions(w, 31, m);
}

/// The document as `openapi.v2.Document` protobuf.
pub fn protobuf_document(doc: &Value) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
    w.message(2, |info| {
        info.string(1, doc["info"]["title"].as_str().unwrap_or_default());
        info.string(2, doc["info"]["version"].as_str().unwrap_or_default());
    });
    w.message(8, |_| {});
    w.message(9, |defs| {
        for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
            defs.message(1, |n| {
                n.string(1, name);
                n.message(2, |sc| schema(sc, s));
            });
        }
    });
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_refs_and_wrappers_become_v2_refs() {
        let v3 = json!({"type": "object", "properties": {
            "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard metadata.", "default": {}},
            "ports": {"type": "array"},
            "name": {"type": ["string", "null"], "nullable": true}}});
        let v2 = to_v2(&v3);
        assert_eq!(
            v2["properties"]["metadata"],
            json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard metadata."})
        );
        assert_eq!(v2["properties"]["ports"], json!({"type": "array", "items": {}}), "arrays always get items");
        assert_eq!(v2["properties"]["name"], json!({"type": "string"}));
    }

    #[test]
    fn the_protobuf_carries_definitions_and_extensions() {
        let defs = BTreeMap::from([(
            "io.k8s.api.core.v1.Service".to_string(),
            json!({"type": "object", "properties": {"kind": {"type": "string"}}, "x-kubernetes-group-version-kind": [{"group": "", "kind": "Service", "version": "v1"}]}),
        )]);
        let doc = json_document(&defs, "v1.32.0");
        let pb = protobuf_document(&doc);
        assert_eq!(&pb[..5], b"\x0a\x032.0", "field 1: swagger");
        let text = String::from_utf8_lossy(&pb);
        assert!(text.contains("io.k8s.api.core.v1.Service"));
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains(r#"[{"group":"","kind":"Service","version":"v1"}]"#), "the extension's value as YAML (JSON) text");
    }
}
