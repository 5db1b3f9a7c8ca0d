//! Authentication: who a request comes from. Client certificates (CN = user, O = groups) are
//! verified by TLS against the cluster CA; a connection without one is anonymous.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn from_certificate(der: &[u8]) -> Option<UserInfo> {
        let (cn, orgs) = r8s_pki::certificate_subject(der)?;
        let mut groups = orgs;
        groups.push("system:authenticated".into());
        Some(UserInfo { name: cn, groups })
    }

    /// The identity of components running inside the server process.
    pub fn internal(component: &str) -> UserInfo {
        UserInfo { name: format!("system:{component}"), groups: vec!["system:masters".into(), "system:authenticated".into()] }
    }
}
