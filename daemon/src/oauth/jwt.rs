//! Signed JWTs the daemon makes: RFC 7523 client assertions (`private_key_jwt`).
//!
//! Signing is aws-lc-rs, the crypto library rustls already brings into this binary: no
//! second crypto stack, and its keys live in AWS-LC memory that is cleansed when freed.
//! The JWS around it (RFC 7515 compact form: two base64url JSON parts and a signature)
//! is a few lines, so no JWT crate is pulled in for it; the PEM text and the DER it
//! decodes to are zeroized on drop.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The JWS algorithms supported for client assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Es256,
    Rs256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Result<Algorithm, KeyError> {
        match s {
            "ES256" => Ok(Algorithm::Es256),
            "RS256" => Ok(Algorithm::Rs256),
            other => Err(KeyError(format!(
                "signing algorithm `{}` is not supported (use ES256 or RS256)",
                crate::oauth::printable(other, 32)
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

enum KeyPair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key. `Debug` names only the algorithm.
pub struct SigningKey {
    pair: KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, ***)", self.algorithm().as_str())
    }
}

impl SigningKey {
    /// Reads a PEM private key (PKCS#8, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)
    /// for `wanted` (default: what the key is). The error never quotes the key.
    pub fn from_pem(pem: &Secret, wanted: Option<Algorithm>) -> Result<SigningKey, KeyError> {
        let pem = Zeroizing::new(pem.expose().as_bytes().to_vec());
        let der = Zeroizing::new(PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
            KeyError("the private key is not a PEM private key (PKCS#8, SEC1 or PKCS#1)".into())
        })?);
        let bytes = der.secret_der();
        let ec = || {
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
                .map(KeyPair::Ec)
        };
        let rsa = || {
            match &*der {
                PrivateKeyDer::Pkcs1(_) => RsaKeyPair::from_der(bytes),
                _ => RsaKeyPair::from_pkcs8(bytes),
            }
            .map(KeyPair::Rsa)
        };
        let pair = match wanted {
            Some(Algorithm::Es256) => ec().map_err(|_| {
                KeyError("ES256 needs a P-256 EC private key, and this is not one".into())
            })?,
            Some(Algorithm::Rs256) => rsa().map_err(|_| {
                KeyError("RS256 needs an RSA private key (2048 bits or more), and this is not one".into())
            })?,
            None => ec().or_else(|_| rsa()).map_err(|_| {
                KeyError("the private key is neither a P-256 EC key (ES256) nor an RSA key of 2048 bits or more (RS256)".into())
            })?,
        };
        Ok(SigningKey { pair })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.pair {
            KeyPair::Ec(_) => Algorithm::Es256,
            KeyPair::Rsa(_) => Algorithm::Rs256,
        }
    }

    /// A compact JWS of `claims` with header `{"alg", "typ": "JWT"}`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<Secret, KeyError> {
        let header = serde_json::json!({"alg": self.algorithm().as_str(), "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let failed = |_| KeyError("signing the client assertion failed".into());
        let signature = match &self.pair {
            KeyPair::Ec(key) => key
                .sign(&rng, input.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            KeyPair::Rsa(key) => {
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(failed)?;
                sig
            }
        };
        Ok(Secret::new(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// An RFC 7523 §3 client assertion: `iss` and `sub` the client, `aud` the authorization
/// server's issuer identifier (what RFC 7523 and draft-ietf-oauth-rfc7523bis ask for; the
/// token endpoint URL is no longer recommended), short-lived, with a fresh `jti`.
pub fn client_assertion(
    key: &SigningKey,
    client_id: &str,
    audience: &str,
    now: i64,
) -> Result<Secret, KeyError> {
    key.sign(&serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": crate::oauth::pkce::random_token().expose(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, KeyPair as _, UnparsedPublicKey};

    fn pem(label: &str, der: &[u8]) -> Secret {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        Secret::new(format!(
            "-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n"
        ))
    }

    #[test]
    fn es256_assertions_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let key = SigningKey::from_pem(&pem("PRIVATE KEY", pkcs8.as_ref()), None).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Es256);
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let jwt = client_assertion(&key, "c1", "https://as.example", 1000).unwrap();
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "c1");
        assert_eq!(claims["sub"], "c1");
        assert_eq!(claims["aud"], "https://as.example");
        assert_eq!(claims["exp"], 1060);
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
        let rs = SigningKey::from_pem(&pem("PRIVATE KEY", pkcs8.as_ref()), Some(Algorithm::Rs256));
        assert!(rs.unwrap_err().to_string().contains("RS256"));
    }

    #[test]
    fn garbage_is_refused_without_quoting_it() {
        let e = SigningKey::from_pem(&Secret::new("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"), None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(SigningKey::from_pem(&Secret::new("not pem"), None).is_err());
    }
}
