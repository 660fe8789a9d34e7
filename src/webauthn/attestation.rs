//! Attestation statements (§8): `none` (§8.7) and `packed` (§8.2), self attestation and
//! with an attestation certificate (`x5c`).
//!
//! The tenant chooses with [`AttestationPolicy`]:
//! - [`AttestationPolicy::None`] (the default; options ask for `attestation: "none"`): the
//!   statement is not examined, whatever its format — the gateway needs the credential key,
//!   not the authenticator's model, and a statement it did not ask for must not make a
//!   registration fail. The result is [`AttestationType::None`].
//! - [`AttestationPolicy::Packed`] (options ask for `"direct"`): only a `packed` statement that
//!   verifies is accepted; `none` and every other format are refused.
//!
//! Not verified yet: the chain from the attestation certificate to a trusted root (no
//! trust anchors or FIDO metadata are configured), so [`AttestationType::Basic`] says the
//! statement was made by the key in the leaf certificate, whose SHA-256 it carries, and not
//! that the authenticator model is genuine.

use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use super::cbor::Value;
use super::cose::{CoseAlg, CredentialKey};
use super::WebauthnError;
use crate::crypto::{b64url, hex};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttestationPolicy {
    #[default]
    None,
    Packed,
}

impl AttestationPolicy {
    /// The options' `attestation` conveyance preference.
    pub fn conveyance(self) -> &'static str {
        match self {
            AttestationPolicy::None => "none",
            AttestationPolicy::Packed => "direct",
        }
    }
}

/// What the attestation statement established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationType {
    /// Not examined (or `none`).
    None,
    /// `packed` without a certificate: signed by the credential key itself.
    SelfAttestation,
    /// `packed` with `x5c`: signed by the key of the leaf certificate (hex SHA-256 of its DER);
    /// the chain was not checked against trust anchors.
    Basic { leaf_sha256: String, chain_len: usize },
}

/// Most certificates in `x5c`, and largest certificate, accepted.
const MAX_CHAIN: usize = 5;
const MAX_CERT: usize = 4096;
/// `id-fido-gen-ce-aaguid` (§8.2.1).
const OID_FIDO_AAGUID: &str = "1.3.6.1.4.1.45724.1.1.4";

/// What the attestation statement is checked against.
pub(crate) struct Statement<'s, 'v> {
    pub fmt: &'s str,
    pub att_stmt: &'s Value<'v>,
    /// The authenticator data as received.
    pub auth_data: &'s [u8],
    pub client_data_hash: [u8; 32],
    pub credential: &'s CredentialKey,
    pub aaguid: [u8; 16],
    pub now: u64,
}

/// Verifies the statement over `auth_data || client_data_hash` (§7.1 steps 21-22) under
/// `policy`.
pub(crate) async fn verify(
    policy: AttestationPolicy,
    st: &Statement<'_, '_>,
    port: Option<&dyn crate::ports::SignatureVerifier>,
) -> Result<AttestationType, WebauthnError> {
    match (policy, st.fmt) {
        (AttestationPolicy::None, _) => Ok(AttestationType::None),
        (AttestationPolicy::Packed, "packed") => packed(st, port).await,
        (AttestationPolicy::Packed, other) => Err(WebauthnError::AttestationUnsupported(other.to_owned())),
    }
}

/// §8.2 "Verification procedure".
async fn packed(
    st: &Statement<'_, '_>,
    port: Option<&dyn crate::ports::SignatureVerifier>,
) -> Result<AttestationType, WebauthnError> {
    let invalid = WebauthnError::AttestationInvalid;
    let att_stmt = st.att_stmt;
    // Step 1: attStmt is valid CBOR of the syntax above: alg, sig, optionally x5c, nothing else.
    let entries = att_stmt.as_map().ok_or(invalid("attStmt is not a map"))?;
    if entries.iter().any(|(k, _)| !matches!(k.as_text(), Some("alg" | "sig" | "x5c"))) {
        return Err(invalid("attStmt has members other than alg, sig and x5c"));
    }
    let alg_id = att_stmt.get_text("alg").and_then(Value::as_i64).ok_or(invalid("attStmt alg missing"))?;
    let alg = CoseAlg::from_cose(alg_id).ok_or(WebauthnError::AlgorithmNotAllowed(alg_id))?;
    let sig = att_stmt.get_text("sig").and_then(Value::as_bytes).ok_or(invalid("attStmt sig missing"))?;
    let mut signed = Vec::with_capacity(st.auth_data.len() + 32);
    signed.extend_from_slice(st.auth_data);
    signed.extend_from_slice(&st.client_data_hash);
    match att_stmt.get_text("x5c") {
        // Step 2: x5c present.
        Some(x5c) => {
            let chain = x5c.as_array().ok_or(invalid("x5c is not an array"))?;
            if chain.is_empty() || chain.len() > MAX_CHAIN {
                return Err(invalid("x5c holds no or too many certificates"));
            }
            let mut ders = Vec::with_capacity(chain.len());
            for c in chain {
                let der = c.as_bytes().ok_or(invalid("x5c entry is not a byte string"))?;
                if der.len() > MAX_CERT {
                    return Err(WebauthnError::TooLarge);
                }
                ders.push(der);
            }
            let leaf = ders.first().copied().ok_or(invalid("x5c holds no certificate"))?;
            let key = leaf_key(leaf, alg, &st.aaguid, st.now)?;
            // The signature by the attestation certificate's key, with alg.
            key.verify(port, &signed, sig).await.map_err(|e| match e {
                WebauthnError::BadSignature => invalid("signature does not verify with the attestation certificate"),
                other => other,
            })?;
            Ok(AttestationType::Basic { leaf_sha256: hex(&Sha256::digest(leaf)), chain_len: ders.len() })
        }
        // Step 3: self attestation: alg is the credential key's, the signature is by it.
        None => {
            if alg != st.credential.alg() {
                return Err(invalid("self attestation alg differs from the credential's"));
            }
            st.credential.verify(port, &signed, sig).await.map_err(|e| match e {
                WebauthnError::BadSignature => invalid("self attestation signature does not verify"),
                other => other,
            })?;
            Ok(AttestationType::SelfAttestation)
        }
    }
}

