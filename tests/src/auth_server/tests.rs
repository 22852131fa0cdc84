use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::*;
use crate::test_support::{
    REDIRECT_URI, authorize, http, obtain_tokens, pkce, register_public_client, token_request,
};

const RESOURCE: &str = "http://127.0.0.1:1/mcp";

#[tokio::test(flavor = "multi_thread")]
async fn serves_metadata_under_the_issuer_path() {
    let auth = AuthServer::start(AsOptions {
        path: "/tenant1".into(),
        ..AsOptions::default()
    })
    .await;
    assert!(auth.issuer().ends_with("/tenant1"));
    let origin = auth.issuer().trim_end_matches("/tenant1");
    let metadata: Value = http()
        .get(format!(
            "{origin}/.well-known/oauth-authorization-server/tenant1"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], auth.issuer());
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/token", auth.issuer())
    );
    assert_eq!(
        metadata["registration_endpoint"],
        format!("{}/register", auth.issuer())
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        metadata["scopes_supported"],
        json!(["mcp:read", "mcp:write", "offline_access"])
    );

    // Path-less discovery must not find a path-ful issuer.
    let root = http()
        .get(format!("{origin}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamic_registration_accepts_loopback_and_rejects_bad_redirects() {
    let auth = AuthServer::start(AsOptions {
        dcr_auth_method: Some("client_secret_basic".into()),
        ..AsOptions::default()
    })
    .await;
    let register = |body: Value| {
        http()
            .post(format!("{}/register", auth.issuer()))
            .json(&body)
            .send()
    };

    let ok = register(json!({
        "redirect_uris": ["http://localhost:4711/cb"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    }))
    .await
    .unwrap();
    assert_eq!(ok.status(), 201);
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["token_endpoint_auth_method"], "client_secret_basic");
    let secret = ok["client_secret"].as_str().unwrap();
    assert!(auth.issued_secrets().iter().any(|s| s == secret));

    for bad in [
        json!({"redirect_uris": ["http://example.com:80/cb"]}),
        json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
        json!({"redirect_uris": []}),
        json!({}),
    ] {
        let response = register(bad.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_redirect_uri", "{bad}");
    }
    let bad_type = register(json!({
        "redirect_uris": ["http://127.0.0.1:1/cb"],
        "application_type": "desktop",
    }))
    .await
    .unwrap();
    let error: Value = bad_type.json().await.unwrap();
    assert_eq!(error["error"], "invalid_client_metadata");

    assert_eq!(auth.counts().registrations, 1);
    assert_eq!(auth.registrations().len(), 6);
    assert_eq!(auth.registrations()[0]["application_type"], "native");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_flow_then_rotation_and_replay_revokes_the_family() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let (client_id, tokens) = obtain_tokens(&auth, RESOURCE, "mcp:read offline_access").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "mcp:read offline_access");
    let access = tokens["access_token"].as_str().unwrap();
    let old_refresh = tokens["refresh_token"].as_str().unwrap();
    assert!(access.starts_with("at_") && old_refresh.starts_with("rt_"));
    assert_eq!(
        auth.validate_access_token(access, RESOURCE),
        Ok(vec!["mcp:read".into(), "offline_access".into()])
    );
    assert_eq!(
        auth.validate_access_token(access, "http://127.0.0.1:2/mcp"),
        Err(TokenProblem::WrongResource)
    );

    let refresh = |token: String| {
        let client_id = client_id.clone();
        let auth = &auth;
        async move {
            token_request(
                auth,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &client_id),
                    ("resource", RESOURCE),
                ],
            )
            .await
        }
    };
    let (status, rotated) = refresh(old_refresh.to_owned()).await;
    assert_eq!(status, 200, "{rotated}");
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(auth.current_refresh_tokens(), vec![new_refresh.clone()]);

    // Replaying the rotated-away token is treated as theft.
    let (status, error) = refresh(old_refresh.to_owned()).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, error) = refresh(new_refresh).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(auth.current_refresh_tokens().is_empty());
    assert_eq!(
        auth.validate_access_token(access, RESOURCE),
        Err(TokenProblem::Revoked)
    );

    let counts = auth.counts();
    assert_eq!(
        (
            counts.code_exchanges,
            counts.refreshes,
            counts.refresh_failures
        ),
        (1, 1, 2)
    );
    let last = auth.last_token_params().unwrap();
    assert_eq!(last["grant_type"], "refresh_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_code_verifier_is_rejected_and_consumes_the_code() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let client_id = register_public_client(&auth).await;
    let (verifier, challenge) = pkce();
    let code = authorize(&auth, &client_id, &challenge, RESOURCE, "mcp:read").await;
    let (wrong_verifier, _) = pkce();
    let exchange = |verifier: String| {
        let (code, client_id, auth) = (code.clone(), client_id.clone(), &auth);
        async move {
            token_request(
                auth,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", &verifier),
                    ("client_id", &client_id),
                    ("resource", RESOURCE),
                ],
            )
            .await
        }
    };
    let (status, error) = exchange(wrong_verifier).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, error) = exchange(verifier.clone()).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(auth.counts().code_exchanges, 0);
    assert!(auth.issued_secrets().contains(&verifier));
}

#[tokio::test(flavor = "multi_thread")]
async fn confidential_clients_must_use_their_registered_method() {
    let auth = AuthServer::start(AsOptions::default()).await;
    auth.register_client(PreRegisteredClient {
        client_id: "pre:registered".into(),
        client_secret: Some("s3cret&more".into()),
        token_endpoint_auth_method: "client_secret_basic".into(),
        redirect_uris: vec![],
    });
    let revoke = |auth_header: Option<String>, form: Vec<(&'static str, &'static str)>| {
        let mut request = http().post(format!("{}/revoke", auth.issuer())).form(&form);
        if let Some(value) = auth_header {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request.send()
    };
    // RFC 6749 section 2.3.1: id and secret are form-encoded before base64.
    let good = format!(
        "Basic {}",
        STANDARD.encode("pre%3Aregistered:s3cret%26more")
    );
    let response = revoke(Some(good), vec![("token", "whatever")])
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let wrong = format!("Basic {}", STANDARD.encode("pre%3Aregistered:nope"));
    let response = revoke(Some(wrong), vec![("token", "whatever")])
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE)
    );

    let as_post = vec![
        ("token", "whatever"),
        ("client_id", "pre:registered"),
        ("client_secret", "s3cret&more"),
    ];
    let response = revoke(None, as_post).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(auth.counts().revocations, 1);
}
