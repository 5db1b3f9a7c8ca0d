//! Prometheus metrics on the `metrics` port of the kube-dns Service (9153), named as CoreDNS's
//! so existing dashboards and alerts find them: requests by transport, responses by rcode,
//! cache hits, forwarded requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
pub struct Metrics {
    pub udp: AtomicU64,
    pub tcp: AtomicU64,
    pub noerror: AtomicU64,
    pub nxdomain: AtomicU64,
    pub servfail: AtomicU64,
    pub cache_hits: AtomicU64,
    pub forwarded: AtomicU64,
}

/// The process's counters (one DNS server per process).
pub static METRICS: Metrics = Metrics {
    udp: AtomicU64::new(0),
    tcp: AtomicU64::new(0),
    noerror: AtomicU64::new(0),
    nxdomain: AtomicU64::new(0),
    servfail: AtomicU64::new(0),
    cache_hits: AtomicU64::new(0),
    forwarded: AtomicU64::new(0),
};

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The exposition text.
pub fn render(m: &Metrics) -> String {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut s = String::new();
    s.push_str("# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n# TYPE coredns_dns_requests_total counter\n");
    s.push_str(&format!("coredns_dns_requests_total{{server=\"dns://:53\",zone=\".\",proto=\"udp\",family=\"1\"}} {}\n", g(&m.udp)));
    s.push_str(&format!("coredns_dns_requests_total{{server=\"dns://:53\",zone=\".\",proto=\"tcp\",family=\"1\"}} {}\n", g(&m.tcp)));
    s.push_str("# HELP coredns_dns_responses_total Counter of response status codes.\n# TYPE coredns_dns_responses_total counter\n");
    for (rcode, c) in [("NOERROR", &m.noerror), ("NXDOMAIN", &m.nxdomain), ("SERVFAIL", &m.servfail)] {
        s.push_str(&format!("coredns_dns_responses_total{{server=\"dns://:53\",zone=\".\",rcode=\"{rcode}\"}} {}\n", g(c)));
    }
    s.push_str("# HELP coredns_cache_hits_total The count of cache hits.\n# TYPE coredns_cache_hits_total counter\n");
    s.push_str(&format!("coredns_cache_hits_total{{server=\"dns://:53\",type=\"success\"}} {}\n", g(&m.cache_hits)));
    s.push_str("# HELP coredns_forward_requests_total Counter of requests made per upstream.\n# TYPE coredns_forward_requests_total counter\n");
    s.push_str(&format!("coredns_forward_requests_total {}\n", g(&m.forwarded)));
    s
}

/// Serves /metrics (and /health, answering OK as CoreDNS's health plugin) on `addr`; returns
/// the bound address.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("DNS metrics on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.ok().and_then(|r| r.ok()).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, ctype, body) = match path.as_str() {
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&METRICS)),
                    "/health" => ("200 OK", "text/plain; charset=utf-8", "OK".to_string()),
                    _ => ("404 Not Found", "text/plain; charset=utf-8", "404 page not found\n".to_string()),
                };
                let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_coredns_names_them() {
        let m = Metrics::default();
        inc(&m.udp);
        inc(&m.udp);
        inc(&m.nxdomain);
        let text = render(&m);
        assert!(text.contains("coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",proto=\"udp\",family=\"1\"} 2"), "{text}");
        assert!(text.contains("rcode=\"NXDOMAIN\"} 1"), "{text}");
    }
}
