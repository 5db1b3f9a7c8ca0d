//! Field errors (upstream's `field.ErrorList`) and their rendering into a 422 message.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Forbidden,
    Duplicate,
    TooLong,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    /// The offending value, rendered the way upstream's errors render Go values.
    pub value: Option<String>,
    pub detail: String,
}

/// Renders a JSON value the way upstream's error messages show Go values.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        // Go's %#v of a []string.
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let inner: Vec<String> = a.iter().map(|v| format!("{:?}", v.as_str().unwrap_or(""))).collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
        Value::Object(m) if m.values().all(|v| v.is_string()) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or(""))).collect();
            format!("map[string]string{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Required, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Invalid, field: field.into(), value: Some(render_value(value)), detail: detail.into() }
    }
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(render_value(value)),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Forbidden, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError { kind: FieldErrorKind::Duplicate, field: field.into(), value: Some(render_value(value)), detail: String::new() }
    }

    /// The reason in a Status cause (`FieldValueInvalid`, ...).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }

    /// The message without the field path (the `message` of a Status cause).
    pub fn body(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
        };
        let mut s = head.to_string();
        if let Some(v) = &self.value {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field: body`, as in the Status message.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// `Kind.group "name" is invalid: [a, b]` (upstream's NewInvalid message).
pub fn invalid_message(qualified_kind: &str, name: &str, errs: &[FieldError]) -> String {
    let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
    let list = if msgs.len() == 1 { msgs[0].clone() } else { format!("[{}]", msgs.join(", ")) };
    format!("{qualified_kind} \"{name}\" is invalid: {list}")
}
