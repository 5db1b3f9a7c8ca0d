//! The built-in ingress controller (IngressClass `r8s`, the default class): every agent serves
//! HTTP on its node's port 80 and routes each request by host and path (Exact, then the
//! longest Prefix) to the backend Service's cluster IP, which the service proxy spreads over
//! the endpoints. HTTPS on port 443 terminates TLS with the certificate of the host's
//! `spec.tls` Secret (`tls`), then routes the same way. Ingresses of the class get the Ready
//! nodes' addresses in status.loadBalancer, as k3s's bundled Traefik does.

pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Changes, Informers};

pub const CLASS: &str = "r8s";
pub const CONTROLLER: &str = "r8s.io/ingress";

#[derive(Debug, Clone)]
pub struct Config {
    pub http: SocketAddr,
    /// HTTPS (None: not served).
    pub https: Option<SocketAddr>,
}

/// One routable path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<String>,
    pub path: String,
    pub exact: bool,
    /// Where it goes: cluster IP and port of the backend Service.
    pub target: SocketAddr,
}

/// Whether the Ingress is ours: class `r8s`, or no class when `r8s` is the default.
fn ours(ing: &Ingress, default_is_ours: bool) -> bool {
    match ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
        Some(c) => c == CLASS,
        None => default_is_ours,
    }
}

/// The routing table from every Ingress of the class, most specific first.
pub fn routes(ingresses: &[Arc<Ingress>], services: &[Arc<Service>], default_is_ours: bool) -> Vec<Route> {
    let target = |ns: &str, b: &k8s_openapi::api::networking::v1::IngressBackend| -> Option<SocketAddr> {
        let sb = b.service.as_ref()?;
        let svc = services.iter().find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(sb.name.as_str()))?;
        let spec = svc.spec.as_ref()?;
        let ip: std::net::IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
        let want = sb.port.as_ref()?;
        let port = spec.ports.iter().flatten().find(|p| want.number == Some(p.port) || (want.name.is_some() && want.name == p.name))?.port;
        Some(SocketAddr::new(ip, port as u16))
    };
    let mut out = Vec::new();
    for ing in ingresses.iter().filter(|i| ours(i, default_is_ours)) {
        let ns = ing.namespace().unwrap_or_default();
        let Some(spec) = ing.spec.as_ref() else { continue };
        for rule in spec.rules.iter().flatten() {
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                if let Some(t) = target(&ns, &p.backend) {
                    out.push(Route {
                        host: rule.host.clone().filter(|h| !h.is_empty()),
                        path: p.path.clone().unwrap_or_else(|| "/".into()),
                        exact: p.path_type == "Exact",
                        target: t,
                    });
                }
            }
        }
        if let Some(t) = spec.default_backend.as_ref().and_then(|b| target(&ns, b)) {
            out.push(Route { host: None, path: "/".into(), exact: false, target: t });
        }
    }
    sort_routes(&mut out);
    out
}

/// Host rules before catch-alls, Exact before Prefix, longer prefixes first.
fn sort_routes(routes: &mut [Route]) {
    routes.sort_by_key(|r| std::cmp::Reverse((r.host.is_some(), r.exact, r.path.len())));
}

/// Prefix matching is by path element: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
fn path_matches(r: &Route, path: &str) -> bool {
    if r.exact {
        return path == r.path;
    }
    let prefix = r.path.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

fn host_matches(r: &Route, host: &str) -> bool {
    match &r.host {
        None => true,
        Some(h) if h.starts_with("*.") => host.ends_with(&h[1..]) && host[..host.len() - h.len() + 1].find('.').is_none(),
        Some(h) => h.eq_ignore_ascii_case(host),
    }
}

pub fn pick<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    let host = host.split(':').next().unwrap_or(host);
    routes.iter().find(|r| host_matches(r, host) && path_matches(r, path))
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn plain(code: http::StatusCode, text: &str) -> http::Response<Body> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(bytes::Bytes::from(text.to_string())).map_err(|never| match never {}).boxed();
    http::Response::builder().status(code).header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8").body(body).expect("response")
}

/// Keep-alive connections to backends, reused across requests (per cluster IP and port).
type Upstream = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, hyper::body::Incoming>;

fn upstream() -> Upstream {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// Whether the client asks to switch protocols (WebSocket and the like).
fn is_upgrade(req: &http::Request<hyper::body::Incoming>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// An upgrade request goes to the backend on a connection of its own; once the backend
/// switches protocols (101), the two connections are spliced until either side closes.
async fn forward_upgrade(route: Route, mut req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
    use http_body_util::BodyExt;
    let bad_gateway = || plain(http::StatusCode::BAD_GATEWAY, "502 Bad Gateway\n");
    let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(route.target)).await else {
        return bad_gateway();
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await else {
        return bad_gateway();
    };
    tokio::spawn(conn.with_upgrades());
    let client_side = hyper::upgrade::on(&mut req);
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => return bad_gateway(),
    };
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let backend_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(b)) = (client_side.await, backend_side.await) {
                let (mut c, mut b) = (hyper_util::rt::TokioIo::new(c), hyper_util::rt::TokioIo::new(b));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
            }
        });
    }
    resp.map(|b| b.boxed())
}

