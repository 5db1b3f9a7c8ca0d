//! Images the agent brings itself: r8s's pause image (built into the binary) and the airgap
//! directory's archives (`docker save` or OCI layout tars), imported through containerd's own API
//! because CRI has no import verb. An archive is imported again only when its size or mtime changed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::containerd_api::Importer;

/// The sandbox image containerd is configured with.
pub const PAUSE_IMAGE: &str = "r8s.io/pause:1";
const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One image ready to import: its names, and every blob by digest.
#[derive(Debug, Default)]
pub struct ImageBundle {
    pub names: Vec<String>,
    /// The manifest (its media type, bytes).
    pub manifest: (String, Vec<u8>),
    pub blobs: HashMap<String, Vec<u8>>,
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Builds a single-layer OCI image from files (path in the image, mode, contents) plus symlinks,
/// with the given entrypoint. Used for the pause image, and by tests for their images.
pub fn build_image(name: &str, files: &[(&str, u32, &[u8])], symlinks: &[(&str, &str)], entrypoint: &[&str], env: &[&str]) -> anyhow::Result<ImageBundle> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.iter().map(|f| f.0).chain(symlinks.iter().map(|s| s.0)) {
        let mut p = Path::new(path.trim_start_matches('/')).parent();
        while let Some(d) = p {
            if !d.as_os_str().is_empty() {
                dirs.insert(d.to_path_buf());
            }
            p = d.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, d, std::io::empty())?;
    }
    for (path, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path.trim_start_matches('/'), *data)?;
    }
    for (path, target) in symlinks {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        b.append_link(&mut h, path.trim_start_matches('/'), target)?;
    }
    let layer = b.into_inner()?;
    let layer_digest = sha256_digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": env, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))?;
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": MT_OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
    }))?;
    let mut blobs = HashMap::new();
    blobs.insert(layer_digest, layer);
    blobs.insert(config_digest, config);
    Ok(ImageBundle { names: vec![normalize_name(name)], manifest: (MT_OCI_MANIFEST.into(), manifest), blobs })
}

pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes an image as an OCI layout tar (what `--airgap-images-dir` accepts).
pub fn write_oci_archive(img: &ImageBundle, out: &Path) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(out)?);
    let add = |b: &mut tar::Builder<std::fs::File>, path: &str, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, data)
    };
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let manifest_digest = sha256_digest(&img.manifest.1);
    let manifests: Vec<Value> = img
        .names
        .iter()
        .map(|n| {
            json!({"mediaType": img.manifest.0, "digest": manifest_digest, "size": img.manifest.1.len(),
                   "annotations": {"io.containerd.image.name": n, "org.opencontainers.image.ref.name": n.rsplit(':').next().unwrap_or("latest")}})
        })
        .collect();
    add(&mut b, "index.json", &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests}))?)?;
    add(&mut b, &format!("blobs/sha256/{}", manifest_digest.trim_start_matches("sha256:")), &img.manifest.1)?;
    for (d, data) in &img.blobs {
        add(&mut b, &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), data)?;
    }
    b.finish()?;
    Ok(())
}

/// Docker's reference normalisation: `busybox` -> `docker.io/library/busybox:latest`.
pub fn normalize_name(name: &str) -> String {
    let (repo, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_domain = repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    if let Some(d) = digest {
        full.push('@');
        full.push_str(d);
    }
    full
}

/// Reads an archive in OCI layout or `docker save` format into the images it holds.
pub fn read_archive(path: &Path) -> anyhow::Result<Vec<ImageBundle>> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path)?);
    for entry in ar.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.insert(name, data);
    }
    if let Some(index) = files.get("index.json") {
        read_oci_layout(&files, index)
    } else if let Some(manifest) = files.get("manifest.json") {
        read_docker_save(&files, manifest)
    } else {
        anyhow::bail!("{}: neither an OCI layout (index.json) nor a docker save archive (manifest.json)", path.display())
    }
}

fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> anyhow::Result<&'a Vec<u8>> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| anyhow::anyhow!("bad digest {digest}"))?;
    files.get(&format!("blobs/{alg}/{hex}")).ok_or_else(|| anyhow::anyhow!("blob {digest} missing from the archive"))
}

fn read_oci_layout(files: &HashMap<String, Vec<u8>>, index: &[u8]) -> anyhow::Result<Vec<ImageBundle>> {
    let index: Value = serde_json::from_slice(index)?;
    let mut out = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let ann = &m["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .map(str::to_string)
            .or_else(|| ann["org.opencontainers.image.ref.name"].as_str().filter(|r| r.contains('/') || r.contains(':')).map(str::to_string));
        let Some(name) = name else { continue };
        let (mt, bytes) = resolve_platform(files, m)?;
        let mut bundle = ImageBundle { names: vec![normalize_name(&name)], manifest: (mt, bytes.clone()), blobs: HashMap::new() };
        let manifest: Value = serde_json::from_slice(&bytes)?;
        for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().into_iter().flatten()) {
            let digest = d["digest"].as_str().unwrap_or_default();
            bundle.blobs.insert(digest.to_string(), blob(files, digest)?.clone());
        }
        out.push(bundle);
    }
    Ok(out)
}

