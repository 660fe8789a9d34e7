//! Small cryptographic helpers shared by the protocol modules: keyed hashes, constant-time
//! comparison, AES-256-GCM sealing with key ids, base64url.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Signature algorithms accepted for ID tokens. `none` is never accepted; HMAC only when the
/// provider is configured for it (its key is the client secret, shared with the IdP).
pub const ASYMMETRIC_JWS_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA"];

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(&clean).ok().or_else(|| b64url_decode(&clean))
}

/// The DER bytes of a PEM block (any label) or of plain base64.
pub fn pem_or_base64_der(text: &str) -> Option<Vec<u8>> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("");
    b64_decode(&body)
}

/// An RSA private key from a Worker secret (PKCS#8, PEM or base64 DER).
pub fn rsa_private_key(text: &str) -> Result<rsa::RsaPrivateKey, String> {
    use rsa::pkcs8::DecodePrivateKey;
    let der = pem_or_base64_der(text).ok_or("not PEM or base64")?;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| "not a PKCS#8 RSA private key".to_owned())?;
    if rsa::traits::PublicKeyParts::size(&key) * 8 < 2048 {
        return Err("RSA key shorter than 2048 bits".into());
    }
    Ok(key)
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// HMAC-SHA256 of `parts`, each prefixed by its length so that no two different part
/// lists produce the same input.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A symmetric key with an id, so stored values say which key sealed them and keys rotate.
#[derive(Clone, Debug)]
pub struct KeyWithId {
    pub id: String,
    pub key: Secret,
}

impl KeyWithId {
    /// Derives fixed-length key material for one purpose from the configured secret, so one
    /// Worker secret never serves two purposes with the same bytes.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(self.key.expose(), &[b"portcullis-kdf", purpose.as_bytes()])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    Malformed,
    UnknownKey(String),
    Decrypt,
}

/// Seals `plaintext` with AES-256-GCM under the first key. Output: `v1.{kid}.{nonce}.{ct}`.
/// `aad` binds the ciphertext to its context (e.g. the record it lives in).
pub fn seal(keys: &[KeyWithId], purpose: &str, aad: &[u8], nonce: [u8; 12], plaintext: &[u8]) -> Option<String> {
    let key = keys.first()?;
    let cipher = Aes256Gcm::new_from_slice(&key.derive(purpose)).ok()?;
    let ct = cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad }).ok()?;
    Some(format!("v1.{}.{}.{}", key.id, b64url(&nonce), b64url(&ct)))
}

/// Opens a value made by [`seal`] with whichever configured key its id names.
pub fn open(keys: &[KeyWithId], purpose: &str, aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
    let mut it = sealed.split('.');
    let (Some("v1"), Some(kid), Some(nonce), Some(ct), None) = (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(SealError::Malformed);
    };
    let key = keys.iter().find(|k| k.id == kid).ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
    let nonce: [u8; 12] = b64url_decode(nonce).and_then(|n| n.try_into().ok()).ok_or(SealError::Malformed)?;
    let ct = b64url_decode(ct).ok_or(SealError::Malformed)?;
    let cipher = Aes256Gcm::new_from_slice(&key.derive(purpose)).map_err(|_| SealError::Decrypt)?;
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: &ct, aad }).map_err(|_| SealError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<KeyWithId> {
        vec![
            KeyWithId { id: "new".into(), key: Secret::new(b"new-key-material".to_vec()) },
            KeyWithId { id: "old".into(), key: Secret::new(b"old-key-material".to_vec()) },
        ]
    }

    #[test]
    fn seal_open_round_trip_and_rotation() {
        let k = keys();
        let sealed = seal(&k, "tokens", b"sess-1", [7; 12], b"refresh-token").unwrap();
        assert!(sealed.starts_with("v1.new."));
        assert_eq!(open(&k, "tokens", b"sess-1", &sealed).unwrap(), b"refresh-token");
        // Sealed under the old key: still opens while the old key is configured.
        let old_only = vec![k[1].clone()];
        let sealed_old = seal(&old_only, "tokens", b"sess-1", [1; 12], b"x").unwrap();
        assert_eq!(open(&k, "tokens", b"sess-1", &sealed_old).unwrap(), b"x");
        // Removed key: refused with its id.
        assert_eq!(open(&k[..1], "tokens", b"sess-1", &sealed_old), Err(SealError::UnknownKey("old".into())));
    }

    #[test]
    fn open_refuses_other_context_purpose_and_tampering() {
        let k = keys();
        let sealed = seal(&k, "tokens", b"sess-1", [7; 12], b"secret").unwrap();
        assert_eq!(open(&k, "tokens", b"sess-2", &sealed), Err(SealError::Decrypt));
        assert_eq!(open(&k, "totp", b"sess-1", &sealed), Err(SealError::Decrypt));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(open(&k, "tokens", b"sess-1", &tampered), Err(SealError::Decrypt));
        assert_eq!(open(&k, "tokens", b"sess-1", "v2.x.y.z"), Err(SealError::Malformed));
    }

    #[test]
    fn hmac_parts_are_length_prefixed() {
        assert_ne!(hmac_sha256(b"k", &[b"ab", b"c"]), hmac_sha256(b"k", &[b"a", b"bc"]));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
