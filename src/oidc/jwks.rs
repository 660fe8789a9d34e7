//! JSON Web Key Sets: parsing the provider's published keys into verifying keys.

use jwt_compact::jwk::JsonWebKey;
use serde_json::Value;

#[derive(Clone)]
pub enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_compact::PublicKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublicKey::Rsa(_) => "Rsa",
            PublicKey::P256(_) => "P256",
            PublicKey::Ed25519(_) => "Ed25519",
        })
    }
}

impl PublicKey {
    pub fn fits(&self, alg: &str) -> bool {
        matches!(
            (self, alg),
            (PublicKey::Rsa(_), "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512")
                | (PublicKey::P256(_), "ES256")
                | (PublicKey::Ed25519(_), "EdDSA")
        )
    }
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub key_use: Option<String>,
    pub key: PublicKey,
    /// The public members as JSON (`kty`, `n`/`e`, `crv`/`x`/`y`), for a runtime's own
    /// crypto (WebCrypto `importKey("jwk", …)`).
    pub public_jwk: Value,
}

impl Jwk {
    pub fn usable_for_signatures(&self) -> bool {
        self.key_use.as_deref().is_none_or(|u| u == "sig")
    }
}

/// Result of parsing a JWKS: usable keys, plus why other entries were skipped.
#[derive(Debug, Clone, Default)]
pub struct ParsedJwks {
    pub keys: Vec<Jwk>,
    pub skipped: Vec<String>,
}

/// RSA keys shorter than this are refused.
pub const MIN_RSA_BITS: usize = 2048;
/// Most keys in one JWKS (providers publish a few; a rollover adds one or two).
pub const MAX_JWKS_KEYS: usize = 100;

pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v.get("keys").and_then(Value::as_array).ok_or("JWKS has no \"keys\" array")?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(format!("JWKS has more than {MAX_JWKS_KEYS} keys ({})", keys.len()));
    }
    let mut out = ParsedJwks::default();
    for (i, k) in keys.iter().enumerate() {
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
        let label = kid.clone().unwrap_or_else(|| format!("#{i}"));
        match parse_key(k) {
            Ok((key, public_jwk)) => out.keys.push(Jwk {
                public_jwk,
                kid,
                alg: k.get("alg").and_then(Value::as_str).map(str::to_owned),
                key_use: k.get("use").and_then(Value::as_str).map(str::to_owned),
                key,
            }),
            Err(e) => out.skipped.push(format!("{label}: {e}")),
        }
    }
    Ok(out)
}

fn parse_key(k: &Value) -> Result<(PublicKey, Value), String> {
    let kty = k.get("kty").and_then(Value::as_str).unwrap_or_default();
    // Only the public parts are read; private members, if an IdP publishes them by
    // mistake, are ignored.
    let public_only = match kty {
        "RSA" => serde_json::json!({"kty": "RSA", "n": k.get("n"), "e": k.get("e")}),
        "EC" => {
            serde_json::json!({"kty": "EC", "crv": k.get("crv"), "x": k.get("x"), "y": k.get("y")})
        }
        "OKP" => serde_json::json!({"kty": "OKP", "crv": k.get("crv"), "x": k.get("x")}),
        other => return Err(format!("unsupported key type {other:?}")),
    };
    let jwk: JsonWebKey<'_> = serde_json::from_value(public_only.clone()).map_err(|e| e.to_string())?;
    let key = parse_public(kty, k, &jwk)?;
    Ok((key, public_only))
}

fn parse_public(kty: &str, k: &Value, jwk: &JsonWebKey<'_>) -> Result<PublicKey, String> {
    match kty {
        "RSA" => {
            let key = rsa::RsaPublicKey::try_from(jwk).map_err(|e| e.to_string())?;
            if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
                return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
            }
            Ok(PublicKey::Rsa(key))
        }
        "EC" => match k.get("crv").and_then(Value::as_str) {
            Some("P-256") => p256::ecdsa::VerifyingKey::try_from(jwk).map(PublicKey::P256).map_err(|e| e.to_string()),
            other => Err(format!("unsupported curve {other:?}")),
        },
        _ => match k.get("crv").and_then(Value::as_str) {
            Some("Ed25519") => {
                ed25519_compact::PublicKey::try_from(jwk).map(PublicKey::Ed25519).map_err(|e| e.to_string())
            }
            other => Err(format!("unsupported curve {other:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key set is a handful of keys; tens of thousands of entries (each costing a parse
    /// and an error) are refused as a whole before any is looked at.
    #[test]
    fn key_count_is_bounded() {
        let many = format!(r#"{{"keys":[{}{{"kty":"EC"}}]}}"#, r#"{"kty":"EC"},"#.repeat(MAX_JWKS_KEYS));
        let err = parse_jwks(many.as_bytes()).err().unwrap_or_default();
        assert!(err.contains("more than"), "{err:?}");
        let at_limit = format!(r#"{{"keys":[{}{{"kty":"EC"}}]}}"#, r#"{"kty":"EC"},"#.repeat(MAX_JWKS_KEYS - 1));
        assert_eq!(parse_jwks(at_limit.as_bytes()).map(|p| p.skipped.len()), Ok(MAX_JWKS_KEYS));
    }
}
