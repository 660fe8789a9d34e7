//! Credential public keys: COSE_Key (RFC 9052 7, RFC 9053) to a public JWK, and signature
//! verification through the path ID tokens take — the runtime's signature port first
//! ([`crate::ports::SignatureVerifier`], WebCrypto in Workers), else pure Rust with the key
//! the JWK parser of [`crate::oidc::jwks`] builds, so both paths apply the same key rules
//! (P-256 points on the curve, RSA keys of at least 2048 bits).

use serde_json::{json, Value as Json};

use super::cbor::Value;
use super::WebauthnError;
use crate::crypto::b64url;
use crate::oidc::jwks::PublicKey;

/// The signature algorithms a credential may use (COSE algorithm identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CoseAlg {
    /// ECDSA with SHA-256 on P-256 (COSE -7).
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (COSE -257).
    #[serde(rename = "RS256")]
    Rs256,
    /// EdDSA on Ed25519 (COSE -8).
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl CoseAlg {
    pub const ALL: [CoseAlg; 3] = [CoseAlg::Es256, CoseAlg::EdDsa, CoseAlg::Rs256];

    pub fn from_cose(id: i64) -> Option<Self> {
        match id {
            -7 => Some(CoseAlg::Es256),
            -257 => Some(CoseAlg::Rs256),
            -8 => Some(CoseAlg::EdDsa),
            _ => None,
        }
    }

    pub fn cose(self) -> i64 {
        match self {
            CoseAlg::Es256 => -7,
            CoseAlg::Rs256 => -257,
            CoseAlg::EdDsa => -8,
        }
    }

    /// The JWS name, as the signature port takes it.
    pub fn jws(self) -> &'static str {
        match self {
            CoseAlg::Es256 => "ES256",
            CoseAlg::Rs256 => "RS256",
            CoseAlg::EdDsa => "EdDSA",
        }
    }
}

// COSE_Key labels (RFC 9052 7.1, RFC 9053 7.1.1, 7.2, RFC 8230 4).
const KTY: i64 = 1;
const ALG: i64 = 3;
const CRV_OR_N: i64 = -1;
const X_OR_E: i64 = -2;
const Y: i64 = -3;
const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const KTY_RSA: i64 = 3;
const CRV_P256: i64 = 1;
const CRV_ED25519: i64 = 6;
/// Largest RSA modulus accepted (bytes); the smallest is the JWKS rule's 2048 bits.
const MAX_RSA_MODULUS: usize = 512;

/// A credential public key: its algorithm, its public JWK (stored with the passkey and handed
/// to the signature port) and the key the pure-Rust verifier uses.
#[derive(Debug, Clone)]
pub struct CredentialKey {
    alg: CoseAlg,
    jwk: Json,
    key: PublicKey,
}

impl CredentialKey {
    /// Reads a COSE_Key. The algorithm, key type and curve must agree; members other than
    /// those listed are ignored (private members are never read).
    pub fn from_cose(key: &Value<'_>) -> Result<Self, WebauthnError> {
        let bad = WebauthnError::UnsupportedKey;
        key.as_map().ok_or(bad.clone())?;
        let int = |label| key.get_int(label).and_then(Value::as_i64);
        let bytes = |label| key.get_int(label).and_then(Value::as_bytes);
        let alg_id = int(ALG).ok_or(bad.clone())?;
        let alg = CoseAlg::from_cose(alg_id).ok_or(WebauthnError::AlgorithmNotAllowed(alg_id))?;
        let jwk = match (alg, int(KTY)) {
            (CoseAlg::Es256, Some(KTY_EC2)) => {
                if int(CRV_OR_N) != Some(CRV_P256) {
                    return Err(bad);
                }
                let (x, y) = (bytes(X_OR_E).ok_or(bad.clone())?, bytes(Y).ok_or(bad.clone())?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad);
                }
                json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y)})
            }
            (CoseAlg::Rs256, Some(KTY_RSA)) => {
                let (n, e) = (bytes(CRV_OR_N).ok_or(bad.clone())?, bytes(X_OR_E).ok_or(bad.clone())?);
                if n.is_empty() || n.len() > MAX_RSA_MODULUS || e.is_empty() || e.len() > 8 {
                    return Err(bad);
                }
                json!({"kty": "RSA", "n": b64url(n), "e": b64url(e)})
            }
            (CoseAlg::EdDsa, Some(KTY_OKP)) => {
                if int(CRV_OR_N) != Some(CRV_ED25519) {
                    return Err(bad);
                }
                let x = bytes(X_OR_E).ok_or(bad.clone())?;
                if x.len() != 32 {
                    return Err(bad);
                }
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(x)})
            }
            _ => return Err(bad),
        };
        Self::from_jwk(alg, &jwk)
    }

    /// Rebuilds a key from its stored JWK (only the public members are read).
    pub fn from_jwk(alg: CoseAlg, jwk: &Json) -> Result<Self, WebauthnError> {
        let set = serde_json::to_vec(&json!({ "keys": [jwk] })).map_err(|_| WebauthnError::UnsupportedKey)?;
        let mut parsed = crate::oidc::jwks::parse_jwks(&set).map_err(|_| WebauthnError::UnsupportedKey)?;
        let parsed = parsed.keys.pop().ok_or(WebauthnError::UnsupportedKey)?;
        if !parsed.key.fits(alg.jws()) {
            return Err(WebauthnError::UnsupportedKey);
        }
        Ok(Self { alg, jwk: parsed.public_jwk, key: parsed.key })
    }

    pub fn alg(&self) -> CoseAlg {
        self.alg
    }

    /// The public JWK (`kty` and `crv`/`x`/`y` or `n`/`e` only).
    pub fn jwk(&self) -> &Json {
        &self.jwk
    }

    /// Verifies `signature` (as the authenticator made it: ASN.1 DER for ES256) over `signed`.
    pub async fn verify(
        &self,
        port: Option<&dyn crate::ports::SignatureVerifier>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<(), WebauthnError> {
        verify_with(port, self.alg, &self.jwk, &self.key, signed, signature).await
    }
}

