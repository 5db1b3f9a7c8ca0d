//! Server-side printing helpers: the Table column type and the formatting upstream's printers
//! share (ages, selectors, container lists). Each kind's columns and cells are in its module
//! under `kinds/`. The server always renders every column; kubectl hides those with
//! priority > 0 unless `-o wide`.

use serde_json::{Value, json};

use crate::meta::{get_str, parse_time};

pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub priority: i32,
    pub description: &'static str,
}

pub(crate) const fn col(name: &'static str, priority: i32) -> Column {
    Column { name, ty: "string", format: "", priority, description: "" }
}
pub(crate) const fn int_col(name: &'static str, priority: i32) -> Column {
    Column { name, ty: "integer", format: "", priority, description: "" }
}
pub const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};
pub const AGE: Column = Column {
    name: "Age",
    ty: "string",
    format: "",
    priority: 0,
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
};
pub const CREATED_AT: Column = Column { name: "Created At", ty: "date", format: "", priority: 0, description: "" };

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

pub fn since(ts: Option<&str>) -> String {
    match ts.and_then(parse_time) {
        Some(t) => human_duration(chrono::Utc::now() - t),
        None => "<unknown>".into(),
    }
}

pub(crate) fn age(obj: &Value) -> Value {
    json!(since(get_str(obj, &["metadata", "creationTimestamp"])))
}

pub(crate) fn s(obj: &Value, ptr: &str) -> String {
    match obj.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

pub(crate) fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

pub(crate) fn arr<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Renders a metav1.LabelSelector as the selector string (`app=x,tier in (a,b)`).
pub fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let k = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
        let mut vals: Vec<&str> = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        vals.sort();
        let r = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{k} in ({})", vals.join(",")),
            "NotIn" => format!("{k} notin ({})", vals.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            _ => continue,
        };
        reqs.push((k, r));
    }
    if reqs.is_empty() {
        return "<none>".into();
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(",")
}

/// A map selector (Service, RC) as `k=v,...` sorted by key.
pub(crate) fn map_selector_string(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            let mut parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            parts.sort();
            parts.join(",")
        }
        _ => "<none>".into(),
    }
}

pub(crate) fn containers_images(obj: &Value, ptr: &str) -> (String, String) {
    let cs = arr(obj, ptr);
    let names: Vec<String> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// The columns of a resource (what its kind prints).
pub fn columns(info: &crate::ResourceInfo) -> Vec<Column> {
    info.behavior.kind.columns()
}

/// The cells of one row of a resource.
pub fn cells(info: &crate::ResourceInfo, obj: &Value) -> Vec<Value> {
    info.behavior.kind.cells(obj)
}

pub fn column_definitions(cols: &[Column]) -> Value {
    Value::Array(cols.iter().map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority})).collect())
}

pub(crate) fn or_unset(v: String) -> String {
    if v.is_empty() { "<unset>".into() } else { v }
}

pub(crate) fn controller_resource(api_version: &str, kind: &str) -> String {
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let plural = format!("{}s", kind.to_lowercase());
    if group.is_empty() { plural } else { format!("{plural}.{group}") }
}

pub(crate) fn access_modes(modes: &[Value]) -> String {
    let order = [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")];
    let have: Vec<&str> = modes.iter().filter_map(Value::as_str).collect();
    order.iter().filter(|(m, _)| have.contains(m)).map(|(_, a)| *a).collect::<Vec<_>>().join(",")
}

pub(crate) fn format_list_limited(items: &[String]) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    let mut out = shown.join(",");
    if items.len() > 3 {
        out.push_str(&format!(" + {} more...", items.len() - 3));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(125)), "2m5s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(d(10 * 3600)), "10h");
        assert_eq!(human_duration(d(3 * 86400 + 3600)), "3d1h");
    }
}
