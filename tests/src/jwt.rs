//! Signed JWTs for the test servers: keys that tests hand to the daemon (PEM files,
//! secret store entries), workload tokens, ID tokens and ID-JAGs, and the strict
//! verification the test authorization server applies to whatever the daemon sends.
//!
//! On aws-lc-rs, the library the daemon signs with through its own code; the JWS
//! encoding here is written separately, so a bug in the daemon's is not mirrored.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The public half of a key: what a server trusts.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    /// `ES256` or `RS256`.
    pub alg: &'static str,
    public_key: Vec<u8>,
}

impl VerifyingKey {
    /// Checks the signature and `alg`, and returns the header and the claims. Claim checks
    /// (`aud`, `exp`, …) are the caller's.
    pub fn verify(&self, jwt: &str) -> Result<(Value, Value), String> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS".into());
        };
        let decode = |p: &str| {
            URL_SAFE_NO_PAD
                .decode(p)
                .map_err(|_| "bad base64url".to_string())
        };
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
        let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
        if header["alg"] != self.alg {
            return Err(format!(
                "alg {} where {} was expected",
                header["alg"], self.alg
            ));
        }
        let algorithm: &dyn aws_lc_rs::signature::VerificationAlgorithm = match self.alg {
            "ES256" => &ECDSA_P256_SHA256_FIXED,
            _ => &RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &self.public_key)
            .verify(format!("{h}.{c}").as_bytes(), &decode(s)?)
            .map_err(|_| "bad signature".to_string())?;
        Ok((header, claims))
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key a test generated, with its PKCS#8 PEM.
pub struct TestKey {
    pair: Pair,
    pem: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestKey({})", self.verifying_key().alg)
    }
}

impl TestKey {
    pub fn es256() -> TestKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("read it back");
        TestKey {
            pem: pem(pkcs8.as_ref()),
            pair: Pair::Ec(pair),
        }
    }

    pub fn rs256() -> TestKey {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key");
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
        TestKey {
            pem: pem(der.as_ref()),
            pair: Pair::Rsa(pair),
        }
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match &self.pair {
            Pair::Ec(k) => VerifyingKey {
                alg: "ES256",
                public_key: k.public_key().as_ref().to_vec(),
            },
            Pair::Rsa(k) => VerifyingKey {
                alg: "RS256",
                public_key: k.public_key().as_ref().to_vec(),
            },
        }
    }

    /// A compact JWS of `claims` with the given `typ`.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let alg = self.verifying_key().alg;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": typ}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("sign");
                sig
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// The header and claims of a JWT, unverified: to find which key verifies it.
pub fn peek(jwt: &str) -> Result<(Value, Value), String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c)) = (parts.next(), parts.next()) else {
        return Err("not a compact JWS".into());
    };
    let decode = |p: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "bad base64url".to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    Ok((decode(h)?, decode(c)?))
}

/// Checks the registered claims of an assertion presented to `issuer`'s token endpoint:
/// `aud` names the issuer (a string or an array), `exp` is in the future (and not absurdly
/// far), `iat` not in the future. Returns the claims.
pub fn check_assertion_claims(claims: &Value, issuer: &str) -> Result<(), String> {
    let now = unix_now();
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == issuer,
        Value::Array(list) => list.iter().any(|a| a == issuer),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud {} is not {issuer}", claims["aud"]));
    }
    match claims["exp"].as_i64() {
        Some(exp) if exp > now && exp <= now + 3600 => {}
        other => return Err(format!("exp {other:?} is not within the next hour")),
    }
    if claims["iat"].as_i64().is_some_and(|iat| iat > now + 5) {
        return Err("iat is in the future".into());
    }
    Ok(())
}
