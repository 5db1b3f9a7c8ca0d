//! The DNS server: UDP and TCP on one port, cluster names answered from the index (rebuilt when
//! Services or EndpointSlices change), every other name forwarded to the upstream resolvers.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use r8s_client::informer::{Changes, Informers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::metrics::{self, METRICS};
use crate::records::{Data, Index, Lookup};

/// CoreDNS's kubernetes plugin answers with a 5 s TTL.
const TTL: u32 = 5;

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub domain: String,
    /// Resolvers for names outside the cluster (default: the host's /etc/resolv.conf).
    pub upstreams: Vec<SocketAddr>,
}

/// The nameservers of a resolv.conf.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Binds the port (UDP, then TCP on the same port) and serves until the process ends.
/// Returns the bound address (useful with port 0).
pub async fn serve(client: kube::Client, cfg: Config) -> anyhow::Result<SocketAddr> {
    let udp = UdpSocket::bind(cfg.bind).await.map_err(|e| anyhow::anyhow!("cluster DNS on {} (udp): {e}", cfg.bind))?;
    let addr = udp.local_addr()?;
    let tcp = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cluster DNS on {addr} (tcp): {e}"))?;
    let informers = Informers::new(client);
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let index = Arc::new(RwLock::new(Arc::new(Answers::new(Index::default()))));
    let changes = Changes::new();
    changes.watch(&services);
    changes.watch(&slices);
    {
        let (index, domain) = (index.clone(), cfg.domain.clone());
        tokio::spawn(async move {
            services.synced().await;
            slices.synced().await;
            loop {
                let (sv, sl) = (services.list(), slices.list());
                let built = Index::build(sv.iter().map(|s| s.as_ref()), sl.iter().map(|s| s.as_ref()), &domain);
                *index.write().unwrap() = Arc::new(Answers::new(built));
                changes.next(Duration::from_millis(20)).await;
            }
        });
    }
    let ctx = Arc::new(Ctx { index, upstreams: cfg.upstreams.clone() });
    let udp = Arc::new(udp);
    {
        let (udp, ctx) = (udp.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut out = Vec::with_capacity(512);
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else { continue };
                // A question answered before: the stored answer with this query's ID, sent
                // from this loop (no task, no parsing).
                metrics::inc(&METRICS.udp);
                if ctx.cached(&buf[..n], &mut out) {
                    let _ = udp.send_to(&out, peer).await;
                    continue;
                }
                let (query, udp, ctx) = (buf[..n].to_vec(), udp.clone(), ctx.clone());
                tokio::spawn(async move {
                    if let Some(answer) = ctx.answer(&query, false).await {
                        let _ = udp.send_to(&answer, peer).await;
                    }
                });
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else { continue };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                // Length-prefixed messages until the client closes or idles out.
                loop {
                    let mut len = [0u8; 2];
                    let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len)).await else { return };
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    metrics::inc(&METRICS.tcp);
                    let Some(a) = ctx.answer(&q, true).await else { return };
                    let mut out = (a.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&a);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Stored answers are bounded: names outside the cluster domain are not stored at all, but
/// NXDOMAIN answers for made-up names inside it could grow without end.
const MAX_CACHED: usize = 50_000;

/// One generation of the index, and the answers given from it so far (wire bytes after the
/// ID, keyed by the query's bytes after the ID up to the end of its question). They go when
/// the index is rebuilt.
struct Answers {
    index: Index,
    cache: RwLock<std::collections::HashMap<Vec<u8>, Arc<[u8]>>>,
}

impl Answers {
    fn new(index: Index) -> Answers {
        Answers { index, cache: RwLock::default() }
    }
}

/// The cache key of a query: header after the ID (flags and counts) and the question, exactly
/// as sent (names keep their case: some resolvers randomise it and check the echo). None for
/// anything but one plain question.
fn cache_key(query: &[u8]) -> Option<&[u8]> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] || query[6..10] != [0, 0, 0, 0] {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= query.len()).then(|| &query[2..end])
}

struct Ctx {
    index: Arc<RwLock<Arc<Answers>>>,
    upstreams: Vec<SocketAddr>,
}