/// Picks this machine's manifest out of a multi-platform index.
fn resolve_platform(files: &HashMap<String, Vec<u8>>, desc: &Value) -> anyhow::Result<(String, Vec<u8>)> {
    let digest = desc["digest"].as_str().unwrap_or_default();
    let bytes = blob(files, digest)?.clone();
    let v: Value = serde_json::from_slice(&bytes)?;
    let mt = v["mediaType"].as_str().or(desc["mediaType"].as_str()).unwrap_or(MT_OCI_MANIFEST).to_string();
    if mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST {
        let m = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["architecture"] == go_arch() && m["platform"]["os"] == "linux")
            .ok_or_else(|| anyhow::anyhow!("index {digest} has no linux/{} manifest", go_arch()))?;
        return resolve_platform(files, m);
    }
    Ok((mt, bytes))
}

fn read_docker_save(files: &HashMap<String, Vec<u8>>, manifest: &[u8]) -> anyhow::Result<Vec<ImageBundle>> {
    let entries: Vec<Value> = serde_json::from_slice(manifest)?;
    let mut out = Vec::new();
    for e in entries {
        let config_path = e["Config"].as_str().unwrap_or_default();
        let config = files.get(config_path).ok_or_else(|| anyhow::anyhow!("config {config_path} missing"))?.clone();
        let mut blobs = HashMap::new();
        let mut layers = Vec::new();
        for l in e["Layers"].as_array().into_iter().flatten() {
            let p = l.as_str().unwrap_or_default();
            let data = files.get(p).ok_or_else(|| anyhow::anyhow!("layer {p} missing"))?.clone();
            let mt = if data.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            let d = sha256_digest(&data);
            layers.push(json!({"mediaType": mt, "digest": d, "size": data.len()}));
            blobs.insert(d, data);
        }
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))?;
        blobs.insert(config_digest, config);
        let names = e["RepoTags"].as_array().into_iter().flatten().filter_map(Value::as_str).map(normalize_name).collect::<Vec<_>>();
        if names.is_empty() {
            continue;
        }
        out.push(ImageBundle { names, manifest: (MT_DOCKER_MANIFEST.into(), manifest), blobs });
    }
    Ok(out)
}

/// Imports the pause image and every archive of the airgap directory that changed since the last
/// import (recorded in DATA_DIR/agent/images-imported.json).
pub async fn import_builtin_and_airgap(cfg: &Config, endpoint: &str) -> anyhow::Result<()> {
    let importer = Importer::connect(endpoint)?;
    let pause = build_image(PAUSE_IMAGE, &[("/pause", 0o755, PAUSE_BINARY)], &[], &["/pause"], &[])?;
    importer.import(&pause).await?;
    let record_path = cfg.data_dir.join("images-imported.json");
    let mut record: BTreeMap<String, String> = std::fs::read(&record_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let Ok(dir) = std::fs::read_dir(&cfg.airgap_images_dir) else { return Ok(()) };
    let mut paths: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "tar")).collect();
    paths.sort();
    for p in paths {
        let meta = std::fs::metadata(&p)?;
        let stamp = format!("{}:{:?}", meta.len(), meta.modified().ok());
        let key = p.display().to_string();
        if record.get(&key) == Some(&stamp) {
            continue;
        }
        let bundles = read_archive(&p)?;
        for b in &bundles {
            importer.import(b).await?;
        }
        tracing::info!(archive = %key, images = ?bundles.iter().flat_map(|b| b.names.clone()).collect::<Vec<_>>(), "imported airgap images");
        record.insert(key, stamp);
        std::fs::write(&record_path, serde_json::to_vec_pretty(&record)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        assert_eq!(normalize_name("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize_name("nginx:1.21"), "docker.io/library/nginx:1.21");
        assert_eq!(normalize_name("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(normalize_name("r8s.io/pause:1"), "r8s.io/pause:1");
        assert_eq!(normalize_name("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalize_name("127.0.0.1:5000/x:2"), "127.0.0.1:5000/x:2");
    }

    #[test]
    fn oci_archive_round_trips() {
        let img = build_image("test/box:1", &[("/bin/hello", 0o755, b"#!/bin/sh\n")], &[("/bin/sh", "hello")], &["/bin/hello"], &["PATH=/bin"]).unwrap();
        let dir = std::env::temp_dir().join(format!("r8s-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.tar");
        write_oci_archive(&img, &p).unwrap();
        let back = read_archive(&p).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].names, vec!["docker.io/test/box:1".to_string()]);
        assert_eq!(back[0].manifest.1, img.manifest.1);
        assert_eq!(back[0].blobs.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
