//! Volumes on the node: each pod volume becomes a directory (or a host path) that containers
//! mount. ConfigMap, Secret, downward API and projected volumes are rewritten on every sync, so
//! their files follow the objects (env vars do not).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume};

use super::spec::{EnvSources, field_value, resource_value};
use crate::config::Config;

pub fn pod_dir(cfg: &Config, pod_uid: &str) -> PathBuf {
    cfg.pods_dir().join(pod_uid)
}

/// Lookups of the API objects volumes refer to.
pub struct Sources<'a> {
    pub env: EnvSources<'a>,
    pub pvc: &'a (dyn Fn(&str) -> Option<PersistentVolumeClaim> + Sync),
    pub pv: &'a (dyn Fn(&str) -> Option<PersistentVolume> + Sync),
}

/// Prepares every volume; returns each volume's host path. An error names the volume and what
/// is missing (it becomes a FailedMount event).
pub fn prepare(cfg: &Config, pod: &Pod, src: &Sources) -> Result<HashMap<String, PathBuf>, String> {
    let uid = super::spec::uid(pod);
    let base = pod_dir(cfg, &uid).join("volumes");
    let mut out = HashMap::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let path = if cfg.simulated && (v.host_path.is_some() || v.persistent_volume_claim.is_some() || v.empty_dir.is_some()) {
            // A simulated node has no host to share: a directory stands in.
            let dir = base.join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
            dir
        } else {
            prepare_one(&base, pod, &v, src).map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

fn prepare_one(base: &Path, pod: &Pod, v: &Volume, src: &Sources) -> Result<PathBuf, String> {
    let dir = base.join(&v.name);
    if let Some(hp) = &v.host_path {
        let p = PathBuf::from(&hp.path);
        match hp.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io)?,
            "FileOrCreate" if !p.exists() => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(&p, b"").map_err(io)?;
            }
            "Directory" if !p.is_dir() => return Err(format!("hostPath type check failed: {} is not a directory", hp.path)),
            "File" if !p.is_file() => return Err(format!("hostPath type check failed: {} is not a file", hp.path)),
            _ => {}
        }
        return Ok(p);
    }
    if let Some(ed) = &v.empty_dir {
        std::fs::create_dir_all(&dir).map_err(io)?;
        if ed.medium.as_deref() == Some("Memory") {
            mount_tmpfs(&dir)?;
        }
        return Ok(dir);
    }
    if let Some(cm) = &v.config_map {
        let files = match (src.env.config_maps)(&cm.name) {
            Some(obj) => config_map_files(&obj, cm.items.as_deref()),
            None if cm.optional == Some(true) => Vec::new(),
            None => return Err(format!("configmap \"{}\" not found", cm.name)),
        };
        write_atomic(&dir, &files, cm.default_mode)?;
        return Ok(dir);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let files = match (src.env.secrets)(&name) {
            Some(obj) => secret_files(&obj, s.items.as_deref()),
            None if s.optional == Some(true) => Vec::new(),
            None => return Err(format!("secret \"{name}\" not found")),
        };
        write_atomic(&dir, &files, s.default_mode.or(Some(0o644)))?;
        return Ok(dir);
    }
    if let Some(d) = &v.downward_api {
        let mut files = Vec::new();
        for item in d.items.iter().flatten() {
            files.push((item.path.clone(), downward_item(pod, &src.env, item)?, item.mode));
        }
        write_atomic(&dir, &files, d.default_mode)?;
        return Ok(dir);
    }
    if let Some(p) = &v.projected {
        let mut files = Vec::new();
        for s in p.sources.iter().flatten() {
            if let Some(cm) = &s.config_map {
                match (src.env.config_maps)(&cm.name) {
                    Some(obj) => files.extend(config_map_files(&obj, cm.items.as_deref())),
                    None if cm.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", cm.name)),
                }
            }
            if let Some(sec) = &s.secret {
                match (src.env.secrets)(&sec.name) {
                    Some(obj) => files.extend(secret_files(&obj, sec.items.as_deref())),
                    None if sec.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", sec.name)),
                }
            }
            if let Some(d) = &s.downward_api {
                for item in d.items.iter().flatten() {
                    files.push((item.path.clone(), downward_item(pod, &src.env, item)?, item.mode));
                }
            }
        }
        write_atomic(&dir, &files, p.default_mode)?;
        return Ok(dir);
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let pvc = (src.pvc)(&claim.claim_name).ok_or_else(|| format!("persistentvolumeclaim \"{}\" not found", claim.claim_name))?;
        let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
        let pv_name = pv_name.ok_or_else(|| format!("persistentvolumeclaim \"{}\" is not bound", claim.claim_name))?;
        let pv = (src.pv)(&pv_name).ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
        let spec = pv.spec.unwrap_or_default();
        let path = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .ok_or_else(|| format!("persistentvolume \"{pv_name}\" has no hostPath or local source"))?;
        std::fs::create_dir_all(&path).map_err(io)?;
        return Ok(PathBuf::from(path));
    }
    Err("volume type not supported by this node".into())
}

