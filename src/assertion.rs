//! The signed assertion the gateway sends to the origin: a short-lived JWT (ES256 or EdDSA)
//! naming the user, which the origin verifies with the gateway's published JWKS at
//! `/.well-known/portcullis/jwks.json`. Several keys are published so keys rotate.

use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::{AlgorithmExt, Claims, Header};
use p256::pkcs8::DecodePrivateKey;
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

/// A signing key loaded from a Worker secret (PKCS#8, PEM or base64 DER).
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    key: Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.id, self.alg())
    }
}

/// PKCS#8 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

impl SigningKey {
    pub fn parse(id: &str, secret: &Secret) -> Result<Self, String> {
        let der = pem_or_base64_der(secret.expose_str()).ok_or("not PEM or base64 PKCS#8")?;
        if der.len() == 48 && der[..16] == ED25519_PKCS8_PREFIX {
            let seed = ed25519_compact::Seed::from_slice(&der[16..]).map_err(|e| e.to_string())?;
            return Ok(Self { id: id.to_owned(), key: Key::Ed25519(ed25519_compact::KeyPair::from_seed(seed)) });
        }
        p256::ecdsa::SigningKey::from_pkcs8_der(&der)
            .map(|k| Self { id: id.to_owned(), key: Key::Es256(k) })
            .map_err(|_| "not a PKCS#8 P-256 or Ed25519 private key".to_owned())
    }

    pub fn alg(&self) -> &'static str {
        match self.key {
            Key::Es256(_) => "ES256",
            Key::Ed25519(_) => "EdDSA",
        }
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> Value {
        match &self.key {
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
        }
    }

    /// Signs `claims` with `iat` = now and `exp` = now + [`LIFETIME`].
    pub fn sign<T: Serialize>(&self, claims: &T, now: u64) -> Option<String> {
        let header = Header::empty().with_key_id(self.id.clone()).with_token_type("JWT");
        let mut c = Claims::new(claims);
        c.issued_at = chrono_ts(now);
        c.expiration = chrono_ts(now + LIFETIME);
        match &self.key {
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
    json!({ "keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
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
