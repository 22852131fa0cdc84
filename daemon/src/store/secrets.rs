//! Secrets (refresh tokens, client secrets) in the OS keychain through `keyring-core`, or,
//! where no keychain can be reached, in a 0600 file with a loud warning (what `gh auth`
//! does), or nowhere when the config demands the keychain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::methods::{SecretBackend, SecretStoreStatus};

use crate::config::SecretStoreChoice;
use crate::secret::Secret;

/// Service name of every keychain entry.
const SERVICE: &str = "mcp-authd";
/// A keychain call that takes longer is treated as failed: a hung Secret Service must not
/// hang the daemon.
const KEYCHAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    #[error("the OS keychain cannot be used: {0}")]
    Keychain(String),
    #[error("the OS keychain did not answer within {} s", KEYCHAIN_TIMEOUT.as_secs())]
    Timeout,
    #[error("the secrets file {path} cannot be used: {reason}")]
    File { path: String, reason: String },
}

enum Backend {
    Keychain {
        name: &'static str,
    },
    File {
        path: PathBuf,
        lock: tokio::sync::Mutex<()>,
    },
}

pub struct SecretStore {
    backend: Backend,
    warning: Option<String>,
}

impl SecretStore {
    /// Picks and probes the backend as the config says.
    pub async fn open(
        choice: SecretStoreChoice,
        data_dir: &Path,
    ) -> Result<Arc<SecretStore>, SecretStoreError> {
        let file = || Backend::File {
            path: data_dir.join("secrets.json"),
            lock: tokio::sync::Mutex::new(()),
        };
        let store = match choice {
            SecretStoreChoice::File => SecretStore {
                backend: file(),
                warning: Some(format!(
                    "secrets are kept in the plain file {} (mode 0600) because the config sets secret_store = \"file\"",
                    data_dir.join("secrets.json").display()
                )),
            },
            SecretStoreChoice::Keychain => SecretStore {
                backend: keychain().await?,
                warning: None,
            },
            SecretStoreChoice::Auto => match keychain().await {
                Ok(backend) => SecretStore {
                    backend,
                    warning: None,
                },
                Err(e) => {
                    let warning = format!(
                        "no OS keychain could be used ({e}); secrets are kept in the plain file {} (mode 0600). \
                         Unlock or install a keychain (on Linux a Secret Service such as gnome-keyring) and restart mcp-authd, \
                         or set secret_store = \"keychain\" to refuse the fallback",
                        data_dir.join("secrets.json").display()
                    );
                    tracing::warn!("{warning}");
                    SecretStore {
                        backend: file(),
                        warning: Some(warning),
                    }
                }
            },
        };
        Ok(Arc::new(store))
    }

    /// An in-memory-free, file-backed store for unit tests.
    #[cfg(test)]
    pub fn file_for_tests(path: PathBuf) -> SecretStore {
        SecretStore {
            backend: Backend::File {
                path,
                lock: tokio::sync::Mutex::new(()),
            },
            warning: None,
        }
    }

