//! SAML 2.0 metadata: reading an IdP's EntityDescriptor (entity id, SSO endpoint, signing
//! certificates) and writing the SP's own.

use crate::markup::escape;
use crate::saml::dsig::DSIG_NS;
use crate::saml::xml::{Document, XmlLimits};

pub const METADATA_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpMetadata {
    pub entity_id: String,
    pub sso_redirect_url: Option<String>,
    pub slo_redirect_url: Option<String>,
    /// Base64 DER bodies of the signing certificates.
    pub signing_certificates: Vec<String>,
}

/// Parses IdP metadata (an `EntityDescriptor` with an `IDPSSODescriptor`) with the same
/// hardened parser as responses (no DOCTYPE, no entities).
pub fn parse_idp_metadata(xml: &[u8]) -> Result<IdpMetadata, String> {
    let limits = XmlLimits { max_bytes: 256 * 1024, ..XmlLimits::default() };
    let doc = Document::parse(xml, &limits).map_err(|e| format!("not usable metadata XML: {e}"))?;
    let root = doc.root();
    if !doc.is_element(root, METADATA_NS, "EntityDescriptor") {
        return Err("the document element is not md:EntityDescriptor".into());
    }
    let entity_id =
        doc.attribute(root, "entityID").filter(|e| !e.is_empty()).ok_or("EntityDescriptor has no entityID")?;
    let idp = doc.children_named(root, METADATA_NS, "IDPSSODescriptor").next().ok_or("no IDPSSODescriptor")?;
    let sso_redirect_url = doc
        .children_named(idp, METADATA_NS, "SingleSignOnService")
        .find(|s| doc.attribute(*s, "Binding") == Some(BINDING_REDIRECT))
        .and_then(|s| doc.attribute(s, "Location"))
        .map(str::to_owned);
    let slo_redirect_url = doc
        .children_named(idp, METADATA_NS, "SingleLogoutService")
        .find(|s| doc.attribute(*s, "Binding") == Some(BINDING_REDIRECT))
        .and_then(|s| doc.attribute(s, "Location"))
        .map(str::to_owned);
    let mut signing_certificates = Vec::new();
    for kd in doc.children_named(idp, METADATA_NS, "KeyDescriptor") {
        if doc.attribute(kd, "use").is_some_and(|u| u != "signing") {
            continue;
        }
        for ki in doc.children_named(kd, DSIG_NS, "KeyInfo") {
            for data in doc.children_named(ki, DSIG_NS, "X509Data") {
                for cert in doc.children_named(data, DSIG_NS, "X509Certificate") {
                    let text = doc.text(cert).map_err(|e| format!("X509Certificate: {e}"))?;
                    signing_certificates.push(text.split_whitespace().collect());
                }
            }
        }
    }
    if signing_certificates.is_empty() {
        return Err("no signing certificate in the IDPSSODescriptor".into());
    }
    Ok(IdpMetadata { entity_id: entity_id.to_owned(), sso_redirect_url, slo_redirect_url, signing_certificates })
}

/// The SP's metadata for one connection. `certificate` (base64 DER) is published for
/// signing (when requests are signed) and for encryption (when a key is configured).
pub fn sp_metadata(
    entity_id: &str,
    acs_url: &str,
    slo_url: &str,
    name_id_format: &str,
    certificate: Option<&str>,
    requests_signed: bool,
) -> String {
    let keys: String = certificate
        .map(|c| {
            let info = format!(
                r#"<ds:KeyInfo xmlns:ds="{DSIG_NS}"><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"#,
                escape(c)
            );
            let signing = if requests_signed { format!("\n    <md:KeyDescriptor use=\"signing\">{info}</md:KeyDescriptor>") } else { String::new() };
            format!("{signing}\n    <md:KeyDescriptor use=\"encryption\">{info}</md:KeyDescriptor>")
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{METADATA_NS}" entityID="{}">
  <md:SPSSODescriptor AuthnRequestsSigned="{requests_signed}" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}
    <md:NameIDFormat>{}</md:NameIDFormat>
    <md:SingleLogoutService Binding="{BINDING_REDIRECT}" Location="{}"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
        escape(entity_id),
        escape(name_id_format),
        escape(slo_url),
        escape(acs_url)
    )
}
