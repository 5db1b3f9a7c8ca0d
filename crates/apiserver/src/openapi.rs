//! OpenAPI v3 documents per group-version, generated from the catalog and the k8s-openapi types
//! (their schemars schemas), decorated with the x-kubernetes-* extensions clients read: the
//! group-version-kind of each kind and operation, and list merge metadata from `mergekeys`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use r8s_api::{ResourceInfo, ResourceRef, Subresource};
use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::mergekeys::{ListKind, list_kind, retains_keys};
use crate::status::{ApiError, ApiResult};

const REF: &str = "#/components/schemas/";

/// A rendered document: (catalog generation, hash, bytes).
type CachedDocument = (u64, String, std::sync::Arc<Vec<u8>>);

#[derive(Default)]
pub struct OpenApi {
    /// group-version path -> its document
    cache: Mutex<HashMap<String, CachedDocument>>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn hash_hex(bytes: &[u8]) -> String {
    // FNV-1a, twice with different seeds, is plenty for a cache-busting tag.
    let mut a: u64 = 0xcbf29ce484222325;
    let mut b: u64 = 0x84222325cbf29ce4;
    for &x in bytes {
        a = (a ^ x as u64).wrapping_mul(0x100000001b3);
        b = (b ^ x as u64).wrapping_mul(0x1000193);
    }
    format!("{a:016X}{b:016X}")
}

impl OpenApi {
    /// OpenAPI v2: every definition of the v3 documents, as JSON or (what kubectl asks for)
    /// gnostic protobuf.
    pub fn v2(&self, cat: &Catalog, headers: &HeaderMap) -> ApiResult<Response> {
        let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let protobuf = accept.contains("com.github.proto-openapi.spec.v2");
        let key = if protobuf { "v2.pb" } else { "v2.json" }.to_string();
        let generation = cat.generation();
        let cached = self.cache.lock().unwrap().get(&key).filter(|(g, _, _)| *g == generation).map(|(_, h, d)| (h.clone(), d.clone()));
        let (hash, bytes) = match cached {
            Some(c) => c,
            None => {
                let mut gvs: Vec<(String, String)> = cat.all().iter().map(|r| (r.group.clone(), r.version.clone())).collect();
                gvs.sort();
                gvs.dedup();
                let mut defs = std::collections::BTreeMap::new();
                for (g, v) in gvs {
                    let Some((_, bytes)) = self.document(cat, &g, &v) else { continue };
                    let doc: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
                        defs.entry(name.clone()).or_insert_with(|| schema.clone());
                    }
                }
                let doc = crate::openapi_v2::json_document(&defs, crate::GIT_VERSION);
                let bytes = std::sync::Arc::new(if protobuf { crate::openapi_v2::protobuf_document(&doc) } else { serde_json::to_vec(&doc).unwrap() });
                let hash = hash_hex(&bytes);
                self.cache.lock().unwrap().insert(key, (generation, hash.clone(), bytes.clone()));
                (hash, bytes)
            }
        };
        let ctype = if protobuf { crate::openapi_v2::PROTOBUF } else { "application/json" };
        Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, ctype.to_string()), (http::header::ETAG, format!("\"{hash}\""))], bytes.as_ref().clone())
            .into_response())
    }

    fn document(&self, cat: &Catalog, group: &str, version: &str) -> Option<(String, std::sync::Arc<Vec<u8>>)> {
        let key = gv_path(group, version);
        let generation = cat.generation();
        if let Some((g, h, d)) = self.cache.lock().unwrap().get(&key)
            && *g == generation
        {
            return Some((h.clone(), d.clone()));
        }
        let resources: Vec<ResourceRef> = cat.all().into_iter().filter(|r| r.group == group && r.version == version).collect();
        if resources.is_empty() {
            return None;
        }
        let doc = build_document(cat, version, &resources);
        let bytes = std::sync::Arc::new(serde_json::to_vec(&doc).unwrap());
        let hash = hash_hex(&bytes);
        self.cache.lock().unwrap().insert(key, (generation, hash.clone(), bytes.clone()));
        Some((hash, bytes))
    }

    pub fn v3(&self, cat: &Catalog, path: &str, _headers: &HeaderMap) -> ApiResult<Response> {
        let rest = path.trim_start_matches("/openapi/v3").trim_matches('/');
        if rest.is_empty() {
            let mut paths = Map::new();
            let mut gvs: Vec<(String, String)> = cat.all().iter().map(|r| (r.group.clone(), r.version.clone())).collect();
            gvs.sort();
            gvs.dedup();
            for (g, v) in gvs {
                if let Some((hash, _)) = self.document(cat, &g, &v) {
                    let p = gv_path(&g, &v);
                    paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
                }
            }
            let body = serde_json::to_vec(&json!({"paths": paths})).unwrap();
            return Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let (g, v) = match segs.as_slice() {
            ["api", v] => ("", *v),
            ["apis", g, v] => (*g, *v),
            _ => return Err(ApiError::no_route()),
        };
        match self.document(cat, g, v) {
            Some((hash, bytes)) => Ok((
                StatusCode::OK,
                [
                    (http::header::CONTENT_TYPE, "application/json".to_string()),
                    (http::header::ETAG, format!("\"{hash}\"")),
                    (http::header::CACHE_CONTROL, "public, immutable".to_string()),
                ],
                (*bytes).clone(),
            )
                .into_response()),
            None => Err(ApiError::no_route()),
        }
    }
}

