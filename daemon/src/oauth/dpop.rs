//! DPoP (RFC 9449): a proof-of-possession key per grant, the proofs it signs, and the
//! nonces servers ask proofs to carry.
//!
//! The private key never leaves the daemon: it is kept in the secret store next to the
//! grant's refresh token, held in memory as a `p256` signing key (wiped on drop), and
//! only its public half appears in proofs. Clients that need a proof for a resource
//! request ask the daemon to sign one (`token.dpop_proof`), the way ssh-agent signs.
//!
//! The JWS is assembled by hand (a header, a claims set, an ES256 signature): it is three
//! base64url parts, and the signing itself is `p256`'s, a well-kept RustCrypto crate.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroize;

use crate::secret::Secret;

/// The only proof algorithm the daemon signs with.
pub const ALG: &str = "ES256";
/// Prefix of a stored key: says what follows, so another algorithm can be added later.
const STORED_PREFIX: &str = "dpop-es256:";
/// Origins whose nonce is remembered, at most (a hostile server cannot grow the map).
const MAX_NONCE_ORIGINS: usize = 256;
/// Longest nonce accepted from a server.
const MAX_NONCE_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    #[error("the stored DPoP key is unreadable; log in again to make a new one")]
    BadStoredKey,
    #[error("`{0}` is not an http(s) URL a DPoP proof can name")]
    BadUrl(String),
    #[error("`{0}` is not an HTTP method")]
    BadMethod(String),
}

/// A grant's DPoP key pair (P-256). `Debug` shows the public thumbprint only.
pub struct DpopKey {
    key: SigningKey,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DpopKey(jkt={})", self.thumbprint())
    }
}

impl DpopKey {
    /// A new random key.
    pub fn generate() -> DpopKey {
        loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let key = SigningKey::from_bytes(&bytes.into());
            bytes.zeroize();
            // Fails only for zero or a scalar ≥ the group order: about 2^-128 of draws.
            if let Ok(key) = key {
                return DpopKey { key };
            }
        }
    }

    /// The key as the secret store keeps it.
    pub fn to_secret(&self) -> Secret {
        let mut bytes = self.key.to_bytes();
        let mut encoded = URL_SAFE_NO_PAD.encode(bytes);
        bytes.zeroize();
        let stored = Secret::new(format!("{STORED_PREFIX}{encoded}"));
        encoded.zeroize();
        stored
    }

    pub fn from_secret(stored: &Secret) -> Result<DpopKey, DpopError> {
        let encoded = stored
            .expose()
            .strip_prefix(STORED_PREFIX)
            .ok_or(DpopError::BadStoredKey)?;
        let mut bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| DpopError::BadStoredKey)?;
        let key = (bytes.len() == 32)
            .then(|| SigningKey::from_slice(&bytes).ok())
            .flatten();
        bytes.zeroize();
        key.map(|key| DpopKey { key })
            .ok_or(DpopError::BadStoredKey)
    }

    /// The public key as a JWK (RFC 7517), members in RFC 7638 order.
    pub fn public_jwk(&self) -> serde_json::Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        let coordinate = |c: Option<&p256::FieldBytes>| {
            URL_SAFE_NO_PAD.encode(c.expect("an uncompressed point has both coordinates"))
        };
        json!({
            "crv": "P-256",
            "kty": "EC",
            "x": coordinate(point.x()),
            "y": coordinate(point.y()),
        })
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key: what a DPoP-bound token's
    /// `cnf.jkt` names.
    pub fn thumbprint(&self) -> String {
        // `json!` keeps members sorted (serde_json without `preserve_order`), which is the
        // canonical form RFC 7638 hashes.
        let canonical = self.public_jwk().to_string();
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A fresh proof (RFC 9449 §4.2) for one request: `htm` the method, `htu` the URL
    /// without query and fragment, `ath` the hash of the access token it goes with (resource
    /// requests), `nonce` when the server asked for one.
    pub fn proof(
        &self,
        htm: &str,
        url: &str,
        ath: Option<&str>,
        nonce: Option<&str>,
        iat: i64,
    ) -> Result<String, DpopError> {
        if htm.is_empty() || !htm.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(DpopError::BadMethod(crate::oauth::printable(htm, 32)));
        }
        let htu = htu(url)?;
        let header = json!({"typ": "dpop+jwt", "alg": ALG, "jwk": self.public_jwk()});
        let mut claims = json!({
            "jti": jti(),
            "htm": htm,
            "htu": htu,
            "iat": iat,
        });
        if let Some(ath) = ath {
            claims["ath"] = json!(ath);
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// The `htu` of a request URL: scheme, authority and path, no query or fragment (§4.2).
pub fn htu(url: &str) -> Result<String, DpopError> {
    let mut parsed =
        Url::parse(url).map_err(|_| DpopError::BadUrl(crate::oauth::printable(url, 200)))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(DpopError::BadUrl(crate::oauth::printable(url, 200)));
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed.to_string())
}

/// The `ath` of an access token: base64url(SHA-256(token)) (§4.2).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// A proof's unique id: 128 random bits.
fn jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether an authorization server's metadata offers DPoP with the algorithm we sign.
pub fn offered(dpop_signing_alg_values_supported: Option<&[String]>) -> bool {
    dpop_signing_alg_values_supported.is_some_and(|algs| algs.iter().any(|a| a == ALG))
}

/// The latest nonce each server origin gave (RFC 9449 §8, §9): a proof to that origin
/// carries it, so a server that rotates nonces is not asked twice per request.
#[derive(Default)]
pub struct Nonces {
    latest: Mutex<HashMap<String, String>>,
}

impl Nonces {
    pub fn get(&self, url: &str) -> Option<String> {
        let origin = origin(url)?;
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&origin)
            .cloned()
    }

    /// Remembers a `DPoP-Nonce` a server sent; an unusable value (empty, too long, not
    /// the RFC's `NQCHAR`s) is ignored.
    pub fn remember(&self, url: &str, nonce: &str) {
        let usable = !nonce.is_empty()
            && nonce.len() <= MAX_NONCE_LEN
            && nonce
                .bytes()
                .all(|b| b == b'!' || (b'#'..=b'[').contains(&b) || (b']'..=b'~').contains(&b));
        let Some(origin) = origin(url).filter(|_| usable) else {
            return;
        };
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if latest.len() >= MAX_NONCE_ORIGINS && !latest.contains_key(&origin) {
            latest.clear();
        }
        latest.insert(origin, nonce.to_string());
    }
}

