//! Cluster PKI: the CA, serving and client certificates, and kubeconfig files.
//!
//! Files follow kubeadm's names under `DATA_DIR/pki/` (ca.crt/ca.key, apiserver.crt/key, ...).
//! Keys are RSA 2048 like kubeadm's, so the usual `openssl x509 -pubkey | openssl rsa -pubin`
//! pipeline computes the CA hash used by `join`.

pub mod kubeconfig;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("key error: {0}")]
    Key(String),
    #[error("kubeconfig error: {0}")]
    Kubeconfig(String),
}

pub type Result<T> = std::result::Result<T, PkiError>;

/// Generates an RSA 2048 private key, PKCS#8 PEM.
pub fn generate_rsa_key_pem() -> Result<String> {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| PkiError::Key(e.to_string()))?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| PkiError::Key(e.to_string()))?;
    Ok(pem.to_string())
}

/// The PKIX public key (PEM) of an RSA private key (for sa.pub).
pub fn rsa_public_key_pem(private_pem: &str) -> Result<String> {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).map_err(|e| PkiError::Key(e.to_string()))?;
    key.to_public_key().to_public_key_pem(LineEnding::LF).map_err(|e| PkiError::Key(e.to_string()))
}

fn key_pair(pem: &str) -> Result<KeyPair> {
    Ok(KeyPair::from_pkcs8_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256)?)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| PkiError::Io { path: parent.to_path_buf(), source })?;
    }
    fs::write(path, contents).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365 * years);
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// A certificate authority loaded from (or written to) `<name>.crt` / `<name>.key`.
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    pub fn create(cn: &str, key_pem: String) -> Result<Self> {
        let key = key_pair(&key_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyCertSign];
        validity(&mut params, 10);
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority { cert_pem: cert.pem(), key_pem })
    }

    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        Ok(CertificateAuthority { cert_pem: read(&dir.join(format!("{name}.crt")))?, key_pem: read(&dir.join(format!("{name}.key")))? })
    }

    pub fn save(&self, dir: &Path, name: &str) -> Result<()> {
        write(&dir.join(format!("{name}.crt")), &self.cert_pem, false)?;
        write(&dir.join(format!("{name}.key")), &self.key_pem, true)
    }

    /// Issues a leaf certificate signed by this CA. Returns the certificate PEM.
    pub fn issue(&self, spec: &LeafSpec, leaf_key_pem: &str) -> Result<String> {
        let ca_key = key_pair(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let leaf_key = key_pair(leaf_key_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&spec.common_name, &spec.organizations.iter().map(String::as_str).collect::<Vec<_>>());
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .filter_map(|d| d.clone().try_into().ok().map(SanType::DnsName))
            .chain(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match (spec.server, spec.client) {
            (true, true) => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            (true, false) => vec![ExtendedKeyUsagePurpose::ServerAuth],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 1);
        Ok(params.signed_by(&leaf_key, &issuer)?.pem())
    }
}

/// What a leaf certificate says about its holder.
#[derive(Clone, Debug, Default)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
}

/// A certificate and its key as PEM.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The control plane's PKI under `DATA_DIR/pki`.
pub struct ClusterPki {
    pub dir: PathBuf,
    pub ca: CertificateAuthority,
    pub apiserver: CertKey,
    pub admin: CertKey,
    /// The API server's client certificate towards kubelets (logs, exec, port-forward).
    pub kubelet_client: CertKey,
}

