//! WATCH: streams of `{"type": ..., "object": ...}` lines served from the watch cache, falling
//! back to the store's history when a client resumes from before the cache's window.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use r8s_api::ResourceInfo;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::cache::{CacheEntry, CacheEvent, EventKind, SubscribeError, cache_event};
use crate::handlers::AppState;
use crate::registry::ListOptions;
use crate::request::Output;
use crate::status::{ApiError, ApiResult};
use crate::{convert, table};

struct Encoder {
    state: Arc<AppState>,
    info: Arc<ResourceInfo>,
    out: Output,
    query: HashMap<String, String>,
}

impl Encoder {
    fn event(&self, kind: &str, obj: &CacheEntry) -> Bytes {
        let mut buf = Vec::with_capacity(obj.bytes.len() + 32);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(kind.as_bytes());
        buf.extend_from_slice(b"\",\"object\":");
        if self.out == Output::Json && !convert::needs_conversion(&self.info) {
            buf.extend_from_slice(&obj.bytes);
        } else {
            let v = convert::from_storage(&self.info, obj.value());
            let rendered = match self.out {
                Output::Table => table::table(&self.state, &self.info, &[v], None, &self.query),
                Output::PartialMetadata => table::partial(&v),
                _ => v,
            };
            buf.extend_from_slice(&serde_json::to_vec(&rendered).unwrap_or_default());
        }
        buf.extend_from_slice(b"}\n");
        Bytes::from(buf)
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": md});
        let mut buf = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap();
        buf.push(b'\n');
        Bytes::from(buf)
    }

    fn error(&self, e: &ApiError) -> Bytes {
        let mut buf = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap();
        buf.push(b'\n');
        Bytes::from(buf)
    }
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, Infallible>>, out: Output) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let ct = if out == Output::Table { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    (StatusCode::OK, [(http::header::CONTENT_TYPE, ct), (http::header::CACHE_CONTROL, "no-cache, private")], body).into_response()
}

pub async fn serve(
    state: Arc<AppState>,
    info: Arc<ResourceInfo>,
    ns: Option<String>,
    opts: ListOptions,
    out: Output,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    let sinfo = state.catalog.storage_info(&info);
    let cache = state.catalog.cache(&sinfo).ok_or_else(ApiError::method_not_allowed)?;
    let rv = opts.resource_version.clone().unwrap_or_default();
    let send_initial = crate::handlers::query_bool(query, "sendInitialEvents");
    let bookmarks = crate::handlers::query_bool(query, "allowWatchBookmarks");
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs).unwrap_or(Duration::from_secs(1800));
    let from: Option<i64> = if rv.is_empty() || rv == "0" || send_initial {
        None
    } else {
        Some(rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?)
    };
    let enc = Arc::new(Encoder { state: state.clone(), info: info.clone(), out, query: query.clone() });
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let ns_filter = if sinfo.namespaced { ns.clone() } else { None };
    let prefix = match &ns_filter {
        Some(n) => sinfo.namespace_prefix(n),
        None => sinfo.key_prefix(),
    };
    let store = state.catalog.store().clone();
    if let Some(r) = from {
        let compacted = store.compacted_revision().await?;
        if r < compacted {
            let e = ApiError::gone(format!("too old resource version: {r} ({compacted})"));
            let _ = tx.send(Ok(enc.error(&e))).await;
            return Ok(stream_response(rx, out));
        }
        if r > cache.revision() && !cache.wait_for(r, Duration::from_secs(3)).await {
            return Err(ApiError::timeout(format!("Too large resource version: {r}, current: {}", cache.revision())));
        }
    }
    let labels = opts.label_selector.clone();
    let fields = opts.field_selector.clone();
    let filter = move |ev: &CacheEvent| ev.for_watcher(ns_filter.as_deref(), &labels, &fields);
    match cache.subscribe(from, &prefix) {
        Ok(sub) => {
            let catch_up = cache.clone();
            let catch_up_prefix = prefix.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let mut last_rev = from.unwrap_or(sub.rev);
                for e in &sub.initial {
                    if e.matches(None, &opts.label_selector, &opts.field_selector) && tx.send(Ok(enc.event("ADDED", e))).await.is_err() {
                        return;
                    }
                }
                if from.is_none() {
                    last_rev = sub.rev;
                }
                if send_initial && tx.send(Ok(enc.bookmark(sub.rev, true))).await.is_err() {
                    return;
                }
                for ev in &sub.replay {
                    if let Some(k) = filter(ev)
                        && tx.send(Ok(enc.event(k.as_str(), &ev.obj))).await.is_err()
                    {
                        return;
                    }
                    last_rev = ev.rev;
                }
                let mut live = sub.live;
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = &mut deadline => return,
                        _ = tick.tick(), if bookmarks => {
                            let r = last_rev.max(0);
                            if tx.send(Ok(enc.bookmark(r, false))).await.is_err() { return; }
                        }
                        ev = live.recv() => match ev {
                            Ok(ev) => {
                                if ev.rev <= last_rev { continue; }
                                last_rev = ev.rev;
                                if let Some(k) = filter(&ev)
                                    && tx.send(Ok(enc.event(k.as_str(), &ev.obj))).await.is_err() { return; }
                            }
                            // Fell behind the live feed: catch up from the cache's window of
                            // recent events (or end the watch if even that has moved on).
                            Err(broadcast::error::RecvError::Lagged(_)) => match catch_up.subscribe(Some(last_rev), &catch_up_prefix) {
                                Ok(again) => {
                                    for ev in &again.replay {
                                        if ev.rev <= last_rev { continue; }
                                        last_rev = ev.rev;
                                        if let Some(k) = filter(ev)
                                            && tx.send(Ok(enc.event(k.as_str(), &ev.obj))).await.is_err() { return; }
                                    }
                                    live = again.live;
                                }
                                Err(_) => return,
                            },
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        _ = tx.closed() => return,
                    }
                }
            });
        }
        Err(SubscribeError::TooOld) => {
            // Resume from the store's durable history (after a restart, or past the window).
            let r = from.unwrap_or(0);
            let mut srx = store.watch(&prefix, r + 1).await.map_err(ApiError::from)?;
            let sinfo = sinfo.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                tick.tick().await;
                let mut last_rev = r;
                loop {
                    tokio::select! {
                        _ = &mut deadline => return,
                        _ = tick.tick(), if bookmarks => {
                            if tx.send(Ok(enc.bookmark(last_rev, false))).await.is_err() { return; }
                        }
                        batch = srx.recv() => match batch {
                            Some(Ok(b)) => {
                                for e in &b.events {
                                    let Some(ev) = cache_event(&sinfo, e) else { continue };
                                    if let Some(k) = filter(&ev)
                                        && tx.send(Ok(enc.event(k.as_str(), &ev.obj))).await.is_err() { return; }
                                }
                                last_rev = last_rev.max(b.revision);
                            }
                            Some(Err(e)) => { let _ = tx.send(Ok(enc.error(&ApiError::from(e)))).await; return; }
                            None => return,
                        },
                        _ = tx.closed() => return,
                    }
                }
            });
        }
    }
    let _ = EventKind::Added;
    Ok(stream_response(rx, out))
}
