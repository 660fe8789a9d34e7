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

/// One DER element at the start of `input`: its tag, its contents and what follows. Lengths
/// in their shortest definite form only, as DER requires, and below 256 bytes: a P-256 key
/// document is at most about 150.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0x00..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (len >= 0x80).then_some((usize::from(len), rest))?
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The DER contents of OID 1.2.840.10045.2.1 (`id-ecPublicKey`).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// The DER contents of OID 1.2.840.10045.3.1.7 (`prime256v1`, P-256).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A PKCS#8 P-256 private key: the scalar and the optional public key, without deriving or
/// checking the public key (see [`SigningKey::key`]).
///
/// The two structures are read here, by their fixed shapes (RFC 5958 `OneAsymmetricKey`
/// holding an RFC 5915 `ECPrivateKey`), rather than by the `der` crate's generic decoder:
/// that decoder's code was about a quarter of a new isolate's configuration load in wasm
/// (BENCHMARKS.md, issue 21 third round). A test compares the two on every truncation and
/// every single-byte change of the usual encodings. Stricter than the generic decoder in two
/// ways: no context-specific fields beyond attributes and the public key, and a curve named
/// inside the ECPrivateKey must be P-256 too (the generic decoder took any curve's name).
fn p256_pkcs8(doc: &[u8]) -> Option<(p256::SecretKey, Option<Vec<u8>>)> {
    // OneAsymmetricKey ::= SEQUENCE { version INTEGER (v1(0) | v2(1)), privateKeyAlgorithm
    //   SEQUENCE { algorithm OID, parameters OID }, privateKey OCTET STRING,
    //   attributes [0] IMPLICIT OPTIONAL, publicKey [1] IMPLICIT BIT STRING (v2 only) }
    let (0x30, info, []) = der_element(doc)? else { return None };
    let (0x02, version, rest) = der_element(info)? else { return None };
    let v2 = match version {
        [0] => false,
        [1] => true,
        _ => return None,
    };
    let (0x30, algorithm, rest) = der_element(rest)? else { return None };
    let (0x06, OID_EC_PUBLIC_KEY, parameters) = der_element(algorithm)? else { return None };
    let (0x06, OID_P256, []) = der_element(parameters)? else { return None };
    let (0x04, private_key, mut rest) = der_element(rest)? else { return None };
    if let Some((0xa0, _, after)) = der_element(rest) {
        rest = after;
    }
    let outer_public = match der_element(rest) {
        Some((0x81, bits, [])) => Some(bit_string(bits)?),
        None if rest.is_empty() => None,
        _ => return None,
    };
    if v2 != outer_public.is_some() {
        return None;
    }
    // ECPrivateKey ::= SEQUENCE { version INTEGER (1), privateKey OCTET STRING,
    //   parameters [0] EXPLICIT OID OPTIONAL, publicKey [1] EXPLICIT BIT STRING OPTIONAL }
    let (0x30, ec, []) = der_element(private_key)? else { return None };
    let (0x02, [1], rest) = der_element(ec)? else { return None };
    let (0x04, scalar, mut rest) = der_element(rest)? else { return None };
    if let Some((0xa0, parameters, after)) = der_element(rest) {
        let (0x06, OID_P256, []) = der_element(parameters)? else { return None };
        rest = after;
    }
    let public = match der_element(rest) {
        Some((0xa1, explicit, [])) => {
            let (0x03, bits, []) = der_element(explicit)? else { return None };
            Some(bit_string(bits)?)
        }
        None if rest.is_empty() => None,
        _ => return None,
    };
    let secret = p256::SecretKey::from_slice(scalar).ok()?;
    Some((secret, public.map(<[u8]>::to_vec)))
}