async fn forward(client: &Upstream, route: Route, mut req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
    use http_body_util::BodyExt;
    if is_upgrade(&req) {
        return forward_upgrade(route, req).await;
    }
    // The request goes to the Service's address; its Host header stays the client's.
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Ok(uri) = format!("http://{}{path}", route.target).parse::<http::Uri>() else {
        return plain(http::StatusCode::BAD_REQUEST, "400 Bad Request\n");
    };
    *req.uri_mut() = uri;
    match client.request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(_) => plain(http::StatusCode::BAD_GATEWAY, "502 Bad Gateway\n"),
    }
}

/// Serves HTTP/1.1 on one client connection (plain or TLS), routing each request.
async fn serve_connection<I>(io: I, table: Arc<RwLock<Vec<Route>>>, client: Upstream, scheme: &'static str)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().host().map(str::to_string))
            .unwrap_or_default();
        let route = pick(&table.read().unwrap(), &host, req.uri().path()).cloned();
        req.headers_mut().insert("x-forwarded-proto", http::HeaderValue::from_static(scheme));
        let client = client.clone();
        async move {
            Ok::<_, std::convert::Infallible>(match route {
                Some(r) => forward(&client, r, req).await,
                None => plain(http::StatusCode::NOT_FOUND, "404 page not found\n"),
            })
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(io), svc).with_upgrades().await;
}

/// Serves until the process ends.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    let informers = Informers::new(client.clone());
    let (ings, svcs, classes, nodes) = (informers.get::<Ingress>(), informers.get::<Service>(), informers.get::<IngressClass>(), informers.get::<Node>());
    let secrets = cfg.https.map(|_| informers.get::<Secret>());
    let table: Arc<RwLock<Vec<Route>>> = Arc::default();
    let upstream = upstream();
    let changes = Changes::new();
    changes.watch(&ings);
    changes.watch(&svcs);
    changes.watch(&classes);
    changes.watch(&nodes);
    if let Some(secrets) = &secrets {
        // Only TLS secrets can matter: other changes (service account tokens...) wake nothing.
        changes.watch_if(secrets, |o, n| o.or(n).and_then(|s| s.type_.as_deref()) == Some("kubernetes.io/tls"));
    }
    let listener = tokio::net::TcpListener::bind(cfg.http).await.map_err(|e| anyhow::anyhow!("ingress on {}: {e}", cfg.http))?;
    {
        let (table, client) = (table.clone(), upstream.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(tcp, table.clone(), client.clone(), "http"));
            }
        });
    }
    let https = match cfg.https {
        // HTTPS is an addition: a port that cannot be had leaves HTTP serving.
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "ingress HTTPS port unavailable; serving HTTP only");
                None
            }
        },
        None => None,
    };
    let resolver = match https {
        Some(listener) => {
            let resolver = Arc::new(tls::Resolver { by_host: RwLock::default(), default: Arc::new(tls::default_key()?) });
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())?);
            let (table, client) = (table.clone(), upstream.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let _ = tcp.set_nodelay(true);
                    let (acceptor, table, client) = (acceptor.clone(), table.clone(), client.clone());
                    tokio::spawn(async move {
                        if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                            serve_connection(tls, table, client, "https").await;
                        }
                    });
                }
            });
            Some(resolver)
        }
        None => None,
    };
    ings.synced().await;
    svcs.synced().await;
    classes.synced().await;
    nodes.synced().await;
    if let Some(s) = &secrets {
        s.synced().await;
    }
    loop {
        let default_is_ours = classes
            .list()
            .iter()
            .any(|c| c.name_any() == CLASS && c.annotations().get("ingressclass.kubernetes.io/is-default-class").map(String::as_str) == Some("true"));
        let ingresses = ings.list();
        *table.write().unwrap() = routes(&ingresses, &svcs.list(), default_is_ours);
        if let (Some(resolver), Some(secrets)) = (&resolver, &secrets) {
            let mine: Vec<&Ingress> = ingresses.iter().map(|i| i.as_ref()).filter(|i| ours(i, default_is_ours)).collect();
            *resolver.by_host.write().unwrap() = tls::certificates(&mine, |ns, name| secrets.get(ns, name));
        }
        let ips = r8s_api::matching::ready_node_addresses(&nodes.list());
        for ing in ingresses.iter().filter(|i| ours(i, default_is_ours)) {
            let have: Vec<String> = ing
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect();
            if have != ips {
                let api: Api<Ingress> = Api::namespaced(client.clone(), &ing.namespace().unwrap_or_default());
                let lb: Vec<serde_json::Value> = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
                let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": lb}}});
                if let Err(e) = api.patch_status(&ing.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    tracing::debug!(error = %e, "ingress status");
                }
            }
        }
        changes.next(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, path: &str, exact: bool, port: u16) -> Route {
        Route { host: host.map(str::to_string), path: path.into(), exact, target: SocketAddr::from(([10, 96, 0, 1], port)) }
    }

    #[test]
    fn most_specific_route_wins() {
        let mut routes =
            vec![r(None, "/", false, 1), r(Some("a.example"), "/", false, 2), r(Some("a.example"), "/api", false, 3), r(Some("a.example"), "/api/v1", true, 4)];
        sort_routes(&mut routes);
        let port = |h: &str, p: &str| pick(&routes, h, p).map(|r| r.target.port());
        assert_eq!(port("a.example", "/api/v1"), Some(4));
        assert_eq!(port("a.example:80", "/api/v2"), Some(3));
        assert_eq!(port("a.example", "/apix"), Some(2), "prefixes match whole path elements");
        assert_eq!(port("b.example", "/api"), Some(1));
    }
}
