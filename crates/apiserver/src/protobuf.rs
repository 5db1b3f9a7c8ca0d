//! Reading Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed clients send (`kubectl create deployment`, `create configmap`, ...).
//! The body is `k8s\0` + runtime.Unknown{typeMeta, raw}; `raw` is the object's message. The
//! wire schema (field numbers and JSON names) is the generated table in `proto_fields.txt`.
//! Responses are always JSON, which those clients accept.

use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\x00";

#[derive(Debug)]
struct Field {
    json: String,
    kind: String,
    repeated: bool,
    msg: String,
}

static SCHEMA: LazyLock<HashMap<String, HashMap<u32, Field>>> = LazyLock::new(|| {
    let mut out: HashMap<String, HashMap<u32, Field>> = HashMap::new();
    let mut current = String::new();
    for line in include_str!("proto_fields.txt").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            current = line.trim().to_string();
            out.entry(current.clone()).or_default();
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 3 {
            continue;
        }
        let (kind, repeated) = match parts[2].strip_suffix("[]") {
            Some(k) => (k.to_string(), true),
            None => (parts[2].to_string(), false),
        };
        let f = Field { json: parts[1].to_string(), kind, repeated, msg: parts.get(3).map(|s| s.to_string()).unwrap_or_default() };
        if let Ok(tag) = parts[0].parse() {
            out.get_mut(&current).unwrap().insert(tag, f);
        }
    }
    out
});

pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().map(str::trim) == Some("application/vnd.kubernetes.protobuf")
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        let b = self.buf.get(self.pos..self.pos + n).ok_or("truncated field")?;
        self.pos += n;
        Ok(b)
    }
    fn fixed(&mut self, n: usize) -> Result<&'a [u8], String> {
        let b = self.buf.get(self.pos..self.pos + n).ok_or("truncated fixed field")?;
        self.pos += n;
        Ok(b)
    }
}