/// The one signature check: WebAuthn's signature format converted to the JWS one (ES256: DER
/// to r||s), then the port's verdict where it gives one, else the pure-Rust verifier.
pub(crate) async fn verify_with(
    port: Option<&dyn crate::ports::SignatureVerifier>,
    alg: CoseAlg,
    jwk: &Json,
    key: &PublicKey,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), WebauthnError> {
    let raw = match alg {
        CoseAlg::Es256 => der_to_raw_p256(signature)?.to_vec(),
        _ => signature.to_vec(),
    };
    if let Some(port) = port {
        if let Some(valid) = port.verify(alg.jws(), jwk, signed, &raw).await {
            return if valid { Ok(()) } else { Err(WebauthnError::BadSignature) };
        }
    }
    if verify_native(alg, key, signed, &raw) {
        Ok(())
    } else {
        Err(WebauthnError::BadSignature)
    }
}

fn verify_native(alg: CoseAlg, key: &PublicKey, signed: &[u8], raw: &[u8]) -> bool {
    use sha2::Digest;
    match (alg, key) {
        (CoseAlg::Es256, PublicKey::P256(k)) => {
            use p256::ecdsa::signature::Verifier;
            p256::ecdsa::Signature::from_slice(raw).is_ok_and(|s| k.verify(signed, &s).is_ok())
        }
        (CoseAlg::Rs256, PublicKey::Rsa(k)) => {
            k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &sha2::Sha256::digest(signed), raw).is_ok()
        }
        (CoseAlg::EdDsa, PublicKey::Ed25519(k)) => {
            ed25519_compact::Signature::from_slice(raw).is_ok_and(|s| k.verify(signed, &s).is_ok())
        }
        _ => false,
    }
}

/// An ECDSA P-256 signature in strict DER (`SEQUENCE { r INTEGER, s INTEGER }`, RFC 3279
/// 2.2.3) as the 64-byte r||s WebCrypto and JWS use. Refused: long-form or wrong lengths,
/// negative or zero integers, a leading zero that is not needed, integers wider than 32
/// bytes, bytes after the sequence.
pub fn der_to_raw_p256(der: &[u8]) -> Result<[u8; 64], WebauthnError> {
    let bad = WebauthnError::BadDer;
    // The longest: 2 + 2 * (2 + 33) bytes, so every length is in short form.
    if der.len() > 72 {
        return Err(bad);
    }
    let (&tag, rest) = der.split_first().ok_or(bad.clone())?;
    let (&len, body) = rest.split_first().ok_or(bad.clone())?;
    if tag != 0x30 || usize::from(len) != body.len() || len >= 0x80 {
        return Err(bad);
    }
    let (r, body) = der_uint(body)?;
    let (s, body) = der_uint(body)?;
    if !body.is_empty() {
        return Err(bad);
    }
    let mut out = [0u8; 64];
    out.get_mut(32 - r.len()..32).ok_or(bad.clone())?.copy_from_slice(r);
    out.get_mut(64 - s.len()..).ok_or(bad)?.copy_from_slice(s);
    Ok(out)
}

/// One positive INTEGER of at most 32 significant bytes; returns its magnitude and the rest.
fn der_uint(input: &[u8]) -> Result<(&[u8], &[u8]), WebauthnError> {
    let bad = WebauthnError::BadDer;
    let (&tag, rest) = input.split_first().ok_or(bad.clone())?;
    let (&len, rest) = rest.split_first().ok_or(bad.clone())?;
    let len = usize::from(len);
    if tag != 0x02 || len == 0 || len > 33 || rest.len() < len {
        return Err(bad);
    }
    let (int, rest) = rest.split_at(len);
    let first = int.first().copied().unwrap_or_default();
    if first & 0x80 != 0 {
        return Err(bad); // negative
    }
    let magnitude = if first == 0 {
        match int.get(1) {
            // A leading zero only where the next byte's high bit would read as a sign.
            Some(next) if next & 0x80 != 0 => int.get(1..).unwrap_or_default(),
            _ if len == 1 => return Err(bad), // zero
            _ => return Err(bad),             // non-minimal
        }
    } else {
        int
    };
    if magnitude.len() > 32 {
        return Err(bad);
    }
    Ok((magnitude, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_conversion_is_strict() {
        // r = 1, s = 0x80 (needs its leading zero).
        let ok = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80];
        let raw = der_to_raw_p256(&ok).unwrap();
        assert_eq!(raw[31], 1);
        assert_eq!(raw[63], 0x80);
        assert!(raw[..31].iter().chain(&raw[32..63]).all(|b| *b == 0));
        let refused: &[&[u8]] = &[
            &[],
            &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], // not a SEQUENCE
            &[0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], // length too long
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00], // trailing byte
            &[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01], // negative r
            &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01], // zero r
            &[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], // needless leading zero
            &[0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], // long-form length
            &[0x30, 0x03, 0x02, 0x01, 0x01],                   // one integer
        ];
        for der in refused {
            assert_eq!(der_to_raw_p256(der), Err(WebauthnError::BadDer), "{der:02x?}");
        }
        // 33 significant bytes.
        let mut wide = vec![0x30, 0x26, 0x02, 0x21];
        wide.extend([0x01; 33]);
        wide.extend([0x02, 0x01, 0x01]);
        assert_eq!(der_to_raw_p256(&wide), Err(WebauthnError::BadDer));
    }
}
