//! Image pulls for containers: imagePullPolicy, imagePullSecrets (dockerconfigjson), the
//! Pulling/Pulled/Failed/BackOff events and ErrImagePull -> ImagePullBackOff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::cri::{Runtime, pb, req};

type Backoff = Mutex<HashMap<(String, String), (Duration, Instant)>>;

/// The registry host of an image reference, as docker config files key it.
fn registry_of(image: &str) -> String {
    let full = crate::images::normalize_name(image);
    full.split('/').next().unwrap_or("docker.io").to_string()
}

/// Credentials for the image from the pod's pull secrets (`.dockerconfigjson` or `.dockercfg`).
pub fn auth_for(image: &str, secrets: &[Secret]) -> Option<pb::AuthConfig> {
    let host = registry_of(image);
    for s in secrets {
        let data = s.data.clone().unwrap_or_default();
        let cfg: serde_json::Value = if let Some(d) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&d.0).ok()?.get("auths").cloned()?
        } else if let Some(d) = data.get(".dockercfg") {
            serde_json::from_slice(&d.0).ok()?
        } else {
            continue;
        };
        for (k, v) in cfg.as_object()? {
            let key_host = k.trim_start_matches("https://").trim_start_matches("http://").split('/').next().unwrap_or("");
            let matches = key_host == host || (host == "docker.io" && (key_host == "index.docker.io" || key_host == "registry-1.docker.io"));
            if !matches {
                continue;
            }
            let mut username = v["username"].as_str().unwrap_or_default().to_string();
            let mut password = v["password"].as_str().unwrap_or_default().to_string();
            if let Some(auth) = v["auth"].as_str()
                && let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Some((u, p)) = String::from_utf8_lossy(&dec).split_once(':')
            {
                username = u.to_string();
                password = p.to_string();
            }
            return Some(pb::AuthConfig { username, password, server_address: key_host.to_string(), ..Default::default() });
        }
    }
    None
}

fn pull_policy(c: &Container) -> String {
    c.image_pull_policy.clone().unwrap_or_else(|| {
        let img = c.image.clone().unwrap_or_default();
        let last = img.rsplit('/').next().unwrap_or("");
        if img.contains('@') || (last.contains(':') && !last.ends_with(":latest")) { "IfNotPresent".into() } else { "Always".into() }
    })
}

/// Makes the image present; returns the reference to create the container with, or the
/// waiting reason, message and retry delay.
#[allow(clippy::too_many_arguments)]
pub async fn ensure(
    rt: &Runtime,
    recorder: &r8s_client::events::Recorder,
    pod: &Pod,
    c: &Container,
    sandbox: &pb::PodSandboxConfig,
    secrets: &[Secret],
    backoff: &Backoff,
    uid: &str,
) -> Result<String, (String, String, Duration)> {
    let image = c.image.clone().unwrap_or_default();
    let policy = pull_policy(c);
    let spec = pb::ImageSpec { image: image.clone(), annotations: Default::default() };
    let present = rt
        .images
        .clone()
        .image_status(req(pb::ImageStatusRequest { image: Some(spec.clone()), verbose: false }, Duration::from_secs(30)))
        .await
        .ok()
        .and_then(|r| r.into_inner().image)
        .map(|i| i.id);
    if policy != "Always"
        && let Some(id) = &present
    {
        recorder.normal(pod, "Pulled", format!("Container image \"{image}\" already present on machine"));
        let _ = id;
        return Ok(image);
    }
    if policy == "Never" {
        let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
        recorder.warning(pod, "ErrImageNeverPull", msg.clone());
        return Err(("ErrImageNeverPull".into(), msg, Duration::from_secs(30)));
    }
    let key = (uid.to_string(), format!("image:{}", c.name));
    let now = Instant::now();
    if let Some((_, not_before)) = backoff.lock().unwrap().get(&key).cloned()
        && now < not_before
    {
        recorder.normal(pod, "BackOff", format!("Back-off pulling image \"{image}\""));
        return Err(("ImagePullBackOff".into(), format!("Back-off pulling image \"{image}\""), not_before - now));
    }
    recorder.normal(pod, "Pulling", format!("Pulling image \"{image}\""));
    let started = Instant::now();
    let auth = auth_for(&image, secrets);
    match rt
        .images
        .clone()
        .pull_image(req(pb::PullImageRequest { image: Some(spec), auth, sandbox_config: Some(sandbox.clone()) }, Duration::from_secs(600)))
        .await
    {
        Ok(r) => {
            backoff.lock().unwrap().remove(&key);
            let took = started.elapsed().as_secs_f64();
            recorder.normal(pod, "Pulled", format!("Successfully pulled image \"{image}\" in {took:.3}s ({took:.3}s including waiting)"));
            let _ = r;
            Ok(image)
        }
        Err(e) => {
            let mut b = backoff.lock().unwrap();
            let delay = b.get(&key).map(|(d, _)| (*d * 2).min(Duration::from_secs(300))).unwrap_or(Duration::from_secs(10));
            b.insert(key, (delay, Instant::now() + delay));
            let msg = format!("Failed to pull image \"{image}\": {}", e.message());
            recorder.warning(pod, "Failed", msg.clone());
            recorder.warning(pod, "Failed", "Error: ErrImagePull".into());
            Err(("ErrImagePull".into(), msg, delay))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pull_secret_matches_registry_host() {
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64::Engine::encode(&base64::engine::general_purpose::STANDARD,
                br#"{"auths":{"reg.test:5000":{"auth":"dTpw"}}}"#)}
        }))
        .unwrap();
        let a = super::auth_for("reg.test:5000/app:1", std::slice::from_ref(&s)).unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        assert!(super::auth_for("busybox", &[s]).is_none());
    }
}
