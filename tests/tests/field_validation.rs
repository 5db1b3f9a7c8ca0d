//! Every write path type-checks the object it would store and treats unknown fields as the
//! request's `fieldValidation` says: Strict rejects (400), Warn (the default) stores the object
//! without them and answers a `Warning` header, Ignore drops them silently.

use r8s_tests::{TestServer, raw, raw_with_headers};
use serde_json::{Value, json};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.21.1"}]}}}})
}

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn warnings(h: &http::HeaderMap) -> Vec<String> {
    h.get_all(http::header::WARNING).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

/// One write path: how to send a body that carries `field` = `value` under `spec` (or
/// `status`), and which content type it uses.
struct Path {
    name: &'static str,
    method: &'static str,
    suffix: &'static str,
    content_type: &'static str,
    make: fn(&str, &str, Value, &Value) -> Value,
}

fn with(mut obj: Value, top: &str, field: &str, value: Value) -> Value {
    obj[top][field] = value;
    obj
}

const PATHS: &[Path] = &[
    Path { name: "create", method: "POST", suffix: "", content_type: "application/json", make: |n, f, v, _| with(deployment(n), "spec", f, v) },
    Path { name: "update", method: "PUT", suffix: "/NAME", content_type: "application/json", make: |_, f, v, cur| with(cur.clone(), "spec", f, v) },
    Path { name: "merge patch", method: "PATCH", suffix: "/NAME", content_type: "application/merge-patch+json", make: |_, f, v, _| json!({"spec": {f: v}}) },
    Path {
        name: "strategic merge patch",
        method: "PATCH",
        suffix: "/NAME",
        content_type: "application/strategic-merge-patch+json",
        make: |_, f, v, _| json!({"spec": {f: v}}),
    },
    Path {
        name: "json patch",
        method: "PATCH",
        suffix: "/NAME",
        content_type: "application/json-patch+json",
        make: |_, f, v, _| json!([{"op": "add", "path": format!("/spec/{f}"), "value": v}]),
    },
    Path {
        name: "apply",
        method: "PATCH",
        suffix: "/NAME",
        content_type: "application/apply-patch+yaml",
        make: |n, f, v, _| with(deployment(n), "spec", f, v),
    },
    Path { name: "status", method: "PUT", suffix: "/NAME/status", content_type: "application/json", make: |_, f, v, cur| with(cur.clone(), "status", f, v) },
];

async fn send(c: &kube::Client, p: &Path, name: &str, query: &str, payload: &Value) -> (u16, Value, http::HeaderMap) {
    let mut url = format!("{DEPLOYS}{}", p.suffix.replace("NAME", name));
    let mut q = query.to_string();
    if p.content_type.contains("apply") {
        q = format!("{q}{}fieldManager=test", if q.is_empty() { "" } else { "&" });
    }
    if !q.is_empty() {
        url = format!("{url}?{q}");
    }
    raw_with_headers(c, p.method, &url, p.content_type, body(payload)).await
}

async fn current(c: &kube::Client, name: &str) -> Value {
    let (code, v) = raw(c, "GET", &format!("{DEPLOYS}/{name}"), "application/json", vec![]).await;
    assert_eq!(code, 200, "{v}");
    v
}

#[tokio::test]
async fn wrongly_typed_fields_are_rejected_on_every_write_path() {
    let s = TestServer::start();
    let c = s.client().await;
    for (i, p) in PATHS.iter().enumerate() {
        let name = format!("typed{i}");
        if p.name != "create" {
            let (code, v) = raw(&c, "POST", DEPLOYS, "application/json", body(&deployment(&name))).await;
            assert_eq!(code, 201, "{v}");
        }
        let before = if p.name == "create" { Value::Null } else { current(&c, &name).await };
        let payload = (p.make)(&name, "replicas", json!("three"), &before);
        let (code, v, _) = send(&c, p, &name, "", &payload).await;
        assert_eq!(v["kind"], "Status", "{}: {v}", p.name);
        let msg = v["message"].as_str().unwrap_or("").to_string();
        let go = if p.name == "status" {
            "json: cannot unmarshal string into Go struct field DeploymentStatus.status.replicas of type int32"
        } else {
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        };
        match p.name {
            // Upstream's decoder answers 400 for a body it cannot decode...
            "create" | "update" | "status" => {
                assert_eq!(code, 400, "{}: {v}", p.name);
                assert_eq!(v["reason"], "BadRequest");
                assert_eq!(msg, format!("Deployment in version \"v1\" cannot be handled as a Deployment: {go}"), "{}", p.name);
            }
            // ...and its typed conversion of an apply configuration the same.
            "apply" => {
                assert_eq!(code, 400, "{}: {v}", p.name);
                assert!(msg.starts_with("failed to create typed patch object (apps/v1, Kind=Deployment default/typed5): "), "{msg}");
                assert!(msg.ends_with(go), "{msg}");
            }
            // A strategic merge patch's result goes through the unstructured converter: the
            // patch (as Go prints a map) is the invalid value, with the converter's words.
            "strategic merge patch" => {
                assert_eq!(code, 422, "{}: {v}", p.name);
                assert_eq!(msg, " \"\" is invalid: patch: Invalid value: \"map[spec:map[replicas:three]]\": unrecognized type: int32");
                assert_eq!(v["details"]["causes"][0]["field"], "patch");
            }
            // ...and 422 for a patch whose result does not decode, the patched object as the
            // invalid value of "patch".
            _ => {
                assert_eq!(code, 422, "{}: {v}", p.name);
                assert_eq!(v["reason"], "Invalid");
                assert!(msg.starts_with(" \"\" is invalid: patch: Invalid value: \"{"), "{}: {msg}", p.name);
                assert!(msg.ends_with(&format!("\": {go}")), "{}: {msg}", p.name);
                assert_eq!(v["details"]["causes"][0]["field"], "patch");
            }
        }
        // Nothing changed.
        if p.name == "create" {
            let (code, _) = raw(&c, "GET", &format!("{DEPLOYS}/{name}"), "application/json", vec![]).await;
            assert_eq!(code, 404);
        } else {
            assert_eq!(current(&c, &name).await["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"], "{}", p.name);
        }
    }
}

#[tokio::test]
async fn unknown_fields_follow_field_validation_on_every_write_path() {
    let s = TestServer::start();
    let c = s.client().await;
    for (i, p) in PATHS.iter().enumerate() {
        let name = format!("unknown{i}");
        if p.name != "create" {
            let (code, v) = raw(&c, "POST", DEPLOYS, "application/json", body(&deployment(&name))).await;
            assert_eq!(code, 201, "{v}");
        }
        let top = if p.name == "status" { "status" } else { "spec" };
        let before = if p.name == "create" { Value::Null } else { current(&c, &name).await };
        let payload = (p.make)(&name, "bogusField", json!(1), &before);

        // Strict: 400, nothing stored.
        let (code, v, _) = send(&c, p, &name, "fieldValidation=Strict", &payload).await;
        assert_eq!(code, 400, "{}: {v}", p.name);
        assert_eq!(v["reason"], "BadRequest");
        let msg = v["message"].as_str().unwrap();
        match p.name {
            "create" | "update" | "status" => {
                assert_eq!(
                    msg,
                    format!("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"{top}.bogusField\"")
                )
            }
            "apply" => assert_eq!(
                msg,
                format!("failed to create typed patch object (apps/v1, Kind=Deployment default/{name}): .spec.bogusField: field not declared in schema")
            ),
            _ => assert_eq!(msg, "strict decoding error: unknown field \"spec.bogusField\"", "{}", p.name),
        }
        if p.name == "create" {
            let (code, _) = raw(&c, "GET", &format!("{DEPLOYS}/{name}"), "application/json", vec![]).await;
            assert_eq!(code, 404);
        }

        // Warn (the default): stored without the field, with a Warning header.
        let (code, v, h) = send(&c, p, &name, "", &payload).await;
        assert!(code == 200 || code == 201, "{}: {code} {v}", p.name);
        assert_eq!(warnings(&h), vec![format!("299 - \"unknown field \\\"{top}.bogusField\\\"\"")], "{}", p.name);
        let stored = current(&c, &name).await;
        assert!(stored[top].get("bogusField").is_none(), "{}: {stored}", p.name);

        // Ignore: dropped silently.
        let (code, v, h) = send(&c, p, &name, "fieldValidation=Ignore", &payload).await;
        let expect_ok = if p.name == "create" { 409 } else { 200 };
        assert_eq!(code, expect_ok, "{}: {v}", p.name);
        assert!(warnings(&h).is_empty(), "{}", p.name);
    }
}

#[test]
fn kubectl_validate_strict_and_default() {
    let s = TestServer::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\nbogus: 1\n";
    let out = s.kubectl_stdin(&["create", "-f", "-", "--validate=strict"], cm);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"bogus\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.kubectl_stdin(&["create", "-f", "-", "--validate=warn"], cm);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: unknown field \"bogus\""), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value = serde_json::from_str(&s.k(&["get", "cm", "c", "-o", "json"])).unwrap();
    assert!(stored.get("bogus").is_none());
    assert_eq!(stored["data"], json!({"a": "b"}));
    // The seed's bad merge patch no longer stores a string replica count.
    s.k_stdin(&["apply", "-f", "-"], &serde_yaml::to_string(&deployment("x")).unwrap());
    let err = s.k_err(&["patch", "deploy", "x", "--type=merge", "-p", r#"{"spec":{"replicas":"three"}}"#]);
    assert!(err.contains("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"), "{err}");
    assert_eq!(s.k(&["get", "deploy", "x", "-o", "jsonpath={.spec.replicas}"]), "1");
}

#[tokio::test]
async fn custom_resources_follow_field_validation() {
    let s = TestServer::start();
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size: {type: integer}\n";
    s.k_stdin(&["apply", "-f", "-"], crd);
    r8s_tests::wait_for("widgets served", std::time::Duration::from_secs(30), || s.kubectl(&["get", "widgets"]).status.success().then_some(()));
    let c = s.client().await;
    let url = "/apis/example.com/v1/namespaces/default/widgets";
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, "colour": "red"}});
    let (code, v, _) = raw_with_headers(&c, "POST", &format!("{url}?fieldValidation=Strict"), "application/json", body(&w)).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["message"], "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.colour\"");
    let (code, v, h) = raw_with_headers(&c, "POST", url, "application/json", body(&w)).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(warnings(&h), vec!["299 - \"unknown field \\\"spec.colour\\\"\"".to_string()]);
    assert_eq!(v["spec"], json!({"size": 1}));
}

#[tokio::test]
async fn duplicate_fields_follow_field_validation() {
    let s = TestServer::start();
    let c = s.client().await;
    let url = "/api/v1/namespaces/default/configmaps";
    let body = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup", "name": "dup"}, "data": {"a": "1", "a": "2"}}"#.to_vec();
    let (code, v, _) = raw_with_headers(&c, "POST", &format!("{url}?fieldValidation=Strict"), "application/json", body.clone()).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: duplicate field \"metadata.name\", duplicate field \"data.a\""
    );
    let (code, v, h) = raw_with_headers(&c, "POST", url, "application/json", body).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(warnings(&h), vec!["299 - \"duplicate field \\\"metadata.name\\\"\"", "299 - \"duplicate field \\\"data.a\\\"\""]);
    // The last value wins, as with Go's decoder.
    assert_eq!(v["data"], json!({"a": "2"}));
    // Patches too.
    let (code, v, _) = raw_with_headers(
        &c,
        "PATCH",
        &format!("{url}/dup?fieldValidation=Strict"),
        "application/merge-patch+json",
        br#"{"data": {"b": "1", "b": "2"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["message"], "strict decoding error: duplicate field \"data.b\"");
}
