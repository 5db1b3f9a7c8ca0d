//! HTTP handling: one entry point that authenticates, routes by the resource table and renders
//! in the negotiated format. Routing is by hand (not per-route axum handlers) because the set of
//! resources changes at run time with CRDs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode};
use r8s_api::ResourceInfo;
use r8s_api::Subresource;
use r8s_api::selectors::{FieldSelector, LabelSelector};
use r8s_api::strategy::strategy;
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::pipeline::RequestContext;
use crate::registry::{DeleteOptions, FieldValidation, ListOptions, ListResult, Registry, WriteOptions, WriteOrigin};
use crate::request::{BodyFormat, Output, ResourcePath, Route, body_format, decode_body, decode_object, negotiate, parse_query, parse_route};
use crate::status::{ApiError, ApiResult};
use crate::subresources::scale::{scale_of, update_scale};
use crate::{convert, table};

pub struct AppState {
    pub authn: crate::authn::Chain,
    pub authz: Box<dyn crate::authz::Authorizer>,
    pub registry: Arc<Registry>,
    pub catalog: Arc<Catalog>,
    pub server_address: String,
    pub version: Value,
    pub openapi: crate::openapi::OpenApi,
    pub ready: std::sync::atomic::AtomicBool,
    /// TLS with the apiserver-kubelet-client certificate, for the kubelet proxy (set at start).
    pub kubelet_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// Resource requests served, by verb, group, resource and subresource.
    pub requests: crate::request_metrics::RequestCounts,
}

type Query = HashMap<String, String>;

/// Every JSON or YAML response body of the API is written here.
pub fn json_response(code: StatusCode, v: &Value, out: Output) -> Response {
    match out {
        Output::Yaml => {
            let body = serde_yaml::to_string(v).unwrap_or_default();
            (code, [(http::header::CONTENT_TYPE, "application/yaml")], body).into_response()
        }
        _ => json_bytes(code, "application/json", serde_json::to_vec(v).unwrap_or_default()),
    }
}

/// A response with an already encoded JSON body, ended by the newline upstream's encoder
/// (Go's json.Encoder) writes after every object.
pub fn json_bytes(code: StatusCode, content_type: impl Into<String>, mut body: Vec<u8>) -> Response {
    body.push(b'\n');
    (code, [(http::header::CONTENT_TYPE, content_type.into())], body).into_response()
}

fn text(code: StatusCode, s: &'static str) -> Response {
    (code, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], s).into_response()
}

/// The health and version endpoints, open to anonymous requests.
pub fn public(state: &AppState, path: &str) -> Response {
    if path == "/version" {
        return json_response(StatusCode::OK, &state.version, Output::Json);
    }
    if state.ready.load(std::sync::atomic::Ordering::SeqCst) || path == "/livez" {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::INTERNAL_SERVER_ERROR, "[-]poststarthook/r8s-bootstrap failed: not finished\nreadyz check failed")
    }
}

pub async fn read_body(body: Body) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("failed to read request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= crate::request::MAX_BODY {
            buf.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > crate::request::MAX_BODY {
        // The rest of an oversized body was read and dropped (up to a bound), so the client,
        // still sending, gets the 413 instead of a reset connection.
        return Err(ApiError::too_large(crate::request::MAX_BODY));
    }
    Ok(buf.freeze())
}

