//! The signed assertion the gateway sends to the origin: a short-lived JWT (ES256 or EdDSA)
//! naming the user, which the origin verifies with the gateway's published JWKS at
//! `/.well-known/portcullis/jwks.json`. Several keys are published so keys rotate.

use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde::Serialize;
use serde_json::{json, Value};

use crate::crypto::{b64url, pem_or_base64_der};
use crate::secret::Secret;

pub const LIFETIME: u64 = 300;

#[derive(Clone)]
enum Key {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_compact::KeyPair),
}

/// The private key as read from the secret, before any curve arithmetic.
#[derive(Clone)]
enum Source {
    /// The scalar (range-checked) and the public key the PKCS#8 document carries, if any.
    Es256(p256::SecretKey, Option<Vec<u8>>),
    Ed25519(ed25519_compact::Seed),
}

/// A signing key loaded from a Worker secret (PKCS#8, PEM or base64 DER).
///
/// Loading decodes the document and checks the scalar's range only: deriving the public key
/// is a scalar multiplication (the larger part of a new isolate's configuration load in
/// wasm), done on the first signature or JWKS request instead, once per isolate.
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    source: Source,
    key: std::sync::OnceLock<Option<Key>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.id, self.alg())
    }
}

/// PKCS#8 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A PKCS#8 P-256 private key: the scalar and the optional public key, without deriving or
/// checking the public key (see [`SigningKey::key`]).
fn p256_pkcs8(der: &[u8]) -> Option<(p256::SecretKey, Option<Vec<u8>>)> {
    use p256::pkcs8::{AssociatedOid, PrivateKeyInfo};
    use sec1::der::Decode;
    let info = PrivateKeyInfo::try_from(der).ok()?;
    info.algorithm.assert_oids(p256::elliptic_curve::ALGORITHM_OID, p256::NistP256::OID).ok()?;
    let ec = sec1::EcPrivateKey::from_der(info.private_key).ok()?;
    let secret = p256::SecretKey::from_slice(ec.private_key).ok()?;
    Some((secret, ec.public_key.map(<[u8]>::to_vec)))
}

impl SigningKey {
    pub fn parse(id: &str, secret: &Secret) -> Result<Self, String> {
        let der = pem_or_base64_der(secret.expose_str()).ok_or("not PEM or base64 PKCS#8")?;
        let source = if der.len() == 48 && der[..16] == ED25519_PKCS8_PREFIX {
            let seed = ed25519_compact::Seed::from_slice(&der[16..]).map_err(|e| e.to_string())?;
            if seed.iter().all(|&b| b == 0) {
                return Err("an all-zero Ed25519 seed".into());
            }
            Source::Ed25519(seed)
        } else {
            let (secret, public) =
                p256_pkcs8(&der).ok_or_else(|| "not a PKCS#8 P-256 or Ed25519 private key".to_owned())?;
            Source::Es256(secret, public)
        };
        Ok(Self { id: id.to_owned(), source, key: std::sync::OnceLock::new() })
    }

    pub fn alg(&self) -> &'static str {
        match self.source {
            Source::Es256(..) => "ES256",
            Source::Ed25519(_) => "EdDSA",
        }
    }

    /// The key with its public half, derived on first use. `None` when the public key the
    /// PKCS#8 document carries is not the private key's (a damaged secret): the key then
    /// neither signs nor is published.
    fn key(&self) -> Option<&Key> {
        self.key
            .get_or_init(|| match &self.source {
                Source::Es256(secret, public) => {
                    let key = p256::ecdsa::SigningKey::from(secret);
                    if let Some(public) = public {
                        let compressed = public.first() == Some(&0x02) || public.first() == Some(&0x03);
                        if key.verifying_key().to_encoded_point(compressed).as_bytes() != public.as_slice() {
                            return None;
                        }
                    }
                    Some(Key::Es256(key))
                }
                Source::Ed25519(seed) => ed25519_compact::KeyPair::try_from_seed(*seed).ok().map(Key::Ed25519),
            })
            .as_ref()
    }

    /// The public half as a JWK (`None`: see [`Self::key`]).
    pub fn public_jwk(&self) -> Option<Value> {
        Some(match self.key()? {
            Key::Es256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-256", "kid": self.id, "use": "sig", "alg": "ES256",
                    "x": point.x().map(|x| b64url(x)).unwrap_or_default(),
                    "y": point.y().map(|y| b64url(y)).unwrap_or_default(),
                })
            }
            Key::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "kid": self.id, "use": "sig", "alg": "EdDSA",
                "x": b64url(k.pk.as_ref()),
            }),
        })
    }

    /// Signs `claims` with `iat` = now and `exp` = now + [`LIFETIME`].
    pub fn sign<T: Serialize>(&self, claims: &T, now: u64) -> Option<String> {
        let header = Header::empty().with_key_id(self.id.clone()).with_token_type("JWT");
        let mut c = Claims::new(claims);
        c.issued_at = chrono_ts(now);
        c.expiration = chrono_ts(now + LIFETIME);
        match self.key()? {
            Key::Es256(k) => Es256.token(&header, &c, k).ok(),
            Key::Ed25519(k) => Ed25519.token(&header, &c, &k.sk).ok(),
        }
    }
}