/// What the serving certificate must cover.
#[derive(Clone, Debug, Default)]
pub struct ServingNames {
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ClusterPki {
    /// Loads the PKI from `dir`, creating whatever is missing. Existing files are reused so a
    /// restart keeps the CA (and every kubeconfig issued from it) valid.
    pub fn ensure(dir: &Path, names: &ServingNames) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
        let have_ca = dir.join("ca.crt").exists() && dir.join("ca.key").exists();
        let have_server = dir.join("apiserver.crt").exists() && dir.join("apiserver.key").exists();
        let have_admin = dir.join("admin.crt").exists() && dir.join("admin.key").exists();
        let have_sa = dir.join("sa.key").exists();
        let have_fp = dir.join("front-proxy-ca.crt").exists();
        let have_kc = dir.join("apiserver-kubelet-client.crt").exists() && dir.join("apiserver-kubelet-client.key").exists();
        let needed = [!have_ca, !have_server, !have_admin, !have_sa, !have_fp, !have_kc || !have_ca];
        // RSA key generation dominates first start: generate the missing keys in parallel.
        let keys: Vec<Option<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = needed.iter().map(|&need| s.spawn(move || if need { Some(generate_rsa_key_pem()) } else { None })).collect();
            handles.into_iter().map(|h| h.join().expect("keygen thread")).map(|r| r.transpose()).collect::<Result<Vec<_>>>()
        })?;
        let ca = if let Some(key) = &keys[0] {
            let ca = CertificateAuthority::create("kubernetes", key.clone())?;
            ca.save(dir, "ca")?;
            ca
        } else {
            CertificateAuthority::load(dir, "ca")?
        };
        let apiserver = match &keys[1] {
            Some(key) if !have_server || !have_ca => {
                let spec = LeafSpec {
                    common_name: "kube-apiserver".into(),
                    dns_names: names.dns_names.clone(),
                    ips: names.ips.clone(),
                    server: true,
                    ..Default::default()
                };
                let cert = ca.issue(&spec, key)?;
                write(&dir.join("apiserver.crt"), &cert, false)?;
                write(&dir.join("apiserver.key"), key, true)?;
                CertKey { cert_pem: cert, key_pem: key.clone() }
            }
            _ => CertKey { cert_pem: read(&dir.join("apiserver.crt"))?, key_pem: read(&dir.join("apiserver.key"))? },
        };
        let admin = match &keys[2] {
            Some(key) => {
                let spec =
                    LeafSpec { common_name: "kubernetes-admin".into(), organizations: vec!["system:masters".into()], client: true, ..Default::default() };
                let cert = ca.issue(&spec, key)?;
                write(&dir.join("admin.crt"), &cert, false)?;
                write(&dir.join("admin.key"), key, true)?;
                CertKey { cert_pem: cert, key_pem: key.clone() }
            }
            None => CertKey { cert_pem: read(&dir.join("admin.crt"))?, key_pem: read(&dir.join("admin.key"))? },
        };
        if let Some(key) = &keys[3] {
            write(&dir.join("sa.pub"), &rsa_public_key_pem(key)?, false)?;
            write(&dir.join("sa.key"), key, true)?;
        }
        if let Some(key) = &keys[4] {
            CertificateAuthority::create("front-proxy-ca", key.clone())?.save(dir, "front-proxy-ca")?;
        }
        let kubelet_client = match &keys[5] {
            Some(key) => {
                let spec = LeafSpec {
                    common_name: "kube-apiserver-kubelet-client".into(),
                    organizations: vec!["system:masters".into()],
                    client: true,
                    ..Default::default()
                };
                let cert = ca.issue(&spec, key)?;
                write(&dir.join("apiserver-kubelet-client.crt"), &cert, false)?;
                write(&dir.join("apiserver-kubelet-client.key"), key, true)?;
                CertKey { cert_pem: cert, key_pem: key.clone() }
            }
            None => CertKey { cert_pem: read(&dir.join("apiserver-kubelet-client.crt"))?, key_pem: read(&dir.join("apiserver-kubelet-client.key"))? },
        };
        Ok(ClusterPki { dir: dir.to_path_buf(), ca, apiserver, admin, kubelet_client })
    }
}

/// The subject of a client certificate: (common name, organizations).
pub fn certificate_subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((cn, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_pki() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServingNames { dns_names: vec!["localhost".into()], ips: vec!["127.0.0.1".parse().unwrap()] };
        let first = ClusterPki::ensure(dir.path(), &names).unwrap();
        let second = ClusterPki::ensure(dir.path(), &names).unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_eq!(first.admin.cert_pem, second.admin.cert_pem);
        let der = pem_to_der(&first.admin.cert_pem);
        let (cn, orgs) = certificate_subject(&der).unwrap();
        assert_eq!(cn, "kubernetes-admin");
        assert_eq!(orgs, vec!["system:masters".to_string()]);
        assert!(dir.path().join("sa.pub").exists());
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }
}
