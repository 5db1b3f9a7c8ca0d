//! Bad input gets upstream's Status (code, reason, message) and stores nothing.

use r8s_tests::{TestServer, raw};
use serde_json::json;

async fn count_configmaps(client: &kube::Client) -> usize {
    let (code, list) = raw(client, "GET", "/api/v1/namespaces/default/configmaps", "application/json", vec![]).await;
    assert_eq!(code, 200);
    list["items"].as_array().unwrap().len()
}

fn status(code: u16, reason: &str, v: &serde_json::Value) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
}

#[tokio::test]
async fn bad_requests_answer_with_upstream_status() {
    let s = TestServer::start();
    let c = s.client().await;
    let before = count_configmaps(&c).await;
    let post = |body: Vec<u8>, ct: &'static str| {
        let c = c.clone();
        async move { raw(&c, "POST", "/api/v1/namespaces/default/configmaps", ct, body).await }
    };

    // Malformed JSON and YAML.
    let (code, v) = post(b"{\"apiVersion\": \"v1\", \"kind\": ".to_vec(), "application/json").await;
    assert_eq!(code, 400);
    status(400, "BadRequest", &v);
    assert!(v["message"].as_str().unwrap().contains("json parse error"), "{v}");
    let (code, v) = post(b"apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed".to_vec(), "application/yaml").await;
    assert_eq!(code, 400);
    status(400, "BadRequest", &v);

    // Wrong apiVersion and wrong kind for the endpoint.
    let (code, v) =
        post(serde_json::to_vec(&json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})).unwrap(), "application/json").await;
    assert_eq!(code, 400);
    status(400, "BadRequest", &v);
    assert_eq!(v["message"], "the API version in the data (apps/v1) does not match the expected API version (v1)");
    let (code, v) = post(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})).unwrap(), "application/json").await;
    assert_eq!(code, 400);
    assert_eq!(
        v["message"],
        "the object provided is unrecognized (must be of type ConfigMap): converting (v1.Secret) to (core.ConfigMap): unknown conversion ({\"apiVersion\":\"v1\",\"kind\":\"Sec ...)"
    );

    // Wrong field types.
    let (code, v) =
        post(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": "nope"})).unwrap(), "application/json")
            .await;
    assert_eq!(code, 400);
    assert!(v["message"].as_str().unwrap().starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap:"), "{v}");

    // Invalid name: 422 with a field cause.
    let (code, v) =
        post(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})).unwrap(), "application/json").await;
    assert_eq!(code, 422);
    status(422, "Invalid", &v);
    assert_eq!(
        v["message"],
        "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    assert_eq!(v["details"]["causes"][0]["reason"], "FieldValueInvalid");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(v["details"]["kind"], "ConfigMap");

    // A 10 MiB body: 413.
    let big =
        format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}", "x".repeat(10 * 1024 * 1024));
    let (code, v) = post(big.into_bytes(), "application/json").await;
    assert_eq!(code, 413);
    status(413, "RequestEntityTooLarge", &v);
    assert_eq!(v["message"], "Request entity too large: limit is 3145728");

    // Unknown kinds / resources: 404 with the upstream message.
    let (code, v) = raw(&c, "GET", "/api/v1/namespaces/default/widgets", "application/json", vec![]).await;
    assert_eq!(code, 404);
    status(404, "NotFound", &v);
    assert_eq!(v["message"], "the server could not find the requested resource");
    let (code, _) = raw(&c, "GET", "/apis/nope.example.com/v1/things", "application/json", vec![]).await;
    assert_eq!(code, 404);

    // Missing object: 404 naming the group-resource.
    let (code, v) = raw(&c, "GET", "/apis/apps/v1/namespaces/default/deployments/ghost", "application/json", vec![]).await;
    assert_eq!(code, 404);
    assert_eq!(v["message"], "deployments.apps \"ghost\" not found");
    assert_eq!(v["details"], json!({"name": "ghost", "group": "apps", "kind": "deployments"}));

    // Creating into a missing namespace.
    let (code, v) = raw(
        &c,
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        "application/json",
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})).unwrap(),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(v["message"], "namespaces \"nowhere\" not found");

    assert_eq!(count_configmaps(&c).await, before, "bad requests must store nothing");
}

#[tokio::test]
async fn conflicts_and_stale_updates() {
    let s = TestServer::start();
    let c = s.client().await;
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})).unwrap();
    let (code, created) = raw(&c, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body.clone()).await;
    assert_eq!(code, 201);
    // Same name again: 409 AlreadyExists.
    let (code, v) = raw(&c, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body).await;
    assert_eq!(code, 409);
    status(409, "AlreadyExists", &v);
    assert_eq!(v["message"], "configmaps \"cm\" already exists");
    // Update with the current resourceVersion works and bumps it.
    let mut upd = created.clone();
    upd["data"]["a"] = json!("2");
    let (code, updated) = raw(&c, "PUT", "/api/v1/namespaces/default/configmaps/cm", "application/json", serde_json::to_vec(&upd).unwrap()).await;
    assert_eq!(code, 200);
    assert_ne!(updated["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
    // A stale resourceVersion: 409 Conflict, nothing written.
    upd["data"]["a"] = json!("3");
    let (code, v) = raw(&c, "PUT", "/api/v1/namespaces/default/configmaps/cm", "application/json", serde_json::to_vec(&upd).unwrap()).await;
    assert_eq!(code, 409);
    status(409, "Conflict", &v);
    assert_eq!(
        v["message"],
        "Operation cannot be fulfilled on configmaps \"cm\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let (_, now) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps/cm", "application/json", vec![]).await;
    assert_eq!(now["data"]["a"], "2");
    // Anonymous requests: 401, except health and version.
    let anon = s.anonymous_client().await;
    let (code, v) = raw(&anon, "GET", "/api/v1/namespaces", "application/json", vec![]).await;
    assert_eq!(code, 401);
    status(401, "Unauthorized", &v);
    for p in ["/healthz", "/livez", "/readyz", "/version"] {
        let (code, _) = raw(&anon, "GET", p, "application/json", vec![]).await;
        assert_eq!(code, 200, "{p}");
    }
    let (_, version) = raw(&anon, "GET", "/version", "application/json", vec![]).await;
    assert_eq!(version["major"], "1");
    assert_eq!(version["minor"], "32");
}