/// How much of an oversized body is read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Routes an authenticated, authorized request.
pub async fn dispatch(state: &Arc<AppState>, ctx: &RequestContext, body: Bytes) -> ApiResult<Response> {
    let (method, path, headers) = (&ctx.parts.method, ctx.parts.uri.path(), &ctx.parts.headers);
    let query = &parse_query(ctx.parts.uri.query());
    if path == "/metrics" {
        return Ok(metrics(state).await);
    }
    if path == "/openapi/v2" {
        return state.openapi.v2(&state.catalog, headers);
    }
    if path == "/openapi/v3" || path.starts_with("/openapi/v3/") {
        return state.openapi.v3(&state.catalog, path, headers);
    }
    let Some(route) = parse_route(path) else {
        return Err(ApiError::no_route());
    };
    if *method != Method::GET && !matches!(route, Route::Resource(_)) {
        return Err(ApiError::method_not_allowed());
    }
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let aggregated = accept.split(',').find(|e| e.contains("as=APIGroupDiscoveryList") && e.contains("g=apidiscovery.k8s.io"));
    match route {
        Route::CoreVersions | Route::Groups => {
            let core = route == Route::CoreVersions;
            if let Some(entry) = aggregated {
                let v = if entry.contains("v=v2beta1") { "v2beta1" } else { "v2" };
                let doc = crate::discovery::aggregated(&state.catalog, core, &format!("apidiscovery.k8s.io/{v}"));
                let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
                return Ok(json_bytes(StatusCode::OK, ct, serde_json::to_vec(&doc).unwrap_or_default()));
            }
            let doc = if core { crate::discovery::api_versions(&state.server_address) } else { crate::discovery::api_group_list(&state.catalog) };
            Ok(json_response(StatusCode::OK, &doc, Output::Json))
        }
        Route::Group(g) => match crate::discovery::api_group(&state.catalog, &g) {
            Some(doc) => Ok(json_response(StatusCode::OK, &doc, Output::Json)),
            None => Err(ApiError::no_route()),
        },
        Route::ResourceList { group, version } => match crate::discovery::resource_list(&state.catalog, &group, &version) {
            Some(doc) => Ok(json_response(StatusCode::OK, &doc, Output::Json)),
            None => Err(ApiError::no_route()),
        },
        Route::Resource(rp) => resource(state, ctx, &rp, query, body).await,
    }
}

async fn metrics(state: &AppState) -> Response {
    let mut out = String::new();
    for (k, v) in state.catalog.store().metrics().snapshot() {
        out.push_str(&format!("# TYPE {k} counter\n{k} {v}\n"));
    }
    if let Ok(rev) = state.catalog.store().current_revision().await {
        out.push_str(&format!("# TYPE r8s_store_revision gauge\nr8s_store_revision {rev}\n"));
    }
    out.push_str(&state.requests.render());
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Boolean query parameters as Go's strconv.ParseBool reads them (clients send "True" too).
/// Values are checked once per request by [`check_bool_params`], so an unparseable one never
/// gets this far.
pub fn query_bool(query: &Query, key: &str) -> bool {
    query.get(key).is_some_and(|v| r8s_api::validation::parse_bool(v) == Ok(true))
}

/// The boolean parameters of the API's options (ListOptions, Get/Patch/Delete options, the
/// pod log, exec and attach options).
const BOOL_PARAMS: &[&str] = &[
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "pretty",
    "force",
    "orphanDependents",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "stdin",
    "stdout",
    "stderr",
    "tty",
    "follow",
    "previous",
    "timestamps",
    "insecureSkipTLSVerifyBackend",
];

/// A boolean parameter that strconv.ParseBool cannot read is the client's error: 400.
pub fn check_bool_params(query: &Query) -> ApiResult<()> {
    for k in BOOL_PARAMS {
        if let Some(v) = query.get(*k)
            && let Err(e) = r8s_api::validation::parse_bool(v)
        {
            return Err(ApiError::bad_request(format!("invalid value for query parameter {k}: {e}")));
        }
    }
    Ok(())
}

fn list_options(info: &ResourceInfo, query: &Query) -> ApiResult<ListOptions> {
    let label_selector = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let field_selector = FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)?;
    let st = strategy(info);
    for r in &field_selector.requirements {
        if !st.supports_field(&r.field) {
            let msg = if info.custom {
                format!("\"{}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"", r.field)
            } else {
                format!("field label not supported: {}", r.field)
            };
            return Err(ApiError::bad_request(msg));
        }
    }
    let limit = match query.get("limit") {
        Some(l) if !l.is_empty() => l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?.max(0) as usize,
        _ => 0,
    };
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: query.get("continue").cloned(),
        resource_version: query.get("resourceVersion").cloned(),
        resource_version_match: query.get("resourceVersionMatch").cloned(),
    })
}

/// The write options of a request: dry-run, field manager, field validation and who asks.
pub fn write_options(ctx: &RequestContext, default_manager: bool) -> ApiResult<WriteOptions> {
    let query = &parse_query(ctx.parts.uri.query());
    let headers = &ctx.parts.headers;
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid dryRun value: {other}")));
        }
    };
    let mut field_manager = query.get("fieldManager").cloned().filter(|s| !s.is_empty());
    if field_manager.is_none() && default_manager {
        // Upstream falls back to the user agent's program name.
        field_manager = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
            .filter(|s| !s.is_empty());
    }
    if let Some(m) = &field_manager
        && m.len() > 128
    {
        return Err(ApiError::bad_request("fieldManager: Too long: must have at most 128 bytes"));
    }
    let field_validation = FieldValidation::parse(query.get("fieldValidation").map(String::as_str)).map_err(ApiError::bad_request)?;
    Ok(WriteOptions {
        dry_run,
        field_manager,
        operation: "Update",
        field_validation,
        origin: WriteOrigin::Body,
        user: Some(ctx.user.clone()),
        ..Default::default()
    })
}

