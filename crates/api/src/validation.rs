//! Name and label syntax, with upstream's messages (they are part of what users see).

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn max_len(s: &str, n: usize) -> Option<String> {
    (s.len() > n).then(|| format!("must be no more than {n} characters"))
}

fn label_shape_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_alnum_lower(c) || c == '-') && s.starts_with(is_alnum_lower) && s.ends_with(is_alnum_lower)
}

pub fn validate_dns1123_label(s: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if let Some(m) = max_len(s, 63) {
        errs.push(m);
    }
    if !label_shape_ok(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

pub fn validate_dns1123_subdomain(s: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if let Some(m) = max_len(s, 253) {
        errs.push(m);
    }
    if s.is_empty() || !s.split('.').all(label_shape_ok) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

pub fn validate_dns1035_label(s: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if let Some(m) = max_len(s, 63) {
        errs.push(m);
    }
    if !label_shape_ok(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn qualified_part_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.') && s.starts_with(is_alnum) && s.ends_with(is_alnum)
}

/// A label or annotation key: `[prefix/]name`.
pub fn validate_qualified_name(s: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if let Err(e) = validate_dns1123_subdomain(p) {
            errs.extend(e.into_iter().map(|m| format!("prefix part {m}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !qualified_part_ok(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    if name.contains('/') {
        errs = vec![format!(
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )];
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

pub fn validate_label_value(s: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if let Some(m) = max_len(s, 63) {
        errs.push(m);
    }
    if !s.is_empty() && !qualified_part_ok(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Which rule a resource's object names follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    /// Path segment only (RBAC roles, CRD-defined kinds keep upstream's looser rule).
    PathSegment,
}

pub fn validate_name(rule: NameRule, name: &str) -> Result<(), Vec<String>> {
    match rule {
        NameRule::Subdomain => validate_dns1123_subdomain(name),
        NameRule::Label => validate_dns1123_label(name),
        NameRule::Dns1035 => validate_dns1035_label(name),
        NameRule::PathSegment => validate_path_segment(name),
    }
}

pub fn validate_path_segment(name: &str) -> Result<(), Vec<String>> {
    if name == "." || name == ".." {
        return Err(vec![format!("may not be '{name}'")]);
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            return Err(vec![format!("may not contain '{bad}'")]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_dns1123_subdomain("my-nginx.v1").is_ok());
        assert!(validate_dns1123_subdomain("Bad_Name").is_err());
        assert!(validate_dns1123_label("a.b").is_err());
        assert!(validate_dns1035_label("1abc").is_err());
        assert!(validate_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(validate_qualified_name("app666").is_ok());
        assert!(validate_qualified_name("-bad").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("001").is_ok());
        assert!(validate_label_value("a b").is_err());
    }
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it: `1 t T TRUE true True` and
/// `0 f F FALSE false False`; anything else is an error in Go's wording.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("strconv.ParseBool: parsing {other:?}: invalid syntax")),
    }
}

#[cfg(test)]
mod parse_bool_tests {
    use super::parse_bool;

    #[test]
    fn go_parse_bool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", "2", "on"] {
            assert_eq!(parse_bool(bad), Err(format!("strconv.ParseBool: parsing {bad:?}: invalid syntax")));
        }
    }
}
