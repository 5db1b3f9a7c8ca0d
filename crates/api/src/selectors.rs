//! Label and field selectors in their query-string form (`?labelSelector=`, `?fieldSelector=`).

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<LabelRequirement>,
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| format!("found '{rest}', expected: '('"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn check_key(key: &str) -> Result<(), String> {
    crate::validation::validate_qualified_name(key).map_err(|msgs| format!("invalid label key \"{key}\": {}", msgs.join("; ")))
}

fn check_value(v: &str) -> Result<(), String> {
    crate::validation::validate_label_value(v).map_err(|msgs| format!("invalid label value: \"{v}\": {}", msgs.join("; ")))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(LabelSelector::default());
        }
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err("found '', expected: identifier".into());
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                check_key(key)?;
                LabelRequirement { key: key.into(), op: LabelOp::NotExists }
            } else if let Some((k, v)) = part.split_once("!=") {
                check_key(k.trim())?;
                check_value(v.trim())?;
                LabelRequirement { key: k.trim().into(), op: LabelOp::NotEq(v.trim().into()) }
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                check_key(k.trim())?;
                check_value(v.trim())?;
                LabelRequirement { key: k.trim().into(), op: LabelOp::Eq(v.trim().into()) }
            } else if let Some((k, v)) = part.split_once(" notin ") {
                check_key(k.trim())?;
                LabelRequirement { key: k.trim().into(), op: LabelOp::NotIn(parse_set(v)?) }
            } else if let Some((k, v)) = part.split_once(" in ") {
                check_key(k.trim())?;
                LabelRequirement { key: k.trim().into(), op: LabelOp::In(parse_set(v)?) }
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| format!("invalid integer value: {v}"))?;
                LabelRequirement { key: k.trim().into(), op: LabelOp::Gt(n) }
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| format!("invalid integer value: {v}"))?;
                LabelRequirement { key: k.trim().into(), op: LabelOp::Lt(n) }
            } else {
                check_key(part)?;
                LabelRequirement { key: part.into(), op: LabelOp::Exists }
            };
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                LabelOp::Eq(x) => v == Some(x),
                LabelOp::NotEq(x) => v != Some(x),
                LabelOp::In(xs) => v.is_some_and(|v| xs.contains(v)),
                LabelOp::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                LabelOp::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            requirements.push(FieldRequirement { field: field.trim().into(), value: value.trim().into(), negate });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Checks every field is one the resource supports; returns the upstream error otherwise.
    pub fn check_supported(&self, supported: &dyn Fn(&str) -> bool, kind_version: &str) -> Result<(), String> {
        for r in &self.requirements {
            if !supported(&r.field) {
                return Err(format!("field label not supported: {}", r.field));
            }
        }
        let _ = kind_version;
        Ok(())
    }

    pub fn matches(&self, fields: &[(String, String)]) -> bool {
        self.requirements.iter().all(|r| {
            let v = fields.iter().find(|(f, _)| *f == r.field).map(|(_, v)| v.as_str()).unwrap_or("");
            (v == r.value) != r.negate
        })
    }

    /// The value required for `field` by an equality requirement, if any (used for indexing).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| r.field == field && !r.negate).map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_forms() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web,db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front)", true),
            ("app=web,tier=back", false),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
        assert!(LabelSelector::parse("app=we b").is_err());
    }

    #[test]
    fn field_selector_forms() {
        let f = vec![("metadata.name".to_string(), "a".to_string()), ("status.phase".to_string(), "Running".to_string())];
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&f));
        assert!(FieldSelector::parse("status.phase!=Pending,metadata.name==a").unwrap().matches(&f));
        assert!(!FieldSelector::parse("spec.nodeName=n1").unwrap().matches(&f));
        assert!(FieldSelector::parse("bogus").is_err());
    }
}