/// Duplicate fields in a JSON body, handled as the request's fieldValidation says.
pub fn check_duplicates(info: &ResourceInfo, body: &Bytes, opts: &WriteOptions) -> ApiResult<()> {
    let dups = crate::duplicates::find(body);
    if dups.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = dups.iter().map(|p| format!("duplicate field \"{p}\"")).collect();
    match opts.field_validation {
        FieldValidation::Strict => {
            let msg = format!("strict decoding error: {}", listed.join(", "));
            Err(ApiError::bad_request(if opts.origin == WriteOrigin::Body {
                format!("{} in version \"{}\" cannot be handled as a {}: {msg}", info.kind, info.version, info.kind)
            } else {
                msg
            }))
        }
        FieldValidation::Warn => {
            listed.into_iter().for_each(|w| opts.warn(w));
            Ok(())
        }
        FieldValidation::Ignore => Ok(()),
    }
}

/// Adds the request's warnings as `Warning: 299 - "..."` headers, as upstream does.
pub fn with_warnings(mut resp: Response, opts: &WriteOptions) -> Response {
    for w in opts.warnings.lock().unwrap().iter() {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    resp
}

fn find_resource(state: &AppState, rp: &ResourcePath) -> ApiResult<Arc<ResourceInfo>> {
    match state.catalog.find(&rp.group, &rp.version, &rp.plural) {
        Some(i) => Ok(i),
        None => Err(ApiError::no_route()),
    }
}

async fn resource(state: &Arc<AppState>, ctx: &RequestContext, rp: &ResourcePath, query: &Query, body: Bytes) -> ApiResult<Response> {
    let (method, headers) = (&ctx.parts.method, &ctx.parts.headers);
    check_bool_params(query)?;
    let info = find_resource(state, rp)?;
    if info.group == "metrics.k8s.io" {
        return crate::metrics::serve(state, &info, rp.namespace.as_deref(), rp.name.as_deref(), method).await;
    }
    let ns = rp.namespace.as_deref();
    if info.namespaced && rp.name.is_some() && ns.is_none() && info.plural != "namespaces" {
        return Err(ApiError::no_route());
    }
    if !info.namespaced && ns.is_some() {
        return Err(ApiError::no_route());
    }
    let sub = match &rp.subresource {
        None => None,
        Some(s) => match Subresource::parse(s) {
            Some(sr) if info.has(sr) => Some(sr),
            _ => return Err(ApiError::no_route()),
        },
    };
    let name = rp.name.as_deref();
    let reg = &state.registry;
    let verb_allowed = |v: &str| info.verbs.iter().any(|x| x == v);
    match (method.clone(), name, sub) {
        (Method::GET, None, _) => {
            let watch = rp.watch_prefix || query_bool(query, "watch");
            let out = negotiate(headers)?;
            let opts = list_options(&info, query)?;
            if watch {
                if !verb_allowed("watch") {
                    return Err(ApiError::method_not_allowed());
                }
                return crate::watch::serve(state.clone(), info, ns.map(str::to_string), opts, out, query).await;
            }
            if !verb_allowed("list") {
                return Err(ApiError::method_not_allowed());
            }
            let res = reg.list(&info, ns, &opts).await?;
            render_list(state, &info, res, out, query)
        }
        (Method::GET, Some(n), None | Some(Subresource::Status)) => {
            let out = negotiate(headers)?;
            let obj = reg.get(&info, ns, n).await?;
            render_object(state, &info, obj, out, query, StatusCode::OK)
        }
        (Method::GET | Method::POST, Some(n), Some(sr @ (Subresource::Exec | Subresource::Attach))) => {
            crate::kubelet_proxy::pod_stream(state, ctx, &info, ns.unwrap_or_default(), n, sr.name()).await
        }
        (Method::GET | Method::POST, Some(n), Some(Subresource::PortForward)) => {
            crate::kubelet_proxy::pod_portforward(state, ctx, &info, ns.unwrap_or_default(), n).await
        }
        (Method::GET, Some(n), Some(Subresource::Log)) => crate::kubelet_proxy::pod_log(state, &info, ns.unwrap_or_default(), n, query).await,
        (Method::GET, Some(n), Some(Subresource::Scale)) => {
            let obj = reg.get(&info, ns, n).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&info, &obj), negotiate(headers)?))
        }
        (Method::POST, None, None) => {
            if !verb_allowed("create") {
                return Err(ApiError::method_not_allowed());
            }
            let out = negotiate(headers)?;
            let fmt = body_format(headers)?;
            if !matches!(fmt, BodyFormat::Json | BodyFormat::Yaml | BodyFormat::Protobuf) {
                return Err(ApiError::unsupported_media_type(headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")));
            }
            let mut obj = decode_object(&body, fmt)?;
            check_type(&info, &mut obj, &body)?;
            if crate::reviews::is_review(&info) {
                let answered = crate::reviews::create(state, ctx, &info, ns, obj).await?;
                return render_object(state, &info, answered, out, query, StatusCode::CREATED);
            }
            let opts = write_options(ctx, true)?;
            check_duplicates(&info, &body, &opts)?;
            let created = reg.create(&info, ns, obj, &opts).await?;
            Ok(with_warnings(render_object(state, &info, created, out, query, StatusCode::CREATED)?, &opts))
        }
        (Method::POST, Some(n), Some(Subresource::Binding)) => {
            let b = decode_object(&body, body_format(headers)?)?;
            crate::subresources::binding::bind(state, ctx, &info, ns, n, &b).await
        }
        (Method::POST, Some(n), Some(Subresource::Eviction)) => {
            let b = decode_object(&body, body_format(headers)?)?;
            crate::subresources::eviction::evict(state, &info, ns, n, &b).await
        }
        (Method::POST, None, Some(Subresource::Binding)) => Err(ApiError::method_not_allowed()),
        (Method::PUT, Some(n), sub) => {
            if !verb_allowed("update") {
                return Err(ApiError::method_not_allowed());
            }
            let out = negotiate(headers)?;
            let fmt = body_format(headers)?;
            let mut obj = decode_object(&body, fmt)?;
            let opts = write_options(ctx, true)?;
            if sub == Some(Subresource::Scale) {
                let updated = update_scale(reg, &info, ns, n, &opts, |_| Ok(obj.clone())).await?;
                return Ok(json_response(StatusCode::OK, &scale_of(&info, &updated), out));
            }
            if sub == Some(Subresource::Finalize) {
                let updated = reg
                    .update_with(&info, ns, n, None, &opts, |mut cur| {
                        cur["spec"]["finalizers"] = obj.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
                        Ok(cur)
                    })
                    .await?;
                return render_object(state, &info, updated, out, query, StatusCode::OK);
            }
            check_type(&info, &mut obj, &body)?;
            check_duplicates(&info, &body, &opts)?;
            let updated = reg.update(&info, ns, n, obj, sub, &opts).await?;
            Ok(with_warnings(render_object(state, &info, updated, out, query, StatusCode::OK)?, &opts))
        }
        (Method::PATCH, Some(n), sub) => {
            if !verb_allowed("patch") {
                return Err(ApiError::method_not_allowed());
            }
            let out = negotiate(headers)?;
            crate::patching::patch(state, ctx, &info, ns, n, sub, query, &body, out).await
        }
        (Method::DELETE, Some(n), None) => {
            if !verb_allowed("delete") {
                return Err(ApiError::method_not_allowed());
            }
            let out = negotiate(headers)?;
            let opts = DeleteOptions { user: Some(ctx.user.clone()), ..delete_options(query, &body)? };
            let deleted = reg.delete(&info, ns, n, &opts).await?;
            render_object(state, &info, deleted, out, query, StatusCode::OK)
        }
        (Method::DELETE, None, None) => {
            if !verb_allowed("deletecollection") {
                return Err(ApiError::method_not_allowed());
            }
            let out = negotiate(headers)?;
            let lopts = list_options(&info, query)?;
            let dopts = delete_options(query, &body)?;
            let items = reg.delete_collection(&info, ns, &lopts, &dopts).await?;
            let list = json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": {}, "items": items});
            Ok(json_response(StatusCode::OK, &list, out))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The body's apiVersion and kind must name this resource. Missing ones are filled from the
/// URL, as upstream's decoder does with the endpoint's default group/version/kind; only a
/// mismatch is an error, worded as upstream's decoder words it.
fn check_type(info: &ResourceInfo, obj: &mut Value, body: &[u8]) -> ApiResult<()> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!("Object 'Kind' is missing in '{}'", truncate(&obj.to_string()))));
    };
    for (field, wanted) in [("kind", info.kind.clone()), ("apiVersion", info.api_version())] {
        if m.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert(field.into(), Value::String(wanted));
        }
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if av != info.api_version() {
        return Err(ApiError::bad_request(format!("the API version in the data ({av}) does not match the expected API version ({})", info.api_version())));
    }
    if kind != info.kind {
        // Upstream decodes the body as its own kind, fails to convert it into the endpoint's
        // and reports it with a summary of the body (transformDecodeError).
        let version = av.rsplit('/').next().unwrap_or(av);
        let internal = if info.group.is_empty() { "core" } else { info.group.split('.').next().unwrap_or(&info.group) };
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): converting ({version}.{kind}) to ({internal}.{}): unknown conversion ({})",
            info.kind,
            info.kind,
            summarize(body)
        )));
    }
    Ok(())
}

