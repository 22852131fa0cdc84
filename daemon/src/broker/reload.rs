//! Re-reading the config file (`config.reload`, SIGHUP). A file that cannot be used is
//! refused with its line and reason, and the config in force stays.

use mcp_authd_ipc::methods::ReloadResult;
use mcp_authd_ipc::next_step::RELOAD;
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::Broker;
use crate::config::Config;

impl Broker {
    /// Loads the config file and, when it is valid, puts it in force for every request from
    /// now on (requests already running finish with the config they started with).
    pub fn reload_config(&self) -> Result<ReloadResult, RpcError> {
        let path = &self.paths.config_file;
        let new = match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                let message = format!(
                    "{e:#}\nthe previous config stays in force; fix the file, then run: {RELOAD}"
                );
                tracing::error!("config reload refused: {message}");
                return Err(RpcError::new(ErrorKind::ConfigInvalid, message));
            }
        };
        let old = self.config();
        let mut restart_needed = Vec::new();
        if new.secret_store != old.secret_store {
            restart_needed.push("secret_store".to_string());
        }
        // The HTTP client, with its trusted CAs, is built once at start.
        if new.ca_file != old.ca_file {
            restart_needed.push("ca_file".to_string());
        }
        let servers = new.servers.len() as u32;
        self.replace_config(new);
        tracing::info!(
            config_file = %path.display(),
            servers,
            ?restart_needed,
            "config reloaded"
        );
        Ok(ReloadResult {
            config_file: path.display().to_string(),
            servers,
            restart_needed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid file is put in force and says what needs a restart; an invalid one is
    /// refused, with the command to run once fixed, and the config in force stays.
    #[tokio::test]
    async fn a_valid_file_is_put_in_force_and_an_invalid_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let (broker, _) = super::super::for_tests(dir.path(), Config::default()).await;
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &file,
            format!(
                "ca_file = {:?}\n[servers.\"https://a.example/mcp\"]\nscopes = [\"read\"]\n",
                pem.display().to_string()
            ),
        )
        .unwrap();
        let done = broker.reload_config().unwrap();
        assert_eq!(done.servers, 1);
        assert_eq!(done.restart_needed, ["ca_file"]);
        assert!(
            broker
                .config()
                .server("https://a.example/mcp", None)
                .is_some()
        );

        std::fs::write(&file, "[servers.\"not a url\"]\n").unwrap();
        let e = broker.reload_config().unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::ConfigInvalid));
        assert!(e.message.ends_with(&format!("then run: {RELOAD}")), "{e}");
        assert!(
            broker
                .config()
                .server("https://a.example/mcp", None)
                .is_some(),
            "the config in force stays"
        );
    }
}
