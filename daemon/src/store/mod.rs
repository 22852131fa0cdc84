//! Durable state: non-secret metadata in SQLite, secrets in the OS keychain (or the
//! warned file fallback).

pub mod db;
pub mod secrets;
pub mod write_behind;

pub use db::{Db, DbError, GrantRow, RegistrationRow};
pub use secrets::{SecretStore, SecretStoreError};
pub use write_behind::WriteBehind;

/// Keys of the secret store, one place so nothing else invents a naming scheme.
pub mod keys {
    pub fn refresh_token(grant_id: &str) -> String {
        format!("refresh_token:{grant_id}")
    }

    /// The grant id in a [`refresh_token`] key.
    pub fn grant_of_refresh_token(key: &str) -> Option<&str> {
        key.strip_prefix("refresh_token:")
    }

    /// A secret the user stored for the config to reference (`{ keychain = "name" }`).
    pub fn config_secret(name: &str) -> String {
        format!("config:{name}")
    }

    /// The ID token of the daemon's own OpenID login at an enterprise IdP, and the refresh
    /// token that renews it: one login at the IdP for every server that trusts it.
    pub fn idp_id_token(idp_issuer: &str) -> String {
        format!("idp_id_token:{idp_issuer}")
    }

    pub fn idp_refresh_token(idp_issuer: &str) -> String {
        format!("idp_refresh_token:{idp_issuer}")
    }

    /// A grant's DPoP private key (RFC 9449), when its tokens are DPoP-bound.
    pub fn dpop_key(grant_id: &str) -> String {
        format!("dpop_key:{grant_id}")
    }

    pub fn client_secret(registration_id: &str) -> String {
        format!("client_secret:{registration_id}")
    }
}

/// A short random id with a prefix saying what it names (`g_…` grant, `r_…` registration).
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let tail: String = (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}
