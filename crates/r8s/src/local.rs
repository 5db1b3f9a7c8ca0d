//! The in-process transport: a kube-rs client whose requests go straight to the API server's
//! handler (same authentication identity model, admission and validation as a remote
//! client), so in-process components use the API exactly as remote ones do.

use std::convert::Infallible;
use std::sync::Arc;

use r8s_apiserver::authn::UserInfo;
use r8s_apiserver::handlers::AppState;
use r8s_apiserver::pipeline::{handle, in_process_request};

pub fn client(state: Arc<AppState>, component: &str) -> kube::Client {
    let user = UserInfo::internal(component);
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let state = state.clone();
        let user = user.clone();
        async move {
            let req = in_process_request(user, req.map(axum::body::Body::new));
            Ok::<_, Infallible>(handle(state, req).await)
        }
    });
    kube::Client::new(svc, "default")
}
