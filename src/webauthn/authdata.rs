//! Authenticator data (WebAuthn Level 3 §6.1): the RP ID hash, flags, signature counter,
//! attested credential data (§6.5.2) and extension outputs, read strictly — every byte must
//! belong to a field the flags announce.

use super::cbor::{self, Value};
use super::WebauthnError;

/// Longest credential id accepted (§5.8.3: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;
/// Longest authenticator data accepted (a COSE RSA key and extension outputs fit easily).
pub const MAX_AUTH_DATA: usize = 4096;

/// The flags byte (§6.1, table "Authenticator Data layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    pub const UP: u8 = 0x01;
    pub const UV: u8 = 0x04;
    pub const BE: u8 = 0x08;
    pub const BS: u8 = 0x10;
    pub const AT: u8 = 0x40;
    pub const ED: u8 = 0x80;

    pub fn bits(self) -> u8 {
        self.0
    }
    /// User present.
    pub fn up(self) -> bool {
        self.0 & Self::UP != 0
    }
    /// User verified.
    pub fn uv(self) -> bool {
        self.0 & Self::UV != 0
    }
    /// Backup eligible: the credential may be synced (a multi-device credential).
    pub fn be(self) -> bool {
        self.0 & Self::BE != 0
    }
    /// Backup state: the credential is backed up now.
    pub fn bs(self) -> bool {
        self.0 & Self::BS != 0
    }
    /// Attested credential data included.
    pub fn at(self) -> bool {
        self.0 & Self::AT != 0
    }
    /// Extension data included.
    pub fn ed(self) -> bool {
        self.0 & Self::ED != 0
    }
}

/// Attested credential data (§6.5.2).
#[derive(Debug, Clone)]
pub struct AttestedCredential<'a> {
    pub aaguid: [u8; 16],
    pub credential_id: &'a [u8],
    /// The COSE_Key as decoded.
    pub public_key: Value<'a>,
}

#[derive(Debug, Clone)]
pub struct AuthenticatorData<'a> {
    pub rp_id_hash: [u8; 32],
    pub flags: Flags,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential<'a>>,
    /// The extension outputs map, when the ED flag is set.
    pub extensions: Option<Value<'a>>,
    /// The bytes as received (signed over).
    pub raw: &'a [u8],
}

/// Parses authenticator data. Refused: fewer than 37 bytes, attested credential data or
/// extensions the flags do not announce (or announced and absent), a credential id over
/// [`MAX_CREDENTIAL_ID`] bytes, extensions that are not a map, bytes after the last field,
/// and BS set without BE (§6.1.3: a credential that cannot be backed up is not backed up).
pub fn parse(raw: &[u8]) -> Result<AuthenticatorData<'_>, WebauthnError> {
    let bad = |what: &'static str| WebauthnError::Malformed(what);
    if raw.len() > MAX_AUTH_DATA {
        return Err(WebauthnError::TooLarge);
    }
    let (head, mut rest) = raw.split_at_checked(37).ok_or(bad("authenticator data shorter than 37 bytes"))?;
    let mut rp_id_hash = [0u8; 32];
    rp_id_hash.copy_from_slice(head.get(..32).ok_or(bad("authenticator data"))?);
    let flags = Flags(head.get(32).copied().ok_or(bad("authenticator data"))?);
    let mut count = [0u8; 4];
    count.copy_from_slice(head.get(33..37).ok_or(bad("authenticator data"))?);
    let sign_count = u32::from_be_bytes(count);
    if flags.bs() && !flags.be() {
        return Err(WebauthnError::BackupFlagsInvalid);
    }
    let attested = if flags.at() {
        let (aaguid_bytes, r) = rest.split_at_checked(16).ok_or(bad("attested credential data truncated"))?;
        let (len, r) = r.split_at_checked(2).ok_or(bad("attested credential data truncated"))?;
        let len =
            usize::from(u16::from_be_bytes([len.first().copied().unwrap_or(0), len.get(1).copied().unwrap_or(0)]));
        if len > MAX_CREDENTIAL_ID {
            return Err(WebauthnError::CredentialIdTooLong);
        }
        if len == 0 {
            return Err(bad("empty credential id"));
        }
        let (credential_id, r) = r.split_at_checked(len).ok_or(bad("credential id truncated"))?;
        let (public_key, used) = cbor::decode_prefix(r).map_err(WebauthnError::Cbor)?;
        rest = r.get(used..).unwrap_or_default();
        let mut aaguid = [0u8; 16];
        aaguid.copy_from_slice(aaguid_bytes);
        Some(AttestedCredential { aaguid, credential_id, public_key })
    } else {
        None
    };
    let extensions = if flags.ed() {
        let (ext, used) = cbor::decode_prefix(rest).map_err(WebauthnError::Cbor)?;
        if ext.as_map().is_none() {
            return Err(bad("extensions are not a map"));
        }
        rest = rest.get(used..).unwrap_or_default();
        Some(ext)
    } else {
        None
    };
    if !rest.is_empty() {
        return Err(WebauthnError::Cbor(cbor::CborError::TrailingBytes));
    }
    Ok(AuthenticatorData { rp_id_hash, flags, sign_count, attested, extensions, raw })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(flags: u8, count: u32) -> Vec<u8> {
        let mut v = vec![7u8; 32];
        v.push(flags);
        v.extend(count.to_be_bytes());
        v
    }

    #[test]
    fn minimal_assertion_data() {
        let raw = head(Flags::UP | Flags::UV, 78);
        let d = parse(&raw).unwrap();
        assert!(d.flags.up() && d.flags.uv() && !d.flags.be());
        assert_eq!(d.sign_count, 78);
        assert!(d.attested.is_none() && d.extensions.is_none());
    }

    #[test]
    fn refuses_what_the_flags_do_not_announce() {
        let mut raw = head(Flags::UP, 1);
        raw.push(0xa0);
        assert!(matches!(parse(&raw), Err(WebauthnError::Cbor(cbor::CborError::TrailingBytes))));
        assert!(matches!(parse(&raw[..36]), Err(WebauthnError::Malformed(_))));
        // ED announced, a non-map there.
        let mut raw = head(Flags::UP | Flags::ED, 1);
        raw.push(0x01);
        assert!(matches!(parse(&raw), Err(WebauthnError::Malformed(_))));
        // ED announced, nothing there.
        assert!(matches!(parse(&head(Flags::UP | Flags::ED, 1)), Err(WebauthnError::Cbor(_))));
        // BS without BE.
        assert_eq!(parse(&head(Flags::UP | Flags::BS, 1)).err(), Some(WebauthnError::BackupFlagsInvalid));
    }

    #[test]
    fn credential_id_length_is_bounded() {
        let mut raw = head(Flags::UP | Flags::AT, 0);
        raw.extend([0u8; 16]);
        raw.extend(1024u16.to_be_bytes());
        raw.extend(vec![1u8; 1024]);
        raw.push(0xa0);
        assert_eq!(parse(&raw).err(), Some(WebauthnError::CredentialIdTooLong));
    }
}