/// The bytes of a DER BIT STRING's contents, which must have no unused bits.
fn bit_string(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first()? {
        (0, bytes) => Some(bytes),
        _ => None,
    }
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

    /// The `der` crate's reading of the same document, as this module read it before.
    fn p256_pkcs8_by_der_crate(der: &[u8]) -> Option<(p256::SecretKey, Option<Vec<u8>>)> {
        use p256::pkcs8::{AssociatedOid, PrivateKeyInfo};
        use sec1::der::Decode;
        let info = PrivateKeyInfo::try_from(der).ok()?;
        info.algorithm.assert_oids(p256::elliptic_curve::ALGORITHM_OID, p256::NistP256::OID).ok()?;
        let ec = sec1::EcPrivateKey::from_der(info.private_key).ok()?;
        let secret = p256::SecretKey::from_slice(ec.private_key).ok()?;
        Some((secret, ec.public_key.map(<[u8]>::to_vec)))
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The usual encodings of one key: with its public key (what Node, OpenSSL 3 and the
    /// p256 crate write), without it, with the curve repeated inside ECPrivateKey (OpenSSL's
    /// `ec -outform DER` wrapped in PKCS#8), with attributes, and as version 2.
    fn encodings(k: &p256::SecretKey) -> Vec<Vec<u8>> {
        let scalar = k.to_bytes().to_vec();
        let point = k.public_key().to_encoded_point(false).as_bytes().to_vec();
        let alg = hex("301306072a8648ce3d020106082a8648ce3d030107");
        let wrap = |tag: u8, body: &[u8]| {
            let mut out = vec![tag];
            match body.len() {
                l @ 0..=0x7f => out.push(l as u8),
                l => out.extend([0x81, u8::try_from(l).unwrap()]),
            }
            out.extend_from_slice(body);
            out
        };
        let ec = |params: bool, public: bool| {
            let mut body = hex("020101");
            body.extend(wrap(0x04, &scalar));
            if params {
                body.extend(wrap(0xa0, &hex("06082a8648ce3d030107")));
            }
            if public {
                let mut bits = vec![0];
                bits.extend_from_slice(&point);
                body.extend(wrap(0xa1, &wrap(0x03, &bits)));
            }
            wrap(0x30, &body)
        };
        let pkcs8 = |version: u8, inner: Vec<u8>, attributes: bool, outer_public: bool| {
            let mut body = vec![0x02, 0x01, version];
            body.extend_from_slice(&alg);
            body.extend(wrap(0x04, &inner));
            if attributes {
                body.extend(wrap(0xa0, &hex("300d06092a864886f70d01090731003000")[..0]));
            }
            if outer_public {
                let mut bits = vec![0];
                bits.extend_from_slice(&point);
                body.extend(wrap(0x81, &bits));
            }
            wrap(0x30, &body)
        };
        vec![
            k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
            pkcs8(0, ec(false, true), false, false),
            pkcs8(0, ec(false, false), false, false),
            pkcs8(0, ec(true, true), false, false),
            pkcs8(0, ec(true, false), true, false),
            pkcs8(1, ec(false, false), false, true),
        ]
    }

    #[test]
    fn the_pkcs8_reader_agrees_with_the_der_crate_on_every_truncation_and_byte_change() {
        let same = |a: Option<(p256::SecretKey, Option<Vec<u8>>)>, b: Option<(p256::SecretKey, Option<Vec<u8>>)>| {
            a.map(|(s, p)| (s.to_bytes().to_vec(), p)) == b.map(|(s, p)| (s.to_bytes().to_vec(), p))
        };
        let (mut accepted, mut other_curves, mut other_fields) = (0, 0, 0);
        for seed in [7u8] {
            let k = p256::SecretKey::from_slice(&[seed; 32]).unwrap();
            for doc in encodings(&k) {
                assert!(p256_pkcs8(&doc).is_some(), "the usual encoding {} is read", crate::crypto::b64(&doc));
                for cut in 0..doc.len() {
                    assert!(p256_pkcs8(&doc[..cut]).is_none() && p256_pkcs8_by_der_crate(&doc[..cut]).is_none());
                }
                for at in 0..doc.len() {
                    for byte in 0..=255u8 {
                        let mut changed = doc.clone();
                        changed[at] = byte;
                        let (ours, theirs) = (p256_pkcs8(&changed), p256_pkcs8_by_der_crate(&changed));
                        accepted += usize::from(ours.is_some());
                        // Another curve's name inside the ECPrivateKey: refused here only.
                        let inner_curve = doc.windows(12).position(|w| w == hex("a00a06082a8648ce3d030107"));
                        if ours.is_none() && inner_curve.is_some_and(|c| (c + 4..c + 12).contains(&at)) {
                            other_curves += usize::from(theirs.is_some());
                            continue;
                        }
                        // A context-specific field turned into another, which the der crate
                        // skips (it reads past unknown lower-numbered fields): refused here.
                        if ours.is_none() && [0xa0, 0xa1, 0x81].contains(&doc[at]) && byte & 0xc0 == 0x80 {
                            other_fields += usize::from(theirs.is_some());
                            continue;
                        }
                        assert!(
                            same(ours.clone(), theirs.clone()),
                            "byte {at} set to {byte:#04x} in {}: read here {}, by the der crate {}",
                            crate::crypto::b64(&doc),
                            ours.is_some(),
                            theirs.is_some()
                        );
                    }
                }
            }
        }
        assert!(accepted > 1000, "changes inside the scalar and the public key are still keys: {accepted}");
        assert!(other_curves > 0, "the der crate takes another curve's name inside the ECPrivateKey");
        assert!(other_fields > 0, "the der crate skips unknown context-specific fields");
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
