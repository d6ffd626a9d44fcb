//! S3-compatible object storage for recordings. The local recordings
//! directory is the spool: each chunk is uploaded once it is sealed, while
//! the session runs, and the manifest last; a recording leaves the spool
//! only when all of it is stored. After a restart the upload simply goes on
//! from what is on disk.

use crate::{RecordError, Recordings};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::Path;
use std::sync::Arc;

/// Where recordings are stored, and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// `https://s3.eu-west-1.amazonaws.com`, or any S3-compatible server.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Keys are `<prefix>/<session id>/<file>`.
    pub prefix: String,
    /// Keep each recording in the data directory once it is stored.
    pub keep_local: bool,
}

#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    keep_local: bool,
}

/// The name of the file, in a recording's directory, that lists the chunks
/// already stored.
const UPLOADED: &str = ".uploaded";

fn remote_error(e: impl std::fmt::Display) -> RecordError {
    RecordError::Write(format!("object storage: {e}"))
}

impl Remote {
    pub fn new(settings: &S3Settings) -> Result<Remote, RecordError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(remote_error)?;
        Ok(Remote {
            store: Arc::new(store),
            prefix: settings.prefix.trim_matches('/').to_string(),
            keep_local: settings.keep_local,
        })
    }

    fn key(&self, id: &str, file: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(format!("{id}/{file}"))
        } else {
            ObjectPath::from(format!("{}/{id}/{file}", self.prefix))
        }
    }

    /// Stores what the spool holds and the store does not: sealed chunks of
    /// running sessions, and whole finished recordings (which then leave
    /// the spool, unless kept). Returns how many files were stored.
    pub async fn upload_pending(&self, recordings: &Recordings) -> Result<usize, RecordError> {
        let mut stored = 0;
        let mut first_error = None;
        for id in recordings.ids()? {
            // One recording that cannot be stored does not hold up the rest.
            match self.upload_one(recordings, &id).await {
                Ok(n) => stored += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if stored == 0 => Err(e),
            _ => Ok(stored),
        }
    }

    async fn upload_one(&self, recordings: &Recordings, id: &str) -> Result<usize, RecordError> {
        let id = id.to_string();
        let mut stored = 0;
        {
            let dir = recordings.path(&id);
            let finished = dir.join("manifest.json").exists();
            if finished && dir.join(".stored").exists() {
                return Ok(0);
            }
            let chunks = crate::read::chunk_files(&dir)?;
            // A running session's last chunk is still being written.
            let sealed = if finished {
                chunks.len()
            } else {
                chunks.len().saturating_sub(1)
            };
            let done = std::fs::read_to_string(dir.join(UPLOADED)).unwrap_or_default();
            for (_, path) in chunks.iter().take(sealed) {
                let name = file_name(path);
                if done.lines().any(|l| l == name) {
                    continue;
                }
                let bytes = std::fs::read(path).map_err(|e| RecordError::Write(e.to_string()))?;
                self.store
                    .put(&self.key(&id, &name), PutPayload::from(bytes))
                    .await
                    .map_err(remote_error)?;
                append_line(&dir.join(UPLOADED), &name)?;
                stored += 1;
            }
            if finished {
                let manifest = std::fs::read(dir.join("manifest.json"))
                    .map_err(|e| RecordError::Write(e.to_string()))?;
                self.store
                    .put(&self.key(&id, "manifest.json"), PutPayload::from(manifest))
                    .await
                    .map_err(remote_error)?;
                stored += 1;
                if self.keep_local {
                    std::fs::write(dir.join(".stored"), b"")
                        .map_err(|e| RecordError::Write(e.to_string()))?;
                } else {
                    std::fs::remove_dir_all(&dir).map_err(|e| RecordError::Write(e.to_string()))?;
                }
            }
        }
        Ok(stored)
    }

    /// The ids of the recordings in the store.
    pub async fn ids(&self) -> Result<Vec<String>, RecordError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(remote_error)?;
        let mut ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Copies recording `id` from the store into `dir/<id>/`.
    pub async fn download(&self, id: &str, dir: &Path) -> Result<(), RecordError> {
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(RecordError::NotFound(id.to_string()));
        }
        let into = dir.join(id);
        std::fs::create_dir_all(&into).map_err(|e| RecordError::Write(e.to_string()))?;
        let prefix = self.key(id, "");
        let prefix = ObjectPath::from(prefix.as_ref().trim_end_matches('/'));
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(remote_error)?;
        if listing.objects.is_empty() {
            return Err(RecordError::NotFound(id.to_string()));
        }
        for object in listing.objects {
            let Some(name) = object.location.filename().map(str::to_string) else {
                continue;
            };
            if name.contains(['/', '\\']) || name.starts_with('.') {
                continue;
            }
            let bytes = self
                .store
                .get(&object.location)
                .await
                .map_err(remote_error)?
                .bytes()
                .await
                .map_err(remote_error)?;
            std::fs::write(into.join(&name), &bytes)
                .map_err(|e| RecordError::Write(e.to_string()))?;
        }
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn append_line(path: &Path, line: &str) -> Result<(), RecordError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| RecordError::Write(e.to_string()))?;
    writeln!(file, "{line}").map_err(|e| RecordError::Write(e.to_string()))
}
