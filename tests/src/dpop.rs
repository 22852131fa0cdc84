//! DPoP proof checks (RFC 9449 §4.3) for the test servers: the authorization server at
//! its token endpoint, the MCP server on every request. Strict on purpose, so a client
//! bug surfaces as a refused request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How far a proof's `iat` may be from the server's clock.
const IAT_WINDOW_SECS: i64 = 300;

/// What a valid proof says about its key and itself.
#[derive(Debug, Clone)]
pub(crate) struct Proof {
    /// RFC 7638 thumbprint of the proof's public key.
    pub jkt: String,
    pub jti: String,
    pub nonce: Option<String>,
}

/// Checks one proof for a request (`htm`, `htu`) and, for a resource request, the access
/// token it must go with (`ath`). The nonce is returned, not checked: servers decide.
pub(crate) fn verify(
    proof: &str,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
) -> Result<Proof, String> {
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let json = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "bad base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "not JSON".to_string())
    };
    let header = json(h)?;
    let claims = json(c)?;
    if header["typ"] != "dpop+jwt" {
        return Err("typ is not dpop+jwt".into());
    }
    if header["alg"] != "ES256" {
        return Err("alg is not ES256".into());
    }
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err("the jwk holds a private key".into());
    }
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err("the jwk is not a P-256 key".into());
    }
    let coordinate = |name: &str| -> Result<Vec<u8>, String> {
        let v = jwk[name].as_str().ok_or("jwk coordinate missing")?;
        let bytes = URL_SAFE_NO_PAD.decode(v).map_err(|_| "jwk coordinate")?;
        (bytes.len() == 32)
            .then_some(bytes)
            .ok_or_else(|| "jwk coordinate length".into())
    };
    let (x, y) = (coordinate("x")?, coordinate("y")?);
    let point = p256::EncodedPoint::from_affine_coordinates(
        x.as_slice().into(),
        y.as_slice().into(),
        false,
    );
    let key = VerifyingKey::from_encoded_point(&point).map_err(|_| "jwk is not a curve point")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "signature base64url")?;
    let signature = Signature::from_slice(&signature).map_err(|_| "signature length")?;
    key.verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify")?;

    let jti = claims["jti"].as_str().ok_or("no jti")?.to_string();
    if claims["htm"] != htm {
        return Err(format!("htm is not {htm}"));
    }
    let claimed_htu = claims["htu"].as_str().ok_or("no htu")?;
    if claimed_htu.contains('?') || claimed_htu.contains('#') {
        return Err("htu has a query or fragment".into());
    }
    if claimed_htu != htu {
        return Err(format!("htu {claimed_htu} is not {htu}"));
    }
    let iat = claims["iat"].as_i64().ok_or("no iat")?;
    if (iat - now()).abs() > IAT_WINDOW_SECS {
        return Err("iat is outside the window".into());
    }
    match access_token {
        Some(token) if claims["ath"] != ath(token) => {
            return Err("ath does not match the access token".into());
        }
        None if claims.get("ath").is_some() => return Err("ath on a token request".into()),
        _ => {}
    }
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&x),
        URL_SAFE_NO_PAD.encode(&y)
    );
    Ok(Proof {
        jkt: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        jti,
        nonce: claims["nonce"].as_str().map(str::to_string),
    })
}

pub(crate) fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// The one `DPoP` header of a request; several are an error (RFC 9449 §4.3).
pub(crate) fn header(headers: &axum::http::HeaderMap) -> Result<Option<&str>, String> {
    let mut values = headers.get_all("dpop").iter();
    let first = values.next();
    if values.next().is_some() {
        return Err("more than one DPoP header".into());
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| "a DPoP header that is not text".to_string())
        })
        .transpose()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