/// Upstream's summarizeData: the first 30 bytes of a JSON body (hex for anything else).
fn summarize(body: &[u8]) -> String {
    const MAX: usize = 30;
    let cut = &body[..body.len().min(MAX)];
    let more = if body.len() > MAX { " ..." } else { "" };
    match body.first() {
        None => "<empty>".into(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(cut)),
        Some(_) => format!("{}{more}", cut.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 200 { format!("{}...", &s[..s.char_indices().take_while(|(i, _)| *i < 200).last().map(|(i, _)| i).unwrap_or(0)]) } else { s.to_string() }
}

fn delete_options(query: &Query, body: &Bytes) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions::default();
    if !body.iter().all(|b| b.is_ascii_whitespace()) {
        let b = decode_body(body, true)?;
        opts.grace_period_seconds = b.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.propagation_policy = b.get("propagationPolicy").and_then(Value::as_str).map(str::to_string);
        if b.get("orphanDependents") == Some(&json!(true)) {
            opts.propagation_policy = Some("Orphan".into());
        }
        opts.precondition_uid = b.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_rv = b.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
            opts.dry_run = d.iter().any(|x| x == "All");
        }
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?);
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation_policy = Some(p.clone());
    }
    if let Some(p) = &opts.propagation_policy
        && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        )));
    }
    if query.get("dryRun").map(String::as_str) == Some("All") {
        opts.dry_run = true;
    }
    Ok(opts)
}