fn record(name: &Name, d: &Data) -> Option<Record> {
    let rdata = match d {
        Data::A(ip) => RData::A(A(*ip)),
        Data::Cname(t) => RData::CNAME(CNAME(Name::from_ascii(format!("{t}.")).ok()?)),
        Data::Ptr(t) => RData::PTR(PTR(Name::from_ascii(format!("{t}.")).ok()?)),
        Data::Srv { port, target } => RData::SRV(SRV::new(0, 100, *port, Name::from_ascii(format!("{target}.")).ok()?)),
    };
    Some(Record::from_rdata(name.clone(), TTL, rdata))
}

impl Ctx {
    /// Writes the stored answer to `query` into `out`, if there is one.
    fn cached(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(key) = cache_key(query) else { return false };
        let answers = self.index.read().unwrap().clone();
        let cache = answers.cache.read().unwrap();
        let Some(a) = cache.get(key) else { return false };
        metrics::inc(&METRICS.cache_hits);
        // The stored answer's rcode: byte 3 of the message, which is byte 1 of what is kept.
        metrics::inc(if a.get(1).is_some_and(|b| b & 0x0f == 3) { &METRICS.nxdomain } else { &METRICS.noerror });
        out.clear();
        out.extend_from_slice(&query[..2]);
        out.extend_from_slice(a);
        true
    }

    async fn answer(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let msg = Message::from_vec(query).ok()?;
        if msg.metadata.message_type != MessageType::Query {
            return None;
        }
        let Some(q) = msg.queries.first().cloned() else {
            return Message::error_msg(msg.metadata.id, msg.metadata.op_code, ResponseCode::FormErr).to_vec().ok();
        };
        let answers = self.index.read().unwrap().clone();
        let index = &answers.index;
        let qtype = q.query_type().to_string();
        let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
        resp.metadata.recursion_desired = msg.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_query(q.clone());
        match index.lookup(&q.name().to_ascii(), &qtype) {
            Lookup::Found(data) => {
                metrics::inc(&METRICS.noerror);
                resp.metadata.authoritative = true;
                for d in &data {
                    if let Some(r) = record(q.name(), d) {
                        resp.add_answer(r);
                    }
                }
            }
            Lookup::NxDomain => {
                metrics::inc(&METRICS.nxdomain);
                resp.metadata.authoritative = true;
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            Lookup::NotOurs => return self.forward(query, msg.metadata.id, msg.metadata.op_code, tcp).await,
        }
        let wire = resp.to_vec().ok()?;
        // Cluster answers are stored for the next asker (UDP-sized ones: TCP answers the same).
        if let Some(key) = cache_key(query)
            && wire.len() <= 512
        {
            let mut cache = answers.cache.write().unwrap();
            if cache.len() < MAX_CACHED {
                cache.insert(key.to_vec(), Arc::from(&wire[2..]));
            }
        }
        Some(wire)
    }

    /// Relays the query to the first upstream that answers (over UDP; a truncated answer is
    /// passed on, and the client retries over TCP to us, which asks again over UDP).
    async fn forward(&self, query: &[u8], id: u16, op: hickory_proto::op::OpCode, _tcp: bool) -> Option<Vec<u8>> {
        metrics::inc(&METRICS.forwarded);
        for up in &self.upstreams {
            let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
            let Ok(sock) = UdpSocket::bind(bind).await else { continue };
            if sock.send_to(query, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
                return Some(buf[..n].to_vec());
            }
        }
        metrics::inc(&METRICS.servfail);
        Message::error_msg(id, op, ResponseCode::ServFail).to_vec().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::RecordType;

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    #[tokio::test]
    async fn a_repeated_question_gets_the_stored_answer_with_its_own_id() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let index = Index::build([&svc], [], "cluster.local");
        let ctx = Ctx { index: Arc::new(RwLock::new(Arc::new(Answers::new(index)))), upstreams: vec![] };
        let mut out = Vec::new();
        let q1 = query(7, "web.default.svc.cluster.local.");
        assert!(!ctx.cached(&q1, &mut out), "nothing stored yet");
        let first = ctx.answer(&q1, false).await.unwrap();
        let q2 = query(9, "web.default.svc.cluster.local.");
        assert!(ctx.cached(&q2, &mut out));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 9);
        assert_eq!(out[2..], first[2..], "the same answer");
        assert_eq!(m.answers.len(), 1);
        // Another case is another key: the echo keeps the asker's spelling.
        assert!(!ctx.cached(&query(9, "WEB.default.svc.cluster.local."), &mut out));
        assert_eq!(cache_key(&q1[..13]), None, "a cut-off question is not a key");
    }
}
