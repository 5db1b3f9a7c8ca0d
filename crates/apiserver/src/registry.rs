//! The generic registry: create / get / list / update / delete of any resource against the
//! store, with upstream's object semantics (uid, resourceVersion and optimistic concurrency,
//! generation, generateName, finalizers and graceful deletion, dry-run), the kind's strategy
//! (defaults, validation, status/spec split) and the built-in admission steps.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use r8s_api::meta::{self, now_rfc3339};
use r8s_api::selectors::{FieldSelector, LabelSelector};
use r8s_api::strategy::{strategy, validate_object_meta};
use r8s_api::{ResourceInfo, ResourceRef, Subresource};
use r8s_store::{Precondition, Store, WriteOutcome, prefix_end};
use serde_json::{Value, json};

use crate::admission::{Attributes, Operation};
use crate::alloc::Allocators;
use crate::cache::CacheEntry;
use crate::catalog::Catalog;
use crate::convert;
use crate::status::{ApiError, ApiResult};

/// Who is asking and how (per request).
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// "Update" or "Apply" for managedFields bookkeeping.
    pub operation: &'static str,
    /// The `fieldValidation` directive: what unknown fields do.
    pub field_validation: FieldValidation,
    /// Which kind of request produced the object (decides how type errors are worded).
    pub origin: WriteOrigin,
    /// Warnings for the response's `Warning` headers (unknown fields under Warn).
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// Who asks (admission sees it); None: the server itself.
    pub user: Option<crate::authn::UserInfo>,
}

/// Upstream's `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields are dropped silently. Writes the server makes itself use this.
    #[default]
    Ignore,
    /// Unknown fields are dropped with a warning (the API's default for requests).
    Warn,
    /// Unknown fields are an error.
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<FieldValidation, String> {
        match v.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(format!("fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\"")),
        }
    }
}

/// Where the object being written came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteOrigin {
    /// Built by the server (bootstrap, subresources, internal read-modify-write).
    #[default]
    Internal,
    /// A POST or PUT body.
    Body,
    /// The result of a JSON, merge or strategic merge patch.
    Patch,
    /// The result of a server-side apply.
    Apply,
}

impl WriteOptions {
    pub fn warn(&self, msg: String) {
        self.warnings.lock().unwrap().push(msg);
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Who asks (admission sees it); None: the server itself.
    pub user: Option<crate::authn::UserInfo>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

pub struct ListResult {
    pub rev: i64,
    /// Objects as stored-version JSON with resourceVersion set.
    pub items: Vec<Bytes>,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

pub struct Registry {
    pub catalog: Arc<Catalog>,
    /// The admission chain every write goes through.
    pub admission: crate::admission::Chain,
    pub alloc: Arc<Allocators>,
    /// When false (no garbage collector runs yet), Orphan/Foreground deletes do not add the
    /// finalizers only a GC would remove.
    pub gc_enabled: bool,
}

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix(n: usize) -> String {
    let r = uuid::Uuid::new_v4().as_u128();
    (0..n).map(|i| NAME_CHARS[((r >> (i * 8)) % NAME_CHARS.len() as u128) as usize] as char).collect()
}

fn strip_rv(obj: &mut Value) {
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("resourceVersion");
        md.remove("selfLink");
    }
}

fn set_rv(obj: &mut Value, rev: i64) {
    meta::metadata_mut(obj).insert("resourceVersion".into(), json!(rev.to_string()));
}

fn decode(bytes: &[u8], rev: i64) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(bytes).map_err(ApiError::internal)?;
    set_rv(&mut v, rev);
    Ok(v)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

pub fn encode_continue(rev: i64, last_key_suffix: &str) -> String {
    let t = ContinueToken { v: "meta.k8s.io/v1".into(), rv: rev, start: format!("{last_key_suffix}\u{0}") };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap())
}

fn decode_continue(tok: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data");
    let raw =
        base64::engine::general_purpose::URL_SAFE.decode(tok).or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok)).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| ApiError::bad_request("continue key is not valid: invalid token"))?;
    if t.v != "meta.k8s.io/v1" {
        return Err(ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"));
    }
    let start = t.start.trim_end_matches('\u{0}').to_string();
    Ok((t.rv, start))
}