/// Renders one object (already in `info`'s version).
pub fn render_object(state: &AppState, info: &ResourceInfo, obj: Value, out: Output, query: &Query, code: StatusCode) -> ApiResult<Response> {
    match out {
        Output::Table => {
            let t = table::table(state, info, &[obj], None, query);
            Ok(json_response(code, &t, Output::Json))
        }
        Output::PartialMetadata => Ok(json_response(code, &table::partial(&obj), Output::Json)),
        _ => Ok(json_response(code, &obj, out)),
    }
}

fn render_list(state: &AppState, info: &ResourceInfo, res: ListResult, out: Output, query: &Query) -> ApiResult<Response> {
    let mut md = json!({"resourceVersion": res.rev.to_string()});
    if let Some(c) = &res.continue_token {
        md["continue"] = json!(c);
    }
    if let Some(r) = res.remaining {
        md["remainingItemCount"] = json!(r);
    }
    match out {
        Output::Json if !convert::needs_conversion(info) => {
            // Fast path: splice the cached JSON bytes.
            let mut head = serde_json::to_vec(&json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": md})).unwrap();
            head.pop();
            let mut body = head;
            body.extend_from_slice(b",\"items\":[");
            for (i, item) in res.items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(item);
            }
            body.extend_from_slice(b"]}");
            Ok(json_bytes(StatusCode::OK, "application/json", body))
        }
        _ => {
            let items: Vec<Value> = res.items.iter().filter_map(|b| serde_json::from_slice::<Value>(b).ok()).map(|v| convert::from_storage(info, v)).collect();
            match out {
                Output::Table => {
                    let t = table::table(state, info, &items, Some(md), query);
                    Ok(json_response(StatusCode::OK, &t, Output::Json))
                }
                Output::PartialMetadata => {
                    let items: Vec<Value> = items.iter().map(table::partial).collect();
                    let l = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": md, "items": items});
                    Ok(json_response(StatusCode::OK, &l, Output::Json))
                }
                _ => {
                    let l = json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": md, "items": items});
                    Ok(json_response(StatusCode::OK, &l, out))
                }
            }
        }
    }
}