    /// Holds the file store's lock, so that every call waits as on a keychain that stalls
    /// (an unlock prompt nobody answers) until the guard is dropped.
    #[cfg(test)]
    pub async fn stall_for_tests(&self) -> tokio::sync::MutexGuard<'_, ()> {
        match &self.backend {
            Backend::File { lock, .. } => lock.lock().await,
            Backend::Keychain { .. } => unreachable!("tests stall the file store"),
        }
    }

    pub fn status(&self) -> SecretStoreStatus {
        match &self.backend {
            Backend::Keychain { name } => SecretStoreStatus {
                backend: SecretBackend::Keychain,
                detail: (*name).into(),
                warning: self.warning.clone(),
                refresh_tokens_not_stored: Vec::new(),
            },
            Backend::File { path, .. } => SecretStoreStatus {
                backend: SecretBackend::File,
                detail: path.display().to_string(),
                warning: self.warning.clone(),
                refresh_tokens_not_stored: Vec::new(),
            },
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Secret>, SecretStoreError> {
        match &self.backend {
            Backend::Keychain { .. } => {
                let key = key.to_string();
                blocking(move || {
                    reconnecting(|| match entry(&key)?.get_password() {
                        Ok(v) => Ok(Some(Secret::new(v))),
                        Err(keyring_core::Error::NoEntry) => Ok(None),
                        Err(e) => Err(e),
                    })
                })
                .await
            }
            Backend::File { path, lock } => {
                let _guard = lock.lock().await;
                Ok(read_file(path)?.remove(key).map(Secret::new))
            }
        }
    }

    pub async fn set(&self, key: &str, value: &Secret) -> Result<(), SecretStoreError> {
        self.set_within(key, value, Some(KEYCHAIN_TIMEOUT)).await
    }

    /// [`SecretStore::set`] that waits for the keychain as long as it takes (an unlock
    /// prompt): for the one writer of a key that must not have two writes in flight at
    /// once, which a timed-out call still running in its thread would allow.
    pub async fn set_patiently(&self, key: &str, value: &Secret) -> Result<(), SecretStoreError> {
        self.set_within(key, value, None).await
    }

    async fn set_within(
        &self,
        key: &str,
        value: &Secret,
        timeout: Option<Duration>,
    ) -> Result<(), SecretStoreError> {
        match &self.backend {
            Backend::Keychain { .. } => {
                let (key, value) = (key.to_string(), value.clone());
                blocking_within(timeout, move || {
                    reconnecting(|| entry(&key)?.set_password(value.expose()))
                })
                .await
            }
            Backend::File { path, lock } => {
                let _guard = lock.lock().await;
                let mut all = read_file(path)?;
                all.insert(key.to_string(), value.expose().to_string());
                write_file(path, &all)
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), SecretStoreError> {
        self.delete_within(key, Some(KEYCHAIN_TIMEOUT)).await
    }

    /// Deletes `key`, waiting for the keychain as long as it takes (see
    /// [`SecretStore::set_patiently`]).
    pub async fn delete_patiently(&self, key: &str) -> Result<(), SecretStoreError> {
        self.delete_within(key, None).await
    }

    async fn delete_within(
        &self,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<(), SecretStoreError> {
        match &self.backend {
            Backend::Keychain { .. } => {
                let key = key.to_string();
                blocking_within(timeout, move || {
                    reconnecting(|| match entry(&key)?.delete_credential() {
                        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
                        Err(e) => Err(e),
                    })
                })
                .await
            }
            Backend::File { path, lock } => {
                let _guard = lock.lock().await;
                let mut all = read_file(path)?;
                if all.remove(key).is_some() {
                    write_file(path, &all)?;
                }
                Ok(())
            }
        }
    }
}

/// Installs the platform keychain as keyring-core's store and proves it works with a
/// write, read and delete: a never-unlocked keyring answers reads with "no entry" and
/// fails only on writes.
async fn keychain() -> Result<Backend, SecretStoreError> {
    let name = blocking(install_platform_store).await?;
    let probe_key = format!("probe:{}:{}", std::process::id(), super::new_id("p"));
    let probe = Secret::new(super::new_id("v"));
    let (k, v) = (probe_key.clone(), probe.clone());
    blocking(move || {
        let e = entry(&k).map_err(|e| describe(&e))?;
        e.set_password(v.expose()).map_err(|e| describe(&e))?;
        let read = e.get_password().map_err(|e| describe(&e))?;
        let _ = e.delete_credential();
        if read != v.expose() {
            return Err(SecretStoreError::Keychain(
                "a value written could not be read back".into(),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(Backend::Keychain { name })
}

#[cfg(target_os = "linux")]
fn install_platform_store() -> Result<&'static str, SecretStoreError> {
    let store = dbus_secret_service_keyring_store::Store::new().map_err(|e| describe(&e))?;
    keyring_core::set_default_store(store);
    Ok("Secret Service (D-Bus)")
}

#[cfg(target_os = "macos")]
fn install_platform_store() -> Result<&'static str, SecretStoreError> {
    let store = apple_native_keyring_store::keychain::Store::new().map_err(|e| describe(&e))?;
    keyring_core::set_default_store(store);
    Ok("macOS Keychain")
}

#[cfg(windows)]
fn install_platform_store() -> Result<&'static str, SecretStoreError> {
    let store = windows_native_keyring_store::Store::new().map_err(|e| describe(&e))?;
    keyring_core::set_default_store(store);
    Ok("Windows Credential Manager")
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn install_platform_store() -> Result<&'static str, SecretStoreError> {
    Err(SecretStoreError::Keychain(
        "no keychain is supported on this platform".into(),
    ))
}

fn entry(key: &str) -> keyring_core::Result<keyring_core::Entry> {
    keyring_core::Entry::new(SERVICE, key)
}

/// Runs a keychain operation; when the keychain fails as a restarted one does (gnome-keyring
/// replaced, the D-Bus session gone), connects to it afresh and tries once more.
fn reconnecting<T>(op: impl Fn() -> keyring_core::Result<T>) -> Result<T, SecretStoreError> {
    match op() {
        Err(
            e @ (keyring_core::Error::PlatformFailure(_) | keyring_core::Error::NoStorageAccess(_)),
        ) => {
            tracing::info!(
                "the keychain failed ({}); connecting to it again",
                match describe(&e) {
                    SecretStoreError::Keychain(text) => text,
                    other => other.to_string(),
                }
            );
            install_platform_store()?;
            op().map_err(|e| describe(&e))
        }
        other => other.map_err(|e| describe(&e)),
    }
}

/// Describes a keyring error without its payload: some variants carry the secret's bytes.
fn describe(e: &keyring_core::Error) -> SecretStoreError {
    use keyring_core::Error as E;
    let text = match e {
        E::PlatformFailure(p) => format!("platform failure: {p}"),
        E::NoStorageAccess(p) => format!("no access to the keychain (is it locked?): {p}"),
        E::NoEntry => "no entry".into(),
        E::BadEncoding(_) => "a stored value is not UTF-8".into(),
        E::BadDataFormat(_, p) => format!("a stored value is damaged: {p}"),
        E::BadStoreFormat(s) => format!("the keychain is damaged: {s}"),
        E::TooLong(what, max) => format!("{what} is longer than {max}"),
        E::Invalid(what, why) => format!("invalid {what}: {why}"),
        E::Ambiguous(_) => "several keychain entries match".into(),
        E::NoDefaultStore => "no keychain store is installed".into(),
        _ => "unknown keychain error".into(),
    };
    SecretStoreError::Keychain(text)
}

/// Runs a blocking keychain call off the async runtime, bounded in time.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SecretStoreError> + Send + 'static,
) -> Result<T, SecretStoreError> {
    blocking_within(Some(KEYCHAIN_TIMEOUT), f).await
}

/// Runs a blocking keychain call off the async runtime, bounded by `timeout` if given.
/// A call that times out goes on in its thread: the keychain may still apply it later.
async fn blocking_within<T: Send + 'static>(
    timeout: Option<Duration>,
    f: impl FnOnce() -> Result<T, SecretStoreError> + Send + 'static,
) -> Result<T, SecretStoreError> {
    let call = tokio::task::spawn_blocking(f);
    let joined = match timeout {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .map_err(|_| SecretStoreError::Timeout)?,
        None => call.await,
    };
    joined.unwrap_or_else(|join| {
        Err(SecretStoreError::Keychain(format!(
            "keychain call failed: {join}"
        )))
    })
}

fn file_err(path: &Path, reason: impl ToString) -> SecretStoreError {
    SecretStoreError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, SecretStoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|_| file_err(path, "not a JSON object of strings")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(file_err(path, e)),
    }
}

/// Writes a temp file (0600 from creation), syncs it and renames it over the old one, so a
/// crash leaves the old or the new file, never a torn one.
fn write_file(path: &Path, all: &BTreeMap<String, String>) -> Result<(), SecretStoreError> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(|e| file_err(&tmp, e))?;
    let bytes = serde_json::to_vec_pretty(all).map_err(|e| file_err(path, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let store = SecretStore::file_for_tests(path.clone());
        assert!(store.get("a").await.unwrap().is_none());
        store.set("a", &Secret::new("one")).await.unwrap();
        store.set("b", &Secret::new("two")).await.unwrap();
        assert_eq!(store.get("a").await.unwrap().unwrap().expose(), "one");
        store.delete("a").await.unwrap();
        store.delete("a").await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        assert_eq!(store.get("b").await.unwrap().unwrap().expose(), "two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[tokio::test]
    async fn a_damaged_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, b"{not json").unwrap();
        let store = SecretStore::file_for_tests(path);
        assert!(store.get("a").await.is_err());
        assert!(store.set("a", &Secret::new("x")).await.is_err());
    }
}