type File = (String, Vec<u8>, Option<i32>);

fn config_map_files(cm: &ConfigMap, items: Option<&[KeyToPath]>) -> Vec<File> {
    let mut all: Vec<(String, Vec<u8>)> = cm.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    all.extend(cm.binary_data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    select(all, items)
}

fn secret_files(s: &Secret, items: Option<&[KeyToPath]>) -> Vec<File> {
    select(s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(), items)
}

fn select(all: Vec<(String, Vec<u8>)>, items: Option<&[KeyToPath]>) -> Vec<File> {
    match items {
        Some(items) if !items.is_empty() => {
            items.iter().filter_map(|i| all.iter().find(|(k, _)| *k == i.key).map(|(_, v)| (i.path.clone(), v.clone(), i.mode))).collect()
        }
        _ => all.into_iter().map(|(k, v)| (k, v, None)).collect(),
    }
}

fn downward_item(pod: &Pod, env: &EnvSources, item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile) -> Result<Vec<u8>, String> {
    if let Some(f) = &item.field_ref {
        return Ok(field_value(env, &f.field_path)?.into_bytes());
    }
    if let Some(r) = &item.resource_field_ref {
        let spec = pod.spec.clone().unwrap_or_default();
        let c = spec.containers.iter().find(|c| Some(&c.name) == r.container_name.as_ref()).or(spec.containers.first()).cloned().unwrap_or_default();
        return Ok(resource_value(&c, &r.resource, r.divisor.as_ref()).into_bytes());
    }
    Ok(Vec::new())
}

/// Writes files the way upstream's atomic writer does: a fresh timestamped directory, a `..data`
/// symlink switched with a rename, and per-file symlinks into `..data`; readers never see a
/// half-written set.
fn write_atomic(dir: &Path, files: &[File], default_mode: Option<i32>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io)?;
    let data_link = dir.join("..data");
    // Unchanged content: nothing to do (keeps the files' identity stable for readers).
    if let Ok(cur) = std::fs::read_link(&data_link) {
        let cur_dir = dir.join(&cur);
        let same = files.iter().all(|(p, d, _)| std::fs::read(cur_dir.join(p)).ok().as_deref() == Some(d.as_slice())) && count_files(&cur_dir) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir_all(&ts_dir).map_err(io)?;
    for (p, data, mode) in files {
        let target = ts_dir.join(p);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&target, data).map_err(io)?;
        let m = mode.or(default_mode).unwrap_or(0o644) as u32;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(m)).map_err(io)?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io)?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp_link, &data_link).map_err(io)?;
    // Top-level names point into ..data.
    let mut tops: Vec<String> = files.iter().map(|(p, _, _)| p.split('/').next().unwrap_or(p).to_string()).collect();
    tops.sort();
    tops.dedup();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link).map_err(io)?;
        }
    }
    // Names that disappeared, and the previous timestamped directory.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with("..") && !tops.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += count_files(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

fn mount_tmpfs(dir: &Path) -> Result<(), String> {
    // Already mounted (a later sync)?
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let d = dir.display().to_string();
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(d.as_str())) {
        return Ok(());
    }
    let target = std::ffi::CString::new(d).map_err(|e| e.to_string())?;
    let fstype = c"tmpfs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(format!("mounting tmpfs: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Unmounts tmpfs volumes and removes the pod's directory once its containers are gone.
pub fn cleanup(cfg: &Config, pod_uid: &str) {
    let dir = pod_dir(cfg, pod_uid);
    let prefix = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)) {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: valid path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    #[test]
    fn atomic_writer_replaces_the_set() {
        let dir = std::env::temp_dir().join(format!("r8s-vol-{}", std::process::id()));
        super::write_atomic(&dir, &[("a".into(), b"1".to_vec(), None), ("b".into(), b"2".to_vec(), None)], None).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        super::write_atomic(&dir, &[("a".into(), b"3".to_vec(), None)], None).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"3");
        assert!(!dir.join("b").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