fn qualified_kind(info: &ResourceInfo) -> String {
    if info.group.is_empty() { info.kind.clone() } else { format!("{}.{}", info.kind, info.group) }
}

impl Registry {
    pub fn new(catalog: Arc<Catalog>, alloc: Arc<Allocators>) -> Self {
        Registry { catalog, alloc, admission: crate::admission::Chain::default(), gc_enabled: false }
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.catalog.store()
    }

    fn storage(&self, info: &ResourceInfo) -> ResourceRef {
        self.catalog.storage_info(info)
    }

    fn key(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
        self.storage(info).key(ns, name)
    }

    /// Reads the stored object (storage version) and its revision.
    async fn read(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Option<(Value, i64)>> {
        let key = self.key(info, ns, name);
        match self.store().get(&key).await? {
            Some(kv) => Ok(Some((decode(&kv.value, kv.mod_revision)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    pub async fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.read(info, ns, name).await? {
            Some((v, _)) => Ok(convert::from_storage(info, v)),
            None => Err(ApiError::not_found(info, name)),
        }
    }

    /// Lists objects (stored version JSON). Served from the watch cache except when paging at a
    /// revision the cache has moved past or when an exact old revision is asked for.
    pub async fn list(&self, info: &ResourceInfo, ns: Option<&str>, opts: &ListOptions) -> ApiResult<ListResult> {
        let sinfo = self.storage(info);
        let prefix = match ns {
            Some(n) if sinfo.namespaced => sinfo.namespace_prefix(n),
            _ => sinfo.key_prefix(),
        };
        let base = sinfo.key_prefix();
        let cache = self.catalog.cache(&sinfo);
        let (token_rev, start_after) = match &opts.continue_token {
            Some(t) if !t.is_empty() => {
                let (rev, start) = decode_continue(t)?;
                if rev < self.store().compacted_revision().await? {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (Some(rev), Some(format!("{base}{start}")))
            }
            _ => (None, None),
        };
        let rv_param = opts.resource_version.as_deref().unwrap_or("");
        let exact = opts.resource_version_match.as_deref() == Some("Exact");
        let requested_rev: Option<i64> = if rv_param.is_empty() || rv_param == "0" {
            None
        } else {
            Some(rv_param.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?)
        };
        // Decide the revision to read at and whether the cache can serve it.
        let mut from_cache = None;
        if let Some(cache) = &cache {
            match (token_rev, requested_rev) {
                (Some(r), _) => {
                    if cache.revision() == r {
                        from_cache = Some(cache.clone());
                    }
                }
                (None, Some(r)) if exact => {
                    if cache.revision() == r {
                        from_cache = Some(cache.clone());
                    }
                }
                (None, Some(r)) => {
                    if !cache.wait_for(r, Duration::from_secs(3)).await {
                        return Err(ApiError::timeout(format!("Too large resource version: {r}, current: {}", cache.revision())));
                    }
                    from_cache = Some(cache.clone());
                }
                (None, None) => {
                    if rv_param == "0" || cache.wait_consistent(self.store().as_ref(), Duration::from_secs(3)).await? {
                        from_cache = Some(cache.clone());
                    }
                }
            }
        }
        let matches = |e: &CacheEntry| e.matches(if sinfo.namespaced { ns } else { None }, &opts.label_selector, &opts.field_selector);
        let limit = opts.limit;
        let mut items = Vec::new();
        let mut last_key: Option<String> = None;
        let mut more = false;
        let mut remaining = 0i64;
        let rev;
        if let Some(cache) = from_cache {
            let (r, entries) = cache.list(&prefix, start_after.as_deref());
            rev = r;
            for e in entries {
                if !matches(&e) {
                    continue;
                }
                if limit > 0 && items.len() >= limit {
                    more = true;
                    remaining += 1;
                    continue;
                }
                last_key = Some(e.key.clone());
                items.push(e.bytes.clone());
            }
        } else {
            let at = token_rev.or(requested_rev);
            let start = start_after.map(|s| format!("{s}\0")).unwrap_or_else(|| prefix.clone());
            let res = self.store().range(&start, &prefix_end(&prefix), 0, at).await?;
            rev = res.revision;
            for kv in res.kvs {
                let Some(e) = crate::cache::entry_from_kv(&sinfo, &kv.key, &kv.value, kv.mod_revision) else {
                    continue;
                };
                if !matches(&e) {
                    continue;
                }
                if limit > 0 && items.len() >= limit {
                    more = true;
                    remaining += 1;
                    continue;
                }
                last_key = Some(e.key.clone());
                items.push(e.bytes.clone());
            }
        }
        let continue_token = if more { last_key.map(|k| encode_continue(rev, k.strip_prefix(&base).unwrap_or(&k))) } else { None };
        let has_selectors = !opts.label_selector.is_empty() || !opts.field_selector.is_empty();
        Ok(ListResult { rev, items, continue_token, remaining: if more && !has_selectors { Some(remaining) } else { None } })
    }

    async fn check_namespace(&self, info: &ResourceInfo, ns: Option<&str>) -> ApiResult<()> {
        let Some(ns) = ns else { return Ok(()) };
        if !info.namespaced {
            return Ok(());
        }
        let ns_info = self.catalog.find("", "v1", "namespaces").expect("namespaces resource");
        match self.read(&ns_info, None, ns).await? {
            None => Err(ApiError::namespace_not_found(ns)),
            Some((nsobj, _)) => {
                if nsobj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                    Err(ApiError::forbidden(format!("unable to create new content in namespace {ns} because it is being terminated"))
                        .with_details(json!({"name": info.plural, "kind": info.plural})))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Creates an object. `obj` is in `info`'s version; the result too.
    pub async fn create(&self, info: &ResourceInfo, ns: Option<&str>, mut obj: Value, opts: &WriteOptions) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request must be an object"));
        }
        if self.catalog.is_terminating(info) {
            // Upstream's CRD handler while the CRD's finalizer empties it.
            let mut d = json!({"kind": info.plural});
            d["group"] = json!(info.group);
            return Err(ApiError::new(405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating").with_details(d));
        }
        self.check_fields(info, &mut obj, opts)?;
        // Namespace from the URL; a differing one in the body is an error.
        {
            let md = meta::metadata_mut(&mut obj);
            if info.namespaced {
                let body_ns = md.get("namespace").and_then(Value::as_str).map(str::to_string);
                match (ns, body_ns.as_deref()) {
                    (Some(u), Some(b)) if !b.is_empty() && u != b => {
                        return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                    }
                    (Some(u), _) => {
                        md.insert("namespace".into(), json!(u));
                    }
                    (None, _) => {
                        return Err(ApiError::bad_request("the server could not find the requested resource"));
                    }
                }
            } else {
                md.remove("namespace");
            }
            if md.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
            }
            let name_empty = md.get("name").and_then(Value::as_str).is_none_or(str::is_empty);
            if name_empty && let Some(g) = md.get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty()) {
                let base = if g.len() > 58 { &g[..58] } else { g };
                let name = format!("{base}{}", random_suffix(5));
                md.insert("name".into(), json!(name));
            }
            md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            md.insert("creationTimestamp".into(), json!(now_rfc3339()));
            md.remove("deletionTimestamp");
            md.remove("deletionGracePeriodSeconds");
            md.remove("generation");
        }
        let sinfo = self.storage(info);
        let mut obj = convert::to_storage(info, obj);
        let st = strategy(&sinfo);
        self.prepare_create_kind(&sinfo, &mut obj)?;
        // Upstream's order: mutating admission (defaulting first), PrepareForCreate,
        // validation, validating admission, store.
        let name = meta::name(&obj).to_string();
        let mut attrs = self.attributes(Operation::Create, &sinfo, None, ns, &name, Some(obj), None, opts);
        self.admission.admit(self, &mut attrs).await?;
        let mut obj = attrs.object.take().unwrap_or_default();
        st.prepare_create(&mut obj);
        let mut errs = validate_object_meta(&obj, st.name_rule(), sinfo.namespaced);
        errs.extend(st.validate(&obj, None));
        if !errs.is_empty() {
            return Err(ApiError::invalid(info, &name, &errs));
        }
        self.check_namespace(&sinfo, ns).await?;
        attrs.object = Some(obj);
        self.admission.validate(self, &attrs).await?;
        let mut obj = attrs.object.take().unwrap_or_default();
        crate::fields::record_operation(&mut obj, None, opts, &info.api_version());
        // Service allocations.
        let allocation = if st.kind().allocates_service_addresses() {
            Some(self.alloc.allocate(&mut obj, None, opts.dry_run).await.map_err(|e| alloc_error(info, &name, e))?)
        } else {
            None
        };
        let key = sinfo.key(ns, &name);
        if opts.dry_run {
            if self.store().get(&key).await?.is_some() {
                return Err(ApiError::already_exists(info, &name));
            }
            return Ok(convert::from_storage(info, obj));
        }
        strip_rv(&mut obj);
        let bytes = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
        match self.store().put(&key, bytes, Precondition::Absent).await? {
            WriteOutcome::Done { kv, .. } => {
                set_rv(&mut obj, kv.mod_revision);
                self.after_write(&sinfo, &obj, opts.origin != WriteOrigin::Internal).await;
                Ok(convert::from_storage(info, obj))
            }
            WriteOutcome::Failed { .. } => {
                if let Some(a) = allocation {
                    self.alloc.release_allocation(&a).await;
                }
                Err(ApiError::already_exists(info, &name))
            }
        }
    }

    /// Type-checks the object a write would store and handles its unknown fields as the
    /// request's `fieldValidation` says (`obj` is in `info`'s version).
    fn check_fields(&self, info: &ResourceInfo, obj: &mut Value, opts: &WriteOptions) -> ApiResult<()> {
        let (unknown, type_error) = if info.custom {
            let mut unknown = Vec::new();
            if let Some(schema) = self.catalog.schema(info) {
                crate::crd::prune_reporting(obj, &schema, &mut unknown);
            }
            (unknown, None)
        } else {
            let f = crate::fieldcheck::check(&info.group, &info.version, &info.kind, obj);
            (f.unknown, f.type_error)
        };
        let cannot_handle = |e: &str| ApiError::bad_request(format!("{} in version \"{}\" cannot be handled as a {}: {e}", info.kind, info.version, info.kind));
        if let Some(e) = type_error {
            return Err(match opts.origin {
                WriteOrigin::Body | WriteOrigin::Apply => cannot_handle(&e),
                // Upstream reports the patched object under the field "patch".
                // The patched object as checked (unknown fields already dropped): no copy of every
                // patched object is kept just for this message.
                WriteOrigin::Patch => ApiError::invalid_patch(&obj.to_string(), &e),
                WriteOrigin::Internal => ApiError::internal(e),
            });
        }
        if opts.origin == WriteOrigin::Body {
            // What the schema walk does not see (e.g. a malformed timestamp), serde does.
            crate::typed::check(info, obj)?;
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
        match opts.field_validation {
            FieldValidation::Strict => {
                let msg = format!("strict decoding error: {}", listed.join(", "));
                Err(if opts.origin == WriteOrigin::Body { cannot_handle(&msg) } else { ApiError::bad_request(msg) })
            }
            FieldValidation::Warn => {
                listed.into_iter().for_each(|w| opts.warn(w));
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }

    /// What the kind's strategy does to a new object before admission sees it (upstream does
    /// these while decoding or in PrepareForCreate).
    fn prepare_create_kind(&self, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        info.behavior.kind.normalize(obj, true);
        if info.custom {
            self.custom_schema(info, obj)?;
        }
        Ok(())
    }

    /// Admission attributes for a write by this request.
    #[allow(clippy::too_many_arguments)]
    fn attributes(
        &self,
        operation: Operation,
        info: &ResourceInfo,
        sub: Option<Subresource>,
        ns: Option<&str>,
        name: &str,
        object: Option<Value>,
        old_object: Option<Value>,
        opts: &WriteOptions,
    ) -> Attributes {
        Attributes {
            operation,
            resource: info.clone(),
            subresource: sub.map(|s| s.name().to_string()),
            namespace: ns.filter(|_| info.namespaced).map(str::to_string),
            name: name.to_string(),
            object,
            old_object,
            user: opts.user.clone(),
            dry_run: opts.dry_run,
        }
    }

    /// Prunes, defaults and validates a custom resource against its CRD's schema.
    fn custom_schema(&self, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        if let Some(schema) = self.catalog.schema(info) {
            crate::crd::prune_reporting(obj, &schema, &mut Vec::new());
            crate::crd::apply_defaults(obj, &schema);
            let errs = crate::crd::validate(obj, &schema);
            if !errs.is_empty() {
                return Err(ApiError::invalid(info, meta::name(obj), &errs));
            }
        }
        Ok(())
    }

    /// A client's CRD write is answered once this server serves (or stops serving) what it
    /// defines and its CRD controllers have settled the status (the follower learns of it
    /// through the watch like every other server does). The controllers' own writes
    /// (`settle` false) do not wait: they are what settles it.
    async fn after_write(&self, info: &ResourceInfo, obj: &Value, settle: bool) {
        if settle
            && info.group == "apiextensions.k8s.io"
            && info.kind == "CustomResourceDefinition"
            && let Some(rev) = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|r| r.parse().ok())
        {
            self.catalog.wait_crds_seen(rev, Duration::from_secs(5)).await;
        }
    }

    /// Read-modify-write with retries: `mutate` gets the current object (stored version, with
    /// resourceVersion) and returns the desired one. A resourceVersion in the result that
    /// differs from the current one is a conflict (409), like upstream's update precondition.
    pub async fn update_with<F>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        opts: &WriteOptions,
        mut mutate: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(Value) -> ApiResult<Value>,
    {
        let sinfo = self.storage(info);
        let key = sinfo.key(ns, name);
        let kind = sinfo.behavior.kind;
        for _attempt in 0..16 {
            let Some((current, rev)) = self.read(info, ns, name).await? else {
                return Err(ApiError::not_found(info, name));
            };
            let mut wanted = mutate(convert::from_storage(info, current.clone()))?;
            if wanted.is_object() {
                self.check_fields(info, &mut wanted, opts)?;
            }
            if let Some(rv) = wanted.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                && !rv.is_empty()
                && rv != rev.to_string()
            {
                return Err(ApiError::stale(info, name));
            }
            let mut obj = self.prepare_update(info, &sinfo, &current, wanted, sub, opts).await?;
            let final_delete = obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
                && obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty())
                && kind.may_remove(&current, &obj);
            let allocation = if kind.allocates_service_addresses() && sub.is_none() {
                Some(self.alloc.allocate(&mut obj, Some(&current), opts.dry_run).await.map_err(|e| alloc_error(info, name, e))?)
            } else {
                None
            };
            // No-op updates do not write (and keep the resourceVersion), like upstream. A
            // change of managers (a new applier co-owning fields, managedFields set by the
            // client) is a change; fresher timestamps alone are not.
            let mut cmp_old = current.clone();
            let mut cmp_new = obj.clone();
            strip_rv(&mut cmp_old);
            strip_rv(&mut cmp_new);
            for v in [&mut cmp_old, &mut cmp_new] {
                if let Some(entries) = v.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) {
                    for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                        e.remove("time");
                    }
                }
            }
            if cmp_old == cmp_new && !final_delete {
                return Ok(convert::from_storage(info, current));
            }
            if opts.dry_run {
                return Ok(convert::from_storage(info, obj));
            }
            if final_delete {
                return match self.store().delete(&key, Precondition::ModRevision(rev)).await? {
                    WriteOutcome::Done { kv, .. } => {
                        set_rv(&mut obj, kv.mod_revision);
                        self.on_deleted(&sinfo, &obj, opts.origin != WriteOrigin::Internal).await;
                        Ok(convert::from_storage(info, obj))
                    }
                    WriteOutcome::Failed { .. } => continue,
                };
            }
            strip_rv(&mut obj);
            let bytes = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
            match self.store().put(&key, bytes, Precondition::ModRevision(rev)).await? {
                WriteOutcome::Done { kv, .. } => {
                    set_rv(&mut obj, kv.mod_revision);
                    if kind.allocates_service_addresses() {
                        self.alloc.release_unused(&current, Some(&obj)).await;
                    }
                    self.after_write(&sinfo, &obj, opts.origin != WriteOrigin::Internal).await;
                    return Ok(convert::from_storage(info, obj));
                }
                WriteOutcome::Failed { current: None } => {
                    if let Some(a) = allocation {
                        self.alloc.release_allocation(&a).await;
                    }
                    return Err(ApiError::not_found(info, name));
                }
                WriteOutcome::Failed { .. } => {
                    if let Some(a) = allocation {
                        self.alloc.release_allocation(&a).await;
                    }
                    continue;
                }
            }
        }
        Err(ApiError::stale(info, name))
    }

    /// Applies the update rules to `wanted` (in `info`'s version) given `current` (stored):
    /// admission's mutating phase, PrepareForUpdate (status or spec kept, generation),
    /// validation, then admission's validating phase.
    async fn prepare_update(
        &self,
        info: &ResourceInfo,
        sinfo: &ResourceInfo,
        current: &Value,
        wanted: Value,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let name = meta::name(current).to_string();
        if !wanted.is_object() {
            return Err(ApiError::bad_request("the body of the request must be an object"));
        }
        let wanted_name = meta::name(&wanted);
        if !wanted_name.is_empty() && wanted_name != name {
            return Err(ApiError::bad_request(format!("the name of the object ({wanted_name}) does not match the name on the URL ({name})")));
        }
        if sinfo.namespaced {
            let wns = meta::namespace(&wanted).unwrap_or("");
            if !wns.is_empty() && Some(wns) != meta::namespace(current) {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
        }
        let mut obj = convert::to_storage(info, wanted);
        let st = strategy(sinfo);
        // One set of admission attributes (one copy of the stored object) for both phases.
        let mut attrs = self.attributes(Operation::Update, sinfo, sub, meta::namespace(current), &name, None, Some(current.clone()), opts);
        match sub {
            Some(Subresource::Status) => {
                // Only status changes (plus nothing else) through the status subresource.
                let mut merged = current.clone();
                if let Some(s) = obj.get("status") {
                    merged["status"] = s.clone();
                } else if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
                if let (Some(md), Some(new_md)) = (merged.get_mut("metadata").and_then(Value::as_object_mut), obj.get("metadata").and_then(Value::as_object))
                    && let Some(rv) = new_md.get("resourceVersion")
                {
                    md.insert("resourceVersion".into(), rv.clone());
                }
                obj = merged;
            }
            _ => {
                // Immutable and system-owned metadata comes from the stored object.
                let cur_md = current.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
                let md = meta::metadata_mut(&mut obj);
                for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace", "name"] {
                    match cur_md.get(k) {
                        Some(v) => {
                            md.insert(k.into(), v.clone());
                        }
                        None => {
                            md.remove(k);
                        }
                    }
                }
                if md.get("managedFields").is_none()
                    && let Some(mf) = cur_md.get("managedFields")
                {
                    md.insert("managedFields".into(), mf.clone());
                }
                // A deleting object may only lose finalizers.
                if cur_md.get("deletionTimestamp").is_some() {
                    let old_f: Vec<Value> = cur_md.get("finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                    if let Some(new_f) = md.get("finalizers").and_then(Value::as_array)
                        && new_f.iter().any(|f| !old_f.contains(f))
                    {
                        return Err(ApiError::invalid(
                            info,
                            &name,
                            &[r8s_api::errors::FieldError::forbidden("metadata.finalizers", "no new finalizers can be added if the object is being deleted")],
                        ));
                    }
                }
                // Binding sets spec.nodeName and the PodScheduled condition in one write.
                if sub != Some(Subresource::Binding) && (info.has(Subresource::Status) || sinfo.has(Subresource::Status)) {
                    match current.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            obj.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
                st.kind().normalize(&mut obj, false);
                if sinfo.custom {
                    self.custom_schema(sinfo, &mut obj)?;
                }
                attrs.object = Some(obj);
                self.admission.admit(self, &mut attrs).await?;
                obj = attrs.object.take().unwrap_or_default();
                if st.tracks_generation() && meta::spec_part(current) != meta::spec_part(&obj) {
                    let g = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                    meta::metadata_mut(&mut obj).insert("generation".into(), json!(g + 1));
                }
            }
        }
        let mut errs = validate_object_meta(&obj, st.name_rule(), sinfo.namespaced);
        errs.extend(st.validate(&obj, Some(current)));
        if !errs.is_empty() {
            return Err(ApiError::invalid(info, &name, &errs));
        }
        attrs.object = Some(obj);
        self.admission.validate(self, &attrs).await?;
        let mut obj = attrs.object.take().unwrap_or_default();
        crate::fields::record_operation(&mut obj, Some(current), opts, &info.api_version());
        Ok(obj)
    }

    /// PUT: replace the object (or its status). Conflicts if the body's resourceVersion is stale.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let rv_missing = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_none_or(str::is_empty);
        if rv_missing && sub.is_none() && self.read(info, ns, name).await?.is_none() && info.behavior.kind.allow_create_on_update() {
            return self.create(info, ns, obj, opts).await;
        }
        self.update_with(info, ns, name, sub, opts, |_current| Ok(obj.clone())).await
    }

    /// DELETE with upstream's graceful deletion and finalizer semantics.
    pub async fn delete(&self, info: &ResourceInfo, ns: Option<&str>, name: &str, opts: &DeleteOptions) -> ApiResult<Value> {
        let sinfo = self.storage(info);
        let kind = sinfo.behavior.kind;
        if let Some(msg) = kind.protected(name) {
            return Err(ApiError::forbidden(msg).with_details(json!({"name": name, "kind": sinfo.plural})));
        }
        let key = sinfo.key(ns, name);
        let mut admitted = false;
        for _ in 0..16 {
            let Some((current, rev)) = self.read(info, ns, name).await? else {
                return Err(ApiError::not_found(info, name));
            };
            if !admitted {
                let wo = WriteOptions { dry_run: opts.dry_run, user: opts.user.clone(), ..Default::default() };
                let mut attrs = self.attributes(Operation::Delete, &sinfo, None, ns, name, None, Some(current.clone()), &wo);
                self.admission.admit(self, &mut attrs).await?;
                self.admission.validate(self, &attrs).await?;
                admitted = true;
            }
            if let Some(uid) = &opts.precondition_uid
                && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        current.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
                    ),
                ));
            }
            if let Some(prv) = &opts.precondition_rv
                && *prv != rev.to_string()
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {prv}, ResourceVersion in object meta: {rev}"),
                ));
            }
            let mut obj = current.clone();
            let already_deleting = current.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
            let mut finalizers: Vec<Value> = current.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
            if self.gc_enabled && !already_deleting {
                match opts.propagation_policy.as_deref() {
                    Some("Foreground") if !finalizers.contains(&json!("foregroundDeletion")) => finalizers.push(json!("foregroundDeletion")),
                    Some("Orphan") if !finalizers.contains(&json!("orphan")) => finalizers.push(json!("orphan")),
                    _ => {}
                }
            }
            // Graceful deletion (bound pods wait for their kubelet) and deletions that wait
            // (namespaces), as the kind says.
            let graceful = kind.graceful();
            let waits = kind.deletion_waits();
            let grace = kind.deletion_grace(&current, opts.grace_period_seconds);
            // A second graceful delete may only shorten the grace period.
            let cur_grace = current.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
            if graceful && already_deleting && grace >= cur_grace && grace != 0 {
                return Ok(convert::from_storage(info, current));
            }
            let needs_wait = !finalizers.is_empty() || grace > 0 || waits;
            if needs_wait {
                let md = meta::metadata_mut(&mut obj);
                if !already_deleting || grace > 0 || (graceful && grace == 0) {
                    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    if !already_deleting || graceful {
                        md.insert("deletionTimestamp".into(), json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
                        md.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                }
                md.insert("finalizers".into(), Value::Array(finalizers.clone()));
                if finalizers.is_empty() {
                    md.remove("finalizers");
                }
                kind.mark_deleting(&mut obj);
                let pod_done = graceful && grace == 0 && finalizers.is_empty();
                if !pod_done {
                    if opts.dry_run {
                        return Ok(convert::from_storage(info, obj));
                    }
                    if obj == current {
                        return Ok(convert::from_storage(info, current));
                    }
                    strip_rv(&mut obj);
                    let bytes = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
                    match self.store().put(&key, bytes, Precondition::ModRevision(rev)).await? {
                        WriteOutcome::Done { kv, .. } => {
                            set_rv(&mut obj, kv.mod_revision);
                            return Ok(convert::from_storage(info, obj));
                        }
                        WriteOutcome::Failed { .. } => continue,
                    }
                }
            }
            if opts.dry_run {
                return Ok(convert::from_storage(info, current));
            }
            match self.store().delete(&key, Precondition::ModRevision(rev)).await? {
                WriteOutcome::Done { kv, .. } => {
                    let mut last = current.clone();
                    set_rv(&mut last, kv.mod_revision);
                    self.on_deleted(&sinfo, &last, opts.user.is_some()).await;
                    return Ok(convert::from_storage(info, last));
                }
                WriteOutcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::stale(info, name))
    }

    async fn on_deleted(&self, sinfo: &ResourceInfo, obj: &Value, settle: bool) {
        if sinfo.group.is_empty() && sinfo.kind == "Service" {
            self.alloc.release_unused(obj, None).await;
        }
        self.after_write(sinfo, obj, settle).await;
    }

    /// Deletes everything a LIST with these options returns.
    pub async fn delete_collection(&self, info: &ResourceInfo, ns: Option<&str>, list: &ListOptions, opts: &DeleteOptions) -> ApiResult<Vec<Value>> {
        let res = self.list(info, ns, list).await?;
        let mut out = Vec::new();
        for b in res.items {
            let v: Value = serde_json::from_slice(&b).map_err(ApiError::internal)?;
            let name = meta::name(&v).to_string();
            let ons = meta::namespace(&v).map(str::to_string);
            match self.delete(info, ons.as_deref(), &name, opts).await {
                Ok(d) => out.push(d),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Stores an object as-is if missing (bootstrap of default objects).
    pub async fn ensure(&self, info: &ResourceInfo, ns: Option<&str>, obj: Value) -> ApiResult<()> {
        if self.read(info, ns, meta::name(&obj)).await?.is_some() {
            return Ok(());
        }
        match self.create(info, ns, obj, &WriteOptions { operation: "Update", ..Default::default() }).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn qualified_kind(info: &ResourceInfo) -> String {
        qualified_kind(info)
    }
}

fn alloc_error(info: &ResourceInfo, name: &str, e: crate::alloc::AllocError) -> ApiError {
    match e {
        crate::alloc::AllocError::Invalid(errs) => ApiError::invalid(info, name, &errs),
        crate::alloc::AllocError::Store(e) => e.into(),
    }
}
