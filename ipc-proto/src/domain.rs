//! The words of the domain that travel on the wire and sit in the daemon's database:
//! grant states and types, registration kinds, token types, revocation outcomes, secret
//! store backends. Each is an enum
//! defined once here; the daemon's rows and the CLI's decisions use the same type, and
//! the strings (the protocol's, `--json`'s and SQLite's) are spelled in this file only.
//!
//! Every one of them keeps a value it does not know (`Other`) as it was sent, so a client
//! reading a newer daemon still decodes the reply, shows the word and passes it through
//! `--json` unchanged (PROTOCOL.md, "Versioning").

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum of wire words plus `Other(String)` for words a newer peer may send. Written by
/// hand rather than with `strum` + `serde_with`: two proc-macro crates for a dozen lines.
macro_rules! wire_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A word this build does not know (from a newer peer), kept as it came.
            Other(String),
        }

        impl $name {
            /// Every word this build knows.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The word on the wire and in the database.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $word, )+
                    $name::Other(word) => word,
                }
            }

            /// The word of a known value, kept for the life of the program (`None` for
            /// `Other`).
            pub fn known_str(&self) -> Option<&'static str> {
                match self {
                    $( $name::$variant => Some($word), )+
                    $name::Other(_) => None,
                }
            }

            /// The known value `word` names, ignoring ASCII case (OAuth's token types are
            /// case-insensitive, RFC 6749 §5.1; the others are sent in one case anyway).
            pub fn known(word: &str) -> Option<$name> {
                $( if word.eq_ignore_ascii_case($word) { return Some($name::$variant); } )+
                None
            }
        }

        impl From<&str> for $name {
            fn from(word: &str) -> $name {
                $name::known(word).unwrap_or_else(|| $name::Other(word.to_string()))
            }
        }

        impl From<String> for $name {
            fn from(word: String) -> $name {
                $name::known(&word).unwrap_or($name::Other(word))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

wire_words! {
    /// Whether a grant can hand out tokens (`GrantInfo::state`, the `state` column).
    pub enum GrantState {
        /// Tokens are handed out (renewed as needed).
        Active = "active",
        /// The refresh token was refused or lost: only a new login helps
        /// (`needs_login_reason` says why).
        NeedsLogin = "needs_login",
    }
}

wire_words! {
    /// How the grant's client came to exist at the authorization server
    /// (`GrantInfo::registration`, the `kind` column of `registrations`).
    pub enum RegistrationKind {
        /// Registered by the daemon itself (RFC 7591 dynamic client registration).
        Dynamic = "dynamic",
        /// A `client_id` (and maybe a secret or key) from the config file.
        PreRegistered = "pre-registered",
        /// A Client ID Metadata Document URL used as the `client_id`.
        MetadataDocument = "metadata-document",
        /// The grant's registration row is gone (`grants.get` only; never stored).
        Missing = "missing",
    }
}

wire_words! {
    /// How a grant's tokens are obtained and renewed (`GrantInfo::grant_type`, the
    /// `grant_type` column; the daemon's config calls it `grant`).
    pub enum GrantType {
        /// The browser login (authorization code with PKCE), then its refresh token.
        AuthorizationCode = "authorization_code",
        /// OAuth client credentials (SEP-1046); renewed by granting again.
        ClientCredentials = "client_credentials",
        /// RFC 7523 JWT-bearer with an assertion from outside (SEP-1933).
        JwtBearer = "jwt_bearer",
        /// Enterprise-managed authorization (SEP-990): token exchange, then JWT-bearer.
        Enterprise = "enterprise",
    }
}

wire_words! {
    /// How an access token is presented (`TokenGetResult::token_type`): the
    /// `Authorization` scheme.
    pub enum TokenType {
        /// RFC 6750: `Authorization: Bearer <token>`.
        Bearer = "Bearer",
        /// RFC 9449: bound to the grant's DPoP key; `Authorization: DPoP <token>` plus a
        /// fresh proof (`token.dpop_proof`) on every request.
        DPoP = "DPoP",
    }
}

wire_words! {
    /// Where the daemon keeps secrets (`status`'s `secret_store.backend`, `secret.set`'s
    /// `secret_store`).
    pub enum SecretBackend {
        /// The OS keychain (Secret Service, macOS Keychain, Windows Credential Manager).
        Keychain = "keychain",
        /// The fallback file in the data directory (`status` warns about it).
        File = "file",
    }
}

wire_words! {
    /// Which of a grant's tokens a [`TokenRevocation`](crate::methods::TokenRevocation)
    /// is about; also the RFC 7009 `token_type_hint`.
    pub enum HeldToken {
        RefreshToken = "refresh_token",
        AccessToken = "access_token",
    }
}

wire_words! {
    /// What the authorization server did with one token (RFC 7009).
    pub enum RevocationOutcome {
        /// The server took it.
        Revoked = "revoked",
        /// The server answered `unsupported_token_type`: it does not revoke this kind of
        /// token, which stays valid until it expires. No failure.
        NotSupported = "not_supported",
        /// The daemon had no such token; nothing was sent.
        NotHeld = "not_held",
        /// The revocation failed (`detail` says how).
        Failed = "failed",
    }
}

/// What `grants.revoke` did at the authorization server, in one word
/// (`RevokeResult::remote`). A failure carries its detail on the wire as
/// `failed: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteRevocation {
    /// The server took at least one token and refused none.
    Revoked,
    /// No token was held, so nothing was sent.
    NothingToRevoke,
    /// The authorization server has no revocation endpoint.
    NotSupported,
    /// Not asked to revoke remotely (`remote: false`, `mcp-auth logout`).
    Skipped,
    /// A token's revocation failed, or the server could not be asked; why.
    Failed(String),
    /// A word this build does not know (from a newer daemon), kept as it came.
    Other(String),
}

const FAILED_PREFIX: &str = "failed";

impl RemoteRevocation {
    /// The wire word: `revoked`, …, or `failed: <detail>`.
    pub fn to_wire(&self) -> String {
        match self {
            RemoteRevocation::Revoked => "revoked".into(),
            RemoteRevocation::NothingToRevoke => "nothing_to_revoke".into(),
            RemoteRevocation::NotSupported => "not_supported".into(),
            RemoteRevocation::Skipped => "skipped".into(),
            RemoteRevocation::Failed(detail) if detail.is_empty() => FAILED_PREFIX.into(),
            RemoteRevocation::Failed(detail) => format!("{FAILED_PREFIX}: {detail}"),
            RemoteRevocation::Other(word) => word.clone(),
        }
    }
}

impl From<String> for RemoteRevocation {
    fn from(word: String) -> RemoteRevocation {
        match word.as_str() {
            "revoked" => RemoteRevocation::Revoked,
            "nothing_to_revoke" => RemoteRevocation::NothingToRevoke,
            "not_supported" => RemoteRevocation::NotSupported,
            "skipped" => RemoteRevocation::Skipped,
            FAILED_PREFIX => RemoteRevocation::Failed(String::new()),
            _ => match word
                .strip_prefix(FAILED_PREFIX)
                .and_then(|r| r.strip_prefix(": "))
            {
                Some(detail) => RemoteRevocation::Failed(detail.to_string()),
                None => RemoteRevocation::Other(word),
            },
        }
    }
}

impl fmt::Display for RemoteRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wire())
    }
}