fn chrono_ts(secs: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(secs as i64, 0)
}

/// The JWKS document with every configured assertion key.
pub fn jwks(keys: &[SigningKey]) -> Value {
    json!({ "keys": keys.iter().filter_map(SigningKey::public_jwk).collect::<Vec<_>>() })
}

/// The assertion's claims (besides `iat`/`exp`).
#[derive(Debug, Clone, Serialize)]
pub struct AssertionClaims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<&'a str>,
    pub groups: &'a [String],
    pub roles: &'a [String],
    pub amr: &'a [String],
    pub idp: &'a str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: &'a std::collections::BTreeMap<String, Vec<String>>,
    /// `user` (a person) or `machine` (a client for itself, by bearer token).
    pub principal: &'a str,
    /// A bearer token's client (`client_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    /// A bearer token's scopes, space-separated (RFC 9068 2.2.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;

    use super::*;

    fn claims() -> serde_json::Value {
        json!({ "sub": "alice" })
    }

    #[test]
    fn a_p256_key_is_derived_on_first_use_and_matches_its_jwk() {
        let k = p256::SecretKey::random(&mut rand_core::OsRng);
        let der = k.to_pkcs8_der().unwrap();
        let key = SigningKey::parse("a1", &Secret::new(crate::crypto::b64(der.as_bytes()).into_bytes())).unwrap();
        assert!(key.key.get().is_none(), "loading derives nothing");
        let token = key.sign(&claims(), 1_000).unwrap();
        let jwk = key.public_jwk().unwrap();
        let point = k.public_key().to_encoded_point(false);
        assert_eq!(jwk["x"], b64url(point.x().unwrap()));
        assert_eq!(jwk["y"], b64url(point.y().unwrap()));
        assert_eq!(token.split('.').count(), 3);
    }

    #[test]
    fn a_pkcs8_document_whose_public_key_is_not_the_private_keys_neither_signs_nor_is_published() {
        let k = p256::SecretKey::random(&mut rand_core::OsRng);
        let mut der = k.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let last = der.len() - 1; // the public key's last byte (y)
        der[last] ^= 1;
        let key = SigningKey::parse("a1", &Secret::new(crate::crypto::b64(&der).into_bytes())).unwrap();
        assert!(key.sign(&claims(), 1_000).is_none());
        assert!(key.public_jwk().is_none());
        assert_eq!(jwks(std::slice::from_ref(&key))["keys"], json!([]));
    }

    #[test]
    fn out_of_range_scalars_and_zero_seeds_are_refused_at_load() {
        let mut ed = ED25519_PKCS8_PREFIX.to_vec();
        ed.extend_from_slice(&[0; 32]);
        assert!(SigningKey::parse("e", &Secret::new(crate::crypto::b64(&ed).into_bytes())).is_err());
        let k = p256::SecretKey::random(&mut rand_core::OsRng);
        let der = k.to_pkcs8_der().unwrap().as_bytes().to_vec();
        // The 32-byte scalar follows `04 20` inside the ECPrivateKey; all 0xff is above n.
        let at = der.windows(2).position(|w| w == [0x04, 0x20]).unwrap() + 2;
        let mut high = der.clone();
        high[at..at + 32].fill(0xff);
        assert!(SigningKey::parse("a", &Secret::new(crate::crypto::b64(&high).into_bytes())).is_err());
    }
}