/// One raw field: (tag, wire value).
enum Wire<'a> {
    Varint(u64),
    Fixed64(&'a [u8]),
    Len(&'a [u8]),
    Fixed32(&'a [u8]),
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let key = r.varint()?;
        let tag = (key >> 3) as u32;
        let w = match key & 7 {
            0 => Wire::Varint(r.varint()?),
            1 => Wire::Fixed64(r.fixed(8)?),
            2 => Wire::Len(r.bytes()?),
            5 => Wire::Fixed32(r.fixed(4)?),
            t => return Err(format!("unsupported wire type {t}")),
        };
        out.push((tag, w));
    }
    Ok(out)
}

fn string_of(w: &Wire) -> Option<String> {
    match w {
        Wire::Len(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn format_time(seconds: i64, nanos: i64, micro: bool) -> Option<Value> {
    if seconds <= 0 && nanos == 0 {
        return None; // Go's zero time: unset.
    }
    let t = chrono::DateTime::from_timestamp(seconds, nanos.max(0) as u32)?;
    Some(json!(if micro { t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string() } else { t.format("%Y-%m-%dT%H:%M:%SZ").to_string() }))
}

fn go_duration(ns: i64) -> String {
    let secs = ns as f64 / 1e9;
    let h = (secs / 3600.0).floor() as i64;
    let m = ((secs - h as f64 * 3600.0) / 60.0).floor() as i64;
    let s = secs - h as f64 * 3600.0 - m as f64 * 60.0;
    let s_str = if s.fract() == 0.0 { format!("{}s", s as i64) } else { format!("{s}s") };
    if h > 0 {
        format!("{h}h{m}m{s_str}")
    } else if m > 0 {
        format!("{m}m{s_str}")
    } else {
        s_str
    }
}

/// Non-pointer `omitempty` scalars of the built-in types that clients send as zeros (a
/// pointer field's zero is meaningful and kept; these names are plain values wherever they
/// occur, or pointers whose absence means the same as zero).
const OMITTED_WHEN_ZERO: &[&str] = &[
    "generation",
    "hostPort",
    "stdin",
    "stdinOnce",
    "tty",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "minReadySeconds",
    "paused",
    "nodePort",
    "readOnly",
    "publishNotReadyAddresses",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
    "unschedulable",
    "observedGeneration",
];

/// Decodes one message of type `name`; None means "unset" (drop the field).
fn message(buf: &[u8], name: &str) -> Result<Option<Value>, String> {
    let raw = fields(buf)?;
    let get = |t: u32| raw.iter().find(|(tag, _)| *tag == t).map(|(_, w)| w);
    let varint = |t: u32| match get(t) {
        Some(Wire::Varint(v)) => *v as i64,
        _ => 0,
    };
    match name {
        "apimachinery.pkg.apis.meta.v1.Time" => {
            return Ok(format_time(varint(1), varint(2), false));
        }
        "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return Ok(format_time(varint(1), varint(2), true));
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => return Ok(Some(json!(go_duration(varint(1))))),
        "apimachinery.pkg.api.resource.Quantity" => {
            return Ok(get(1).and_then(string_of).map(Value::String));
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            return Ok(match varint(1) {
                1 => get(3).and_then(string_of).filter(|s| !s.is_empty()).map(Value::String),
                _ => {
                    let v = varint(2) as i32;
                    (v != 0).then(|| json!(v))
                }
            });
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" | "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON" => {
            return Ok(match get(1) {
                Some(Wire::Len(b)) if !b.is_empty() => Some(serde_json::from_slice(b).map_err(|e| format!("invalid embedded JSON: {e}"))?),
                _ => None,
            });
        }
        _ => {}
    }
    let schema = SCHEMA.get(name).ok_or_else(|| format!("unknown protobuf message {name}"))?;
    let mut obj = Map::new();
    for (tag, w) in &raw {
        let Some(f) = schema.get(tag) else { continue };
        let value: Option<Value> = match (f.kind.as_str(), w) {
            ("string", Wire::Len(b)) => {
                let s = String::from_utf8_lossy(b).into_owned();
                if s.is_empty() && !f.repeated { None } else { Some(Value::String(s)) }
            }
            ("bytes", Wire::Len(b)) => Some(json!(base64::engine::general_purpose::STANDARD.encode(b))),
            // Go's protobuf encoder writes non-pointer scalars even when zero, and Go's JSON
            // leaves them out (omitempty): drop those zeros so objects read back as upstream's.
            ("bool", Wire::Varint(0)) | ("int32", Wire::Varint(0)) | ("int64", Wire::Varint(0))
                if !f.repeated && OMITTED_WHEN_ZERO.contains(&f.json.as_str()) =>
            {
                None
            }
            ("bool", Wire::Varint(v)) => Some(json!(*v != 0)),
            ("int32", Wire::Varint(v)) => Some(json!(*v as i64 as i32)),
            ("int64", Wire::Varint(v)) => Some(json!(*v as i64)),
            ("uint32" | "uint64", Wire::Varint(v)) => Some(json!(*v)),
            ("double", Wire::Fixed64(b)) => Some(json!(f64::from_le_bytes((*b).try_into().unwrap()))),
            ("float", Wire::Fixed32(b)) => Some(json!(f32::from_le_bytes((*b).try_into().unwrap()))),
            ("int32" | "int64" | "bool", Wire::Len(b)) => {
                // Packed repeated scalars.
                let mut r = Reader { buf: b, pos: 0 };
                let arr = obj.entry(f.json.clone()).or_insert_with(|| json!([]));
                while !r.done() {
                    let v = r.varint()?;
                    if let Some(a) = arr.as_array_mut() {
                        a.push(if f.kind == "bool" { json!(v != 0) } else { json!(v as i64) });
                    }
                }
                continue;
            }
            ("message", Wire::Len(b)) => match message(b, &f.msg)? {
                Some(v) => Some(v),
                None if f.repeated => Some(Value::Null),
                None => None,
            },
            (k, Wire::Len(b)) if k.starts_with("map:") => {
                let entry = fields(b)?;
                let key = entry.iter().find(|(t, _)| *t == 1).and_then(|(_, w)| string_of(w)).unwrap_or_default();
                let vk = k.rsplit(':').next().unwrap_or("string");
                let val = entry.iter().find(|(t, _)| *t == 2).map(|(_, w)| w);
                let v = match (vk, val) {
                    ("message", Some(Wire::Len(vb))) => message(vb, &f.msg)?.unwrap_or(Value::Null),
                    ("message", None) => message(&[], &f.msg)?.unwrap_or(Value::Null),
                    ("bytes", Some(Wire::Len(vb))) => {
                        json!(base64::engine::general_purpose::STANDARD.encode(vb))
                    }
                    (_, Some(w)) => string_of(w).map(Value::String).unwrap_or(Value::Null),
                    (_, None) => json!(""),
                };
                let m = obj.entry(f.json.clone()).or_insert_with(|| json!({}));
                if let Some(m) = m.as_object_mut() {
                    m.insert(key, v);
                }
                continue;
            }
            _ => None,
        };
        let Some(v) = value else { continue };
        // Embedded Go structs (`json:",inline"`) are fields of their own in protobuf; in JSON
        // their members sit in the parent.
        if !f.repeated
            && is_inline(&f.json, &f.msg)
            && let Value::Object(members) = v
        {
            obj.extend(members);
            continue;
        }
        if f.repeated {
            let arr = obj.entry(f.json.clone()).or_insert_with(|| json!([]));
            if let Some(a) = arr.as_array_mut() {
                a.push(v);
            }
        } else {
            obj.insert(f.json.clone(), v);
        }
    }
    Ok(Some(Value::Object(obj)))
}

/// The embedded (JSON-inline) fields of the built-in types: (field name, message type suffix).
fn is_inline(json: &str, msg: &str) -> bool {
    const INLINE: &[(&str, &str)] = &[
        ("volumeSource", ".core.v1.VolumeSource"),
        ("persistentVolumeSource", ".core.v1.PersistentVolumeSource"),
        ("handler", ".core.v1.ProbeHandler"),
        ("ephemeralContainerCommon", ".core.v1.EphemeralContainerCommon"),
        ("ingressRuleValue", ".IngressRuleValue"),
        ("rule", ".Rule"),
        ("ruleWithOperations", ".RuleWithOperations"),
        ("deviceConfiguration", ".DeviceConfiguration"),
    ];
    INLINE.iter().any(|(j, m)| *j == json && msg.ends_with(m))
}

/// The protobuf message name of a kind.
fn message_name(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let module = match group {
        "" => format!("api.core.{version}"),
        "apiextensions.k8s.io" => {
            format!("apiextensions_apiserver.pkg.apis.apiextensions.{version}")
        }
        g => format!("api.{}.{version}", g.split('.').next().unwrap_or(g)),
    };
    let exact = format!("{module}.{kind}");
    if SCHEMA.contains_key(&exact) {
        return Some(exact);
    }
    let lower = exact.to_lowercase();
    SCHEMA.keys().find(|k| k.to_lowercase() == lower).cloned()
}

/// Decodes a `k8s\0`-prefixed protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("protobuf body does not start with the k8s magic number")?;
    let unknown = fields(rest)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (tag, w) in &unknown {
        match (tag, w) {
            (1, Wire::Len(tm)) => {
                for (t, v) in fields(tm)? {
                    match t {
                        1 => api_version = string_of(&v).unwrap_or_default(),
                        2 => kind = string_of(&v).unwrap_or_default(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(r)) => raw = r,
            _ => {}
        }
    }
    let name = message_name(&api_version, &kind).ok_or_else(|| format!("no kind \"{kind}\" is registered for version \"{api_version}\""))?;
    let mut obj = message(raw, &name)?.unwrap_or(json!({}));
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn len_field(tag: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(((tag as u64) << 3) | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn varint_field(tag: u32, v: u64, out: &mut Vec<u8>) {
        varint((tag as u64) << 3, out);
        varint(v, out);
    }

    #[test]
    fn zero_scalars_read_back_as_go_json_would_write_them() {
        let mut port = Vec::new();
        varint_field(2, 0, &mut port); // hostPort: 0 (plain int32, omitempty)
        varint_field(3, 80, &mut port); // containerPort: 80
        let mut c = Vec::new();
        len_field(1, b"web", &mut c);
        len_field(6, &port, &mut c);
        varint_field(16, 0, &mut c); // stdin: false (plain bool, omitempty)
        let v = message(&c, "api.core.v1.Container").unwrap().unwrap();
        assert_eq!(v, json!({"name": "web", "ports": [{"containerPort": 80}]}));
    }

    #[test]
    fn embedded_structs_are_inlined_as_json_has_them() {
        // Volume{name: "data", volumeSource: {emptyDir: {}}}
        let mut empty_dir = Vec::new();
        len_field(2, &[], &mut empty_dir); // VolumeSource.emptyDir = EmptyDirVolumeSource{}
        let mut vol = Vec::new();
        len_field(1, b"data", &mut vol);
        len_field(2, &empty_dir, &mut vol);
        let v = message(&vol, "api.core.v1.Volume").unwrap().unwrap();
        assert_eq!(v, json!({"name": "data", "emptyDir": {}}));
        // IngressRule{host, ingressRuleValue: {http: {}}}
        let mut value = Vec::new();
        len_field(1, &[], &mut value);
        let mut rule = Vec::new();
        len_field(1, b"a.example", &mut rule);
        len_field(2, &value, &mut rule);
        let v = message(&rule, "api.networking.v1.IngressRule").unwrap().unwrap();
        assert_eq!(v, json!({"host": "a.example", "http": {}}));
    }

    #[test]
    fn decodes_a_configmap() {
        let mut md = Vec::new();
        len_field(1, b"c1", &mut md);
        len_field(3, b"", &mut md);
        let mut entry = Vec::new();
        len_field(1, b"k", &mut entry);
        len_field(2, b"v", &mut entry);
        let mut cm = Vec::new();
        len_field(1, &md, &mut cm);
        len_field(2, &entry, &mut cm);
        let mut tm = Vec::new();
        len_field(1, b"v1", &mut tm);
        len_field(2, b"ConfigMap", &mut tm);
        let mut unknown = Vec::new();
        len_field(1, &tm, &mut unknown);
        len_field(2, &cm, &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let v = decode(&body).unwrap();
        assert_eq!(v, json!({"metadata": {"name": "c1"}, "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"}));
    }

    #[test]
    fn schema_knows_core_kinds() {
        for (av, k) in
            [("apps/v1", "Deployment"), ("v1", "Pod"), ("batch/v1", "CronJob"), ("policy/v1", "Eviction"), ("autoscaling/v2", "HorizontalPodAutoscaler")]
        {
            assert!(message_name(av, k).is_some(), "{av} {k}");
        }
    }
}