fn origin(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    url.host()?;
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let p = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_verifies_with_the_key_in_its_header_and_names_the_request() {
        let key = DpopKey::generate();
        let proof = key
            .proof(
                "POST",
                "https://as.example/token?x=1#f",
                Some("abc"),
                Some("n1"),
                1_700_000_000,
            )
            .unwrap();
        let header = part(&proof, 0);
        let claims = part(&proof, 1);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(header["jwk"].get("d").is_none(), "no private part");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://as.example/token");
        assert_eq!(claims["ath"], "abc");
        assert_eq!(claims["nonce"], "n1");
        assert_eq!(claims["iat"], 1_700_000_000);
        let jwk = &header["jwk"];
        let coordinate = |c: &str| URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap();
        let point = p256::EncodedPoint::from_affine_coordinates(
            coordinate("x").as_slice().into(),
            coordinate("y").as_slice().into(),
            false,
        );
        let verifying = VerifyingKey::from_encoded_point(&point).unwrap();
        let (input, sig) = proof.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        verifying.verify(input.as_bytes(), &sig).unwrap();
        let other = key
            .proof("POST", "https://as.example/token", None, None, 1)
            .unwrap();
        assert_ne!(part(&other, 1)["jti"], claims["jti"], "every proof is new");
        assert!(part(&other, 1).get("ath").is_none());
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 7638 hashes {"crv","kty","x","y"} in that order with no whitespace.
        let key = DpopKey::generate();
        let jwk = key.public_jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(
            key.thumbprint(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn a_stored_key_comes_back_and_never_prints() {
        let key = DpopKey::generate();
        let stored = key.to_secret();
        let back = DpopKey::from_secret(&stored).unwrap();
        assert_eq!(back.thumbprint(), key.thumbprint());
        let encoded = stored.expose().strip_prefix(STORED_PREFIX).unwrap();
        let printed = format!("{key:?} {back:?} {stored:?}");
        assert!(!printed.contains(encoded), "{printed}");
        for bad in [
            "",
            "dpop-es256:",
            "dpop-es256:AAAA",
            "es256:x",
            "dpop-es256:!!",
        ] {
            assert!(DpopKey::from_secret(&Secret::new(bad)).is_err(), "{bad}");
        }
        let zero = format!("{STORED_PREFIX}{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert!(DpopKey::from_secret(&Secret::new(zero)).is_err());
    }

    #[test]
    fn bad_requests_get_no_proof() {
        let key = DpopKey::generate();
        for (m, u) in [
            ("post", "https://a.example/"),
            ("", "https://a.example/"),
            ("GET", "file:///etc/passwd"),
            ("GET", "not a url"),
        ] {
            assert!(key.proof(m, u, None, None, 1).is_err(), "{m} {u}");
        }
    }

    #[test]
    fn nonces_are_kept_per_origin_and_odd_ones_dropped() {
        let n = Nonces::default();
        n.remember("https://as.example/token", "n-1");
        assert_eq!(n.get("https://as.example/other?q").as_deref(), Some("n-1"));
        assert_eq!(n.get("https://as.example:8443/token"), None);
        n.remember("https://as.example/token", "n\"2");
        n.remember("https://as.example/token", "");
        n.remember("https://as.example/token", &"x".repeat(MAX_NONCE_LEN + 1));
        assert_eq!(n.get("https://as.example/").as_deref(), Some("n-1"));
        n.remember("https://as.example/token", "n-3");
        assert_eq!(n.get("https://as.example/").as_deref(), Some("n-3"));
    }

    #[test]
    fn es256_must_be_offered() {
        assert!(offered(Some(&["RS256".into(), "ES256".into()])));
        assert!(!offered(Some(&["RS256".into()])));
        assert!(!offered(Some(&[])));
        assert!(!offered(None));
    }
}
