//! Why a grant has no refresh token, and which setting may get one from its provider:
//! without a refresh token the user is sent to the browser at every expiry, which must
//! never come as a surprise (`login`, `list`, `inspect` and `doctor` all show this).

use mcp_authd_ipc::methods::NoRefreshToken;
use mcp_authd_ipc::next_step::login_command_as;

use crate::config::ServerConfig;
use crate::oauth::discovery::AsMetadata;
use crate::oauth::printable;

const OFFLINE_ACCESS: &str = "offline_access";

/// What is known about a grant that came without a refresh token.
pub struct Facts<'a> {
    pub server_url: &'a str,
    pub issuer: &'a str,
    pub scopes: &'a [String],
    /// The issuer's stored metadata (absent only if the database lost it).
    pub metadata: Option<&'a AsMetadata>,
    pub config: Option<&'a ServerConfig>,
    /// When the access token held in memory expires.
    pub access_expires_at: Option<i64>,
    /// The grant's account name (`--account`); `None` for the default account.
    pub account_name: Option<&'a str>,
}

pub fn explain(f: &Facts<'_>) -> NoRefreshToken {
    let lists_offline = f.metadata.is_some_and(|m| m.supports_scope(OFFLINE_ACCESS));
    // The grant keeps the scopes the server granted, and a provider that ignored
    // offline_access (OpenID Connect Core §11) leaves it out of them. The login asks for
    // it whenever the issuer lists it and any scope is asked for (`login::choose_scopes`),
    // so a listed offline_access missing from non-empty scopes was asked for and dropped.
    let offline_access_requested =
        f.scopes.iter().any(|s| s == OFFLINE_ACCESS) || (lists_offline && !f.scopes.is_empty());
    let issuer = printable(f.issuer, 200);
    // Through the one quoting: the URL and the account name are pasted into a shell.
    let then = format!(
        "then run: {} && {}",
        mcp_authd_ipc::next_step::RELOAD,
        login_command_as(f.server_url, &[], f.account_name)
    );
    let section = format!("[servers.\"{}\"]", f.server_url);
    let openid = f.metadata.is_some_and(AsMetadata::wants_prompt_consent);
    let consent_off = f.config.is_some_and(|c| !c.prompt_consent());
    let own_prompt = f
        .config
        .is_some_and(|c| c.quirks.authorization_params.contains_key("prompt"));
    let google = url::Url::parse(f.issuer)
        .ok()
        .and_then(|u| u.host_str().map(|h| h == "accounts.google.com"))
        .unwrap_or(false);

    let (reason, fix) = if google {
        (
            format!(
                "{issuer} (Google) issues a refresh token only when asked with access_type=offline and prompt=consent"
            ),
            Some(format!(
                "set authorization_params = {{ access_type = \"offline\", prompt = \"consent\" }} under {section} in the config file; {then}"
            )),
        )
    } else if offline_access_requested && openid && consent_off && !own_prompt {
        (
            format!(
                "the login asked {issuer} for offline_access without prompt=consent (prompt_consent = false in the config), and an OpenID provider may then ignore offline_access (OpenID Connect Core §11)"
            ),
            Some(format!(
                "remove `prompt_consent = false` from this server's section of the config file; {then}"
            )),
        )
    } else if offline_access_requested && openid {
        (
            format!(
                "{issuer} issued none although the login asked for offline_access with prompt=consent: its policy, or this client's settings there, do not allow refresh tokens"
            ),
            Some(format!(
                "allow refresh tokens (offline access) for this client in the provider's settings, or use a pre-registered client that has them (client_id under {section}); {then}"
            )),
        )
    } else if offline_access_requested {
        (
            format!("{issuer} issued none although the login asked for offline_access"),
            Some(format!(
                "if it is an OpenID provider that wants prompt=consent for offline access, set authorization_params = {{ prompt = \"consent\" }} under {section} in the config file; else allow refresh tokens for this client at the server; {then}"
            )),
        )
    } else if lists_offline {
        (
            format!(
                "the login did not ask {issuer} for offline_access, the scope it lists for refresh tokens (no scope at all was asked for)"
            ),
            Some(format!(
                "add \"offline_access\" to the scopes under {section} in the config file (or to --scope); {then}"
            )),
        )
    } else {
        (
            format!("{issuer} does not list offline_access and issued no refresh token"),
            Some(format!(
                "if the provider issues refresh tokens on request, ask for them with scopes = [\"offline_access\", …] or its own parameter in authorization_params under {section} in the config file; {then}"
            )),
        )
    };
    NoRefreshToken {
        offline_access_requested,
        reason,
        fix,
        login_again_at: f.access_expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(openid: bool, offline: bool) -> AsMetadata {
        let mut scopes = vec!["mcp:read".to_string()];
        if offline {
            scopes.push(OFFLINE_ACCESS.into());
        }
        serde_json::from_value(serde_json::json!({
            "issuer": "https://as.example",
            "authorization_endpoint": "https://as.example/a",
            "token_endpoint": "https://as.example/t",
            "scopes_supported": scopes,
            "id_token_signing_alg_values_supported": if openid { Some(vec!["RS256"]) } else { None },
        }))
        .unwrap()
    }

    fn explain_for(
        issuer: &str,
        scopes: &[&str],
        m: &AsMetadata,
        config: Option<&ServerConfig>,
    ) -> NoRefreshToken {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        explain(&Facts {
            server_url: "https://mcp.example/mcp",
            issuer,
            scopes: &scopes,
            metadata: Some(m),
            config,
            access_expires_at: Some(42),
            account_name: None,
        })
    }

    #[test]
    fn each_case_names_the_setting_that_may_help() {
        let off = ServerConfig {
            prompt_consent: Some(false),
            ..Default::default()
        };
        let e = explain_for(
            "https://as.example",
            &["mcp:read", OFFLINE_ACCESS],
            &metadata(true, true),
            Some(&off),
        );
        assert!(e.offline_access_requested);
        assert!(e.reason.contains("prompt_consent = false"), "{e:?}");
        assert!(
            e.fix
                .as_deref()
                .unwrap()
                .contains("remove `prompt_consent = false`")
        );

        let e = explain_for(
            "https://as.example",
            &["mcp:read", OFFLINE_ACCESS],
            &metadata(true, true),
            None,
        );
        assert!(e.reason.contains("with prompt=consent"), "{e:?}");
        assert_eq!(e.login_again_at, Some(42));

        let e = explain_for(
            "https://as.example",
            &["mcp:read", OFFLINE_ACCESS],
            &metadata(false, true),
            None,
        );
        assert!(
            e.fix.as_deref().unwrap().contains("prompt = \"consent\""),
            "{e:?}"
        );

        // A provider that dropped the offline_access it was asked for (what a strict
        // OpenID provider does without prompt=consent): the granted scopes lack it.
        let e = explain_for(
            "https://as.example",
            &["mcp:read"],
            &metadata(true, true),
            Some(&off),
        );
        assert!(e.offline_access_requested);
        assert!(e.reason.contains("prompt_consent = false"), "{e:?}");

        let e = explain_for("https://as.example", &[], &metadata(false, true), None);
        assert!(!e.offline_access_requested);
        assert!(
            e.fix.as_deref().unwrap().contains("add \"offline_access\""),
            "{e:?}"
        );

        let e = explain_for(
            "https://as.example",
            &["mcp:read"],
            &metadata(false, false),
            None,
        );
        assert!(e.reason.contains("does not list offline_access"), "{e:?}");

        let e = explain_for(
            "https://accounts.google.com",
            &["openid"],
            &metadata(true, false),
            None,
        );
        assert!(
            e.fix
                .as_deref()
                .unwrap()
                .contains("access_type = \"offline\""),
            "{e:?}"
        );
    }

    #[test]
    fn a_hostile_issuer_cannot_break_the_line() {
        let e = explain_for(
            "https://as.example/\n\u{1b}[31mFAKE",
            &[OFFLINE_ACCESS],
            &metadata(false, true),
            None,
        );
        assert!(!e.reason.chars().any(char::is_control), "{e:?}");
    }
}
