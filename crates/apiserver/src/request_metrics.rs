//! Upstream's `apiserver_request_total`: resource requests counted by verb, group, version,
//! resource and subresource (what a cluster's load is made of), served on /metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::request_info::RequestInfo;

/// (verb, group, version, resource, subresource)
type Labels = (String, String, String, String, String);

#[derive(Default)]
pub struct RequestCounts {
    by_kind: Mutex<BTreeMap<Labels, u64>>,
}

impl RequestCounts {
    pub fn count(&self, info: &RequestInfo) {
        let key = (info.verb.to_uppercase(), info.api_group.clone(), info.api_version.clone(), info.resource.clone(), info.subresource.clone());
        *self.by_kind.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Prometheus text: `apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource=""} 3`.
    pub fn render(&self) -> String {
        let mut out = String::from("# TYPE apiserver_request_total counter\n");
        for ((verb, group, version, resource, sub), n) in self.by_kind.lock().unwrap().iter() {
            out.push_str(&format!(
                "apiserver_request_total{{verb=\"{verb}\",group=\"{group}\",version=\"{version}\",resource=\"{resource}\",subresource=\"{sub}\"}} {n}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_verb_and_resource() {
        let c = RequestCounts::default();
        let info = RequestInfo::new(&http::Method::PATCH, "/api/v1/namespaces/default/pods/p/status", None);
        c.count(&info);
        c.count(&info);
        assert!(
            c.render().contains("apiserver_request_total{verb=\"PATCH\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"status\"} 2\n"),
            "{}",
            c.render()
        );
    }
}