fn param(name: &str, location: &str, desc: &str, ty: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "description": desc, "schema": {"type": ty, "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn query_params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| {
            let ty = match *n {
                "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
                "watch" | "allowWatchBookmarks" | "force" | "sendInitialEvents" | "orphanDependents" => "boolean",
                _ => "string",
            };
            let desc = match *n {
                "fieldValidation" => {
                    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"
                }
                "fieldManager" => "fieldManager is a name associated with the actor or entity that is making these changes.",
                "dryRun" => "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
                "force" => "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
                _ => "",
            };
            param(n, "query", desc, ty)
        })
        .collect()
}

fn ref_schema(name: &str) -> Value {
    json!({"$ref": format!("{REF}{name}")})
}

fn content(schema: &Value) -> Value {
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

fn op(info: &ResourceInfo, action: &str, op_id: String, desc: String, params: Vec<Value>, body: Option<Value>, response: &Value) -> Value {
    let tag = if info.group.is_empty() { format!("core_{}", info.version) } else { format!("{}_{}", info.group.split('.').next().unwrap_or(""), info.version) };
    let mut responses = json!({"200": {"description": "OK", "content": content(response)}, "401": {"description": "Unauthorized"}});
    if matches!(action, "post" | "put" | "patch") {
        responses["201"] = json!({"description": "Created", "content": content(response)});
    }
    if action == "post" || action == "delete" {
        responses["202"] = json!({"description": "Accepted", "content": content(response)});
    }
    let mut o = json!({
        "tags": [tag],
        "description": desc,
        "operationId": op_id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "kind": info.kind, "version": info.version},
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn camel(s: &str) -> String {
    s.split(['.', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn paths_for(info: &ResourceInfo, kind_schema: &Value, list_schema: &Value) -> Vec<(String, Value)> {
    let base = if info.group.is_empty() { format!("/api/{}", info.version) } else { format!("/apis/{}/{}", info.group, info.version) };
    let gvc = format!("{}{}", camel(if info.group.is_empty() { "core" } else { &info.group }), camel(&info.version));
    let ns_word = if info.namespaced { "Namespaced" } else { "" };
    let coll = if info.namespaced { format!("{base}/namespaces/{{namespace}}/{}", info.plural) } else { format!("{base}/{}", info.plural) };
    let item = format!("{coll}/{{name}}");
    let mut path_params = vec![];
    if info.namespaced {
        path_params.push(param("namespace", "path", "object name and auth scope, such as for teams and projects", "string"));
    }
    let mut item_params = vec![param("name", "path", &format!("name of the {}", info.kind), "string")];
    item_params.extend(path_params.clone());
    let patch_body = json!({
        "content": {
            "application/apply-patch+yaml": {"schema": ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
            "application/json-patch+json": {"schema": ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
            "application/merge-patch+json": {"schema": ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
            "application/strategic-merge-patch+json": {"schema": ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
        },
        "required": true
    });
    let obj_body = json!({"content": {"*/*": {"schema": kind_schema}}, "required": true});
    let list_q = [
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    ];
    let k = &info.kind;
    let mut out = Vec::new();
    let mut coll_item = json!({"parameters": path_params});
    coll_item["get"] =
        op(info, "list", format!("list{gvc}{ns_word}{k}"), format!("list or watch objects of kind {k}"), query_params(&list_q), None, list_schema);
    coll_item["post"] = op(
        info,
        "post",
        format!("create{gvc}{ns_word}{k}"),
        format!("create a {k}"),
        query_params(&["dryRun", "fieldManager", "fieldValidation"]),
        Some(obj_body.clone()),
        kind_schema,
    );
    coll_item["delete"] = op(
        info,
        "deletecollection",
        format!("deletecollection{gvc}{ns_word}{k}"),
        format!("delete collection of {k}"),
        query_params(&[
            "continue",
            "dryRun",
            "fieldSelector",
            "gracePeriodSeconds",
            "labelSelector",
            "limit",
            "propagationPolicy",
            "resourceVersion",
            "timeoutSeconds",
        ]),
        None,
        &ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
    );
    out.push((coll, coll_item));
    let mut item_obj = json!({"parameters": item_params.clone()});
    item_obj["get"] = op(info, "get", format!("read{gvc}{ns_word}{k}"), format!("read the specified {k}"), vec![], None, kind_schema);
    item_obj["put"] = op(
        info,
        "put",
        format!("replace{gvc}{ns_word}{k}"),
        format!("replace the specified {k}"),
        query_params(&["dryRun", "fieldManager", "fieldValidation"]),
        Some(obj_body.clone()),
        kind_schema,
    );
    item_obj["patch"] = op(
        info,
        "patch",
        format!("patch{gvc}{ns_word}{k}"),
        format!("partially update the specified {k}"),
        query_params(&["dryRun", "fieldManager", "fieldValidation", "force"]),
        Some(patch_body.clone()),
        kind_schema,
    );
    item_obj["delete"] = op(
        info,
        "delete",
        format!("delete{gvc}{ns_word}{k}"),
        format!("delete a {k}"),
        query_params(&["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
        None,
        kind_schema,
    );
    out.push((item.clone(), item_obj));
    if info.namespaced {
        let mut all = json!({"parameters": []});
        all["get"] =
            op(info, "list", format!("list{gvc}{k}ForAllNamespaces"), format!("list or watch objects of kind {k}"), query_params(&list_q), None, list_schema);
        out.push((format!("{base}/{}", info.plural), all));
    }
    for sub in [Subresource::Status, Subresource::Scale] {
        if !info.has(sub) {
            continue;
        }
        let (schema, suffix) = match sub {
            Subresource::Scale => (ref_schema("io.k8s.api.autoscaling.v1.Scale"), "Scale"),
            _ => (kind_schema.clone(), "Status"),
        };
        let mut s = json!({"parameters": item_params.clone()});
        s["get"] = op(info, "get", format!("read{gvc}{ns_word}{k}{suffix}"), format!("read {} of the specified {k}", sub.name()), vec![], None, &schema);
        s["put"] = op(
            info,
            "put",
            format!("replace{gvc}{ns_word}{k}{suffix}"),
            format!("replace {} of the specified {k}", sub.name()),
            query_params(&["dryRun", "fieldManager", "fieldValidation"]),
            Some(json!({"content": {"*/*": {"schema": schema}}, "required": true})),
            &schema,
        );
        s["patch"] = op(
            info,
            "patch",
            format!("patch{gvc}{ns_word}{k}{suffix}"),
            format!("partially update {} of the specified {k}", sub.name()),
            query_params(&["dryRun", "fieldManager", "fieldValidation", "force"]),
            Some(patch_body.clone()),
            &schema,
        );
        out.push((format!("{item}/{}", sub.name()), s));
    }
    out
}

/// Which field holds objects of a definition (the `parent` mergekeys expects).
fn parent_context(def: &str) -> Option<&'static str> {
    let short = def.rsplit('.').next().unwrap_or(def);
    Some(match short {
        "Container" | "EphemeralContainer" => "containers",
        "PodSpec" | "ServiceSpec" => "spec",
        "ObjectMeta" => "metadata",
        "ServiceAccount" => "",
        s if s.ends_with("Status") => "status",
        _ => return None,
    })
}

/// Rewrites `{"$ref": .., "description": ..}` as upstream writes it (`allOf: [{$ref}]` beside
/// the description), since OpenAPI 3.0 ignores siblings of `$ref`.
fn wrap_refs(schema: &mut Value) {
    let Some(m) = schema.as_object_mut() else {
        return;
    };
    if m.contains_key("$ref") && m.len() > 1 {
        let r = m.remove("$ref").unwrap();
        m.insert("allOf".into(), json!([{"$ref": r}]));
    }
    for (k, c) in m.iter_mut() {
        match k.as_str() {
            // Maps of name -> schema (a property may itself be called "$ref").
            "properties" | "patternProperties" | "definitions" => {
                if let Some(props) = c.as_object_mut() {
                    props.values_mut().for_each(wrap_refs);
                }
            }
            "items" | "additionalProperties" | "not" | "additionalItems" => wrap_refs(c),
            "allOf" | "oneOf" | "anyOf" => {
                if let Some(a) = c.as_array_mut() {
                    a.iter_mut().for_each(wrap_refs);
                }
            }
            _ => {}
        }
    }
}

/// Adds x-kubernetes-patch-* and list-type extensions to array properties.
fn decorate(defs: &mut Map<String, Value>) {
    for (_, schema) in defs.iter_mut() {
        wrap_refs(schema);
    }
    for (name, schema) in defs.iter_mut() {
        let short = name.rsplit('.').next().unwrap_or(name);
        // An object's metadata is never required upstream (k8s-openapi's types hold it as a
        // plain field, which the generated schema marks required).
        if let Some(req) = schema.get_mut("required").and_then(Value::as_array_mut) {
            req.retain(|f| f != "metadata");
            if req.is_empty() {
                schema.as_object_mut().map(|m| m.remove("required"));
            }
        }
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            for (field, ps) in props.iter_mut() {
                if retains_keys(short, field)
                    && let Some(m) = ps.as_object_mut()
                {
                    m.insert("x-kubernetes-patch-strategy".into(), json!("retainKeys"));
                }
            }
        }
        let Some(parent) = parent_context(name) else {
            continue;
        };
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, ps) in props.iter_mut() {
            if ps.get("type").and_then(Value::as_str) != Some("array") {
                continue;
            }
            // Upstream has no merge key on node taints or tolerations (atomic).
            let kind = list_kind(parent, field);
            let Some(m) = ps.as_object_mut() else {
                continue;
            };
            match kind {
                ListKind::Map(keys) => {
                    m.insert("x-kubernetes-patch-merge-key".into(), json!(keys[0]));
                    let strategy = if field == "volumes" { "merge,retainKeys" } else { "merge" };
                    m.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
                    m.insert("x-kubernetes-list-type".into(), json!("map"));
                    m.insert("x-kubernetes-list-map-keys".into(), json!(keys));
                }
                ListKind::Set => {
                    m.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                    m.insert("x-kubernetes-list-type".into(), json!("set"));
                }
                ListKind::Atomic => {
                    m.insert("x-kubernetes-list-type".into(), json!("atomic"));
                }
            }
        }
    }
}

fn build_document(cat: &Catalog, version: &str, resources: &[ResourceRef]) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut kind_schemas: Vec<(String, ResourceRef)> = Vec::new();
    let mut custom_defs: Vec<(String, Value)> = Vec::new();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    for r in resources {
        if r.plural == "bindings" || r.plural == "componentstatuses" && r.verbs.len() < 3 {
            // Still documented by kind below, but with only the operations they have.
        }
        let def = if r.custom {
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
            let name = format!("{}.{}.{}", r.group.split('.').rev().collect::<Vec<_>>().join("."), r.version, r.kind);
            let mut schema = cat.schema(r).unwrap_or(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
            if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("metadata".into(), ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
                props.entry("apiVersion").or_insert(json!({"type": "string"}));
                props.entry("kind").or_insert(json!({"type": "string"}));
            }
            custom_defs.push((name.clone(), schema));
            name
        } else {
            match crate::typed::schema_for(&mut generator, r) {
                Some(n) => n,
                None => continue,
            }
        };
        kind_schemas.push((def, r.clone()));
    }
    if resources.iter().any(|r| r.has(Subresource::Scale)) {
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    }
    let mut defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (n, s) in custom_defs {
        defs.insert(n, s);
    }
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    for (def, r) in &kind_schemas {
        if let Some(s) = defs.get_mut(def).and_then(Value::as_object_mut) {
            let gvks = s.entry("x-kubernetes-group-version-kind").or_insert(json!([]));
            if let Some(a) = gvks.as_array_mut() {
                let e = json!({"group": r.group, "kind": r.kind, "version": r.version});
                if !a.contains(&e) {
                    a.push(e);
                }
            }
        }
        let list_name = format!("{def}List");
        defs.entry(list_name.clone()).or_insert_with(|| {
            json!({
                "description": format!("{}List is a list of {}", r.kind, r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "items": {"type": "array", "items": ref_schema(def)},
                    "kind": {"type": "string"},
                    "metadata": ref_schema("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
                },
                "x-kubernetes-group-version-kind": [{"group": r.group, "kind": format!("{}List", r.kind), "version": r.version}],
            })
        });
        if r.verbs.len() < 3 {
            continue;
        }
        for (p, item) in paths_for(r, &ref_schema(def), &ref_schema(&list_name)) {
            paths.insert(p, item);
        }
    }
    if !defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta") {
        let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
        g.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
        defs.extend(g.take_definitions(true));
    }
    decorate(&mut defs);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("{}", version)},
        "paths": paths,
        "components": {"schemas": defs}
    })
}