impl Serialize for RemoteRevocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for RemoteRevocation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RemoteRevocation, D::Error> {
        String::deserialize(d).map(RemoteRevocation::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each known value travels as the very string the protocol has always used (the
    /// JSON below is today's PROTOCOL.md), and comes back as itself.
    #[test]
    fn every_word_round_trips_through_json_unchanged() {
        fn check<T>(known: &[T], words: &[&str])
        where
            T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
        {
            assert_eq!(known.len(), words.len(), "{known:?}");
            for (value, word) in known.iter().zip(words) {
                let json = serde_json::to_string(value).unwrap();
                assert_eq!(json, format!("\"{word}\""));
                assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value);
            }
        }
        check(GrantState::KNOWN, &["active", "needs_login"]);
        check(
            GrantType::KNOWN,
            &[
                "authorization_code",
                "client_credentials",
                "jwt_bearer",
                "enterprise",
            ],
        );
        check(
            RegistrationKind::KNOWN,
            &["dynamic", "pre-registered", "metadata-document", "missing"],
        );
        check(TokenType::KNOWN, &["Bearer", "DPoP"]);
        check(SecretBackend::KNOWN, &["keychain", "file"]);
        check(HeldToken::KNOWN, &["refresh_token", "access_token"]);
        check(
            RevocationOutcome::KNOWN,
            &["revoked", "not_supported", "not_held", "failed"],
        );
        check(
            &[
                RemoteRevocation::Revoked,
                RemoteRevocation::NothingToRevoke,
                RemoteRevocation::NotSupported,
                RemoteRevocation::Skipped,
                RemoteRevocation::Failed("refresh_token: HTTP 503".into()),
                RemoteRevocation::Failed(String::new()),
            ],
            &[
                "revoked",
                "nothing_to_revoke",
                "not_supported",
                "skipped",
                "failed: refresh_token: HTTP 503",
                "failed",
            ],
        );
    }

    /// A word from a newer daemon decodes (an old client keeps working) and goes back out
    /// exactly as it came (`--json` passes it through).
    #[test]
    fn an_unknown_word_is_kept_as_sent() {
        let state: GrantState = serde_json::from_str("\"suspended\"").unwrap();
        assert_eq!(state, GrantState::Other("suspended".into()));
        assert_eq!(serde_json::to_string(&state).unwrap(), "\"suspended\"");
        let kind: RegistrationKind = serde_json::from_str("\"software-statement\"").unwrap();
        assert_eq!(kind.as_str(), "software-statement");
        let outcome: RevocationOutcome = serde_json::from_str("\"deferred\"").unwrap();
        assert_eq!(outcome, RevocationOutcome::Other("deferred".into()));
        let remote: RemoteRevocation = serde_json::from_str("\"queued\"").unwrap();
        assert_eq!(remote, RemoteRevocation::Other("queued".into()));
        assert_eq!(serde_json::to_string(&remote).unwrap(), "\"queued\"");
        // Not a failure because it starts with the same letters.
        assert_eq!(
            RemoteRevocation::from("failedover".to_string()),
            RemoteRevocation::Other("failedover".into())
        );
    }

    /// Token types compare without case (RFC 6749 §5.1), and are sent in the case the
    /// protocol documents.
    #[test]
    fn token_types_ignore_case_on_the_way_in() {
        assert_eq!(TokenType::from("bearer"), TokenType::Bearer);
        assert_eq!(TokenType::from("dpop"), TokenType::DPoP);
        assert_eq!(TokenType::from("dpop").to_string(), "DPoP");
        assert_eq!(TokenType::known("mac"), None);
        assert_eq!(TokenType::from("PoP"), TokenType::Other("PoP".into()));
    }
}
