//! containerd's own gRPC API, for what CRI cannot do: importing image archives into the
//! namespace the CRI plugin serves (k8s.io). Blobs go into the content store under a lease (so
//! the garbage collector leaves them alone mid-import) with the gc.ref labels that keep them
//! referenced from the manifest; then the image record points at the manifest. The CRI plugin
//! unpacks the layers on first use.

use std::time::Duration;

use serde_json::Value;
use tonic::transport::Channel;

use crate::images::{ImageBundle, sha256_digest};

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    pub mod containerd {
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        pub mod services {
            pub mod content {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.content.v1");
                }
            }
            pub mod images {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.images.v1");
                }
            }
            pub mod leases {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.leases.v1");
                }
            }
        }
    }
}
use pb::containerd::services::{content::v1 as content, images::v1 as images, leases::v1 as leases};
use pb::containerd::types;

/// The containerd namespace the CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";
const CHUNK: usize = 1 << 20;

pub struct Importer {
    channel: Channel,
}

fn request<T>(msg: T, lease: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_secs(120));
    r.metadata_mut().insert("containerd-namespace", CRI_NAMESPACE.parse().expect("ascii"));
    if let Some(l) = lease {
        r.metadata_mut().insert("containerd-lease", l.parse().expect("ascii lease id"));
    }
    r
}

impl Importer {
    pub fn connect(endpoint: &str) -> anyhow::Result<Importer> {
        Ok(Importer { channel: crate::grpc::unix_channel(endpoint)? })
    }

    /// Imports one image (all its names); blobs already present are not written again.
    pub async fn import(&self, img: &ImageBundle) -> anyhow::Result<()> {
        let lease_id = format!("r8s-import-{}", uuid_like());
        let mut leases = leases::leases_client::LeasesClient::new(self.channel.clone());
        let expire = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        leases.create(request(leases::CreateRequest { id: lease_id.clone(), labels: [("containerd.io/gc.expire".to_string(), expire)].into() }, None)).await?;
        let result = self.import_leased(img, &lease_id).await;
        let _ = leases.delete(request(leases::DeleteRequest { id: lease_id, sync: false }, None)).await;
        result
    }

    async fn import_leased(&self, img: &ImageBundle, lease: &str) -> anyhow::Result<()> {
        let manifest: Value = serde_json::from_slice(&img.manifest.1)?;
        let mut refs = std::collections::HashMap::new();
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default().to_string();
        refs.insert("containerd.io/gc.ref.content.config".to_string(), config_digest);
        for (i, l) in manifest["layers"].as_array().into_iter().flatten().enumerate() {
            refs.insert(format!("containerd.io/gc.ref.content.l.{i}"), l["digest"].as_str().unwrap_or_default().to_string());
        }
        for (digest, data) in &img.blobs {
            self.write_blob(digest, data, Default::default(), lease).await?;
        }
        let manifest_digest = sha256_digest(&img.manifest.1);
        self.write_blob(&manifest_digest, &img.manifest.1, refs, lease).await?;
        let mut client = images::images_client::ImagesClient::new(self.channel.clone());
        for name in &img.names {
            let image = images::Image {
                name: name.clone(),
                labels: [("io.cri-containerd.image".to_string(), "managed".to_string())].into(),
                target: Some(types::Descriptor {
                    media_type: img.manifest.0.clone(),
                    digest: manifest_digest.clone(),
                    size: img.manifest.1.len() as i64,
                    annotations: Default::default(),
                }),
                created_at: None,
                updated_at: None,
            };
            match client.create(request(images::CreateImageRequest { image: Some(image.clone()) }, Some(lease))).await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    client
                        .update(request(
                            images::UpdateImageRequest {
                                image: Some(image),
                                update_mask: Some(types::FieldMask { paths: vec!["target".into(), "labels".into()] }),
                            },
                            Some(lease),
                        ))
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn write_blob(&self, digest: &str, data: &[u8], labels: std::collections::HashMap<String, String>, lease: &str) -> anyhow::Result<()> {
        let mut client = content::content_client::ContentClient::new(self.channel.clone());
        if client.info(request(content::InfoRequest { digest: digest.to_string() }, Some(lease))).await.is_ok() {
            if !labels.is_empty() {
                let info = content::Info { digest: digest.to_string(), labels: labels.clone(), ..Default::default() };
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                client.update(request(content::UpdateRequest { info: Some(info), update_mask: Some(types::FieldMask { paths }) }, Some(lease))).await?;
            }
            return Ok(());
        }
        let reference = format!("r8s-import-{digest}");
        let mut msgs = Vec::new();
        let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(CHUNK).collect() };
        let last = chunks.len() - 1;
        let mut offset = 0i64;
        for (i, c) in chunks.into_iter().enumerate() {
            let commit = i == last;
            msgs.push(content::WriteContentRequest {
                action: if commit { content::WriteAction::Commit as i32 } else { content::WriteAction::Write as i32 },
                r#ref: reference.clone(),
                total: data.len() as i64,
                expected: digest.to_string(),
                offset,
                data: c.to_vec(),
                labels: if commit { labels.clone() } else { Default::default() },
            });
            offset += c.len() as i64;
        }
        let mut stream = match client.write(request(futures::stream::iter(msgs), Some(lease))).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(e) => return Err(anyhow::anyhow!("writing blob {digest}: {e}")),
        };
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::AlreadyExists => break,
                Err(e) => return Err(anyhow::anyhow!("writing blob {digest}: {e}")),
            }
        }
        Ok(())
    }
}

fn uuid_like() -> String {
    format!("{:016x}", rand::random::<u64>())
}
