//! Every type that holds a secret prints it as `Secret(***)` under `{:?}` and `{:#?}`:
//! tokens, client credentials, the config with a client secret. (The cached access token
//! has no `Debug` at all.)

use crate::config::Config;
use crate::oauth::registration::{AuthMethod, ClientCredentials};
use crate::oauth::token::Tokens;
use crate::secret::Secret;

const VALUES: [&str; 4] = [
    "at-0123456789-access",
    "rt-0123456789-refresh",
    "cs-0123456789-client-secret",
    "cfg-0123456789-config-secret",
];

fn assert_hidden(printed: &str) {
    for v in VALUES {
        assert!(
            !printed.contains(v),
            "{v} appears in Debug output: {printed}"
        );
    }
    assert!(printed.contains("Secret(***)"), "{printed}");
}

#[test]
fn debug_output_of_every_secret_holder_hides_the_values() {
    let tokens = Tokens {
        access_token: Secret::new(VALUES[0]),
        expires_at: 1,
        refresh_token: Some(Secret::new(VALUES[1])),
        scopes: None,
        account: None,
        id_token: None,
        token_type: crate::oauth::token::TokenType::DPoP,
    };
    // A DPoP key prints its public thumbprint, never its private scalar.
    let dpop = crate::oauth::dpop::DpopKey::generate();
    let stored = dpop.to_secret();
    let private = stored.expose().rsplit(':').next().unwrap().to_string();
    let printed = format!("{dpop:?} {dpop:#?} {stored:?}");
    assert!(!printed.contains(&private), "{printed}");
    assert!(printed.contains(&dpop.thumbprint()), "{printed}");
    let credentials = ClientCredentials {
        client_id: "client".into(),
        client_secret: Some(Secret::new(VALUES[2])),
        auth_method: AuthMethod::ClientSecretPost,
        signing_key: None,
        audience: "https://as.example".into(),
    };
    let config: Config = toml::from_str(&format!(
        "[servers.\"https://mcp.example/mcp\"]\nclient_id = \"c\"\nclient_secret = \"{}\"\ngrant = \"enterprise\"\n\
         [servers.\"https://mcp.example/mcp\".enterprise]\nidp_token_endpoint = \"https://idp/token\"\nidp_client_secret = \"{}\"\nid_token = {{ env = \"X\" }}\n",
        VALUES[3], VALUES[2]
    ))
    .unwrap();
    for printed in [
        format!("{tokens:?} {tokens:#?}"),
        format!("{credentials:?} {credentials:#?}"),
        format!("{config:?} {config:#?}"),
    ] {
        assert_hidden(&printed);
    }
}

#[test]
fn a_signing_key_prints_only_its_algorithm() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = Secret::new(format!(
        "-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"
    ));
    let key = std::sync::Arc::new(crate::oauth::jwt::SigningKey::from_pem(&pem, None).unwrap());
    let credentials = ClientCredentials {
        client_id: "client".into(),
        client_secret: None,
        auth_method: AuthMethod::PrivateKeyJwt,
        signing_key: Some(key),
        audience: "https://as.example".into(),
    };
    let printed = format!("{credentials:?} {credentials:#?}");
    assert!(printed.contains("SigningKey(ES256, ***)"), "{printed}");
    assert!(!printed.contains(&b64[40..60]), "{printed}");
}