/// The leaf certificate's requirements (§8.2.1) and its key, for `alg`.
fn leaf_key(der: &[u8], alg: CoseAlg, aaguid: &[u8; 16], now: u64) -> Result<CredentialKey, WebauthnError> {
    let invalid = WebauthnError::AttestationInvalid;
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|_| invalid("attestation certificate is not X.509 DER"))?;
    let tbs = &cert.tbs_certificate;
    // Version MUST be set to 3 (value 2).
    if tbs.version != x509_cert::Version::V3 {
        return Err(invalid("attestation certificate is not version 3"));
    }
    let validity = &tbs.validity;
    if now < validity.not_before.to_unix_duration().as_secs() || now > validity.not_after.to_unix_duration().as_secs() {
        return Err(invalid("attestation certificate is outside its validity"));
    }
    // Subject: C, O, OU = "Authenticator Attestation", CN.
    let mut seen = [false; 4];
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter() {
            let text = std::str::from_utf8(atv.value.value()).unwrap_or_default();
            match atv.oid.to_string().as_str() {
                "2.5.4.6" => seen[0] = text.len() == 2,
                "2.5.4.10" => seen[1] = !text.is_empty(),
                "2.5.4.11" => seen[2] = text == "Authenticator Attestation",
                "2.5.4.3" => seen[3] = !text.is_empty(),
                _ => {}
            }
        }
    }
    if seen != [true; 4] {
        return Err(invalid("attestation certificate subject lacks C, O, OU or CN"));
    }
    let mut basic_constraints_ok = false;
    for ext in tbs.extensions.iter().flatten() {
        match ext.extn_id.to_string().as_str() {
            // If present, the AAGUID extension is not critical and equals authData's AAGUID.
            OID_FIDO_AAGUID => {
                let inner = x509_cert::der::asn1::OctetString::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| invalid("attestation certificate AAGUID extension malformed"))?;
                if ext.critical || inner.as_bytes() != aaguid {
                    return Err(invalid("attestation certificate AAGUID differs from authenticator data"));
                }
            }
            // The Basic Constraints extension MUST have the CA component set to false.
            "2.5.29.19" => {
                let bc = x509_cert::ext::pkix::BasicConstraints::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| invalid("attestation certificate basic constraints malformed"))?;
                basic_constraints_ok = !bc.ca;
            }
            _ => {}
        }
    }
    if !basic_constraints_ok {
        return Err(invalid("attestation certificate is not marked CA=false"));
    }
    let spki = tbs.subject_public_key_info.to_der().map_err(|_| invalid("attestation certificate key"))?;
    let jwk = spki_jwk(&spki, alg).ok_or(invalid("attestation certificate key does not fit alg"))?;
    CredentialKey::from_jwk(alg, &jwk).map_err(|_| invalid("attestation certificate key refused"))
}

/// The public JWK of a SubjectPublicKeyInfo, for ES256 (P-256) or RS256 (RSA).
fn spki_jwk(spki: &[u8], alg: CoseAlg) -> Option<serde_json::Value> {
    use p256::pkcs8::DecodePublicKey;
    match alg {
        CoseAlg::Es256 => {
            let key = p256::PublicKey::from_public_key_der(spki).ok()?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key, false);
            Some(serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": b64url(point.x()?), "y": b64url(point.y()?)
            }))
        }
        CoseAlg::Rs256 => {
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPublicKey::from_public_key_der(spki).ok()?;
            Some(
                serde_json::json!({"kty": "RSA", "n": b64url(&key.n().to_bytes_be()), "e": b64url(&key.e().to_bytes_be())}),
            )
        }
        CoseAlg::EdDsa => None,
    }
}
