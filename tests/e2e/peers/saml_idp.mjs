// SAML 2.0 Identity Provider used in end-to-end tests and in the local demo.
//
// Every Response is built fresh and signed with xmlsec1 (Debian package
// `xmlsec1`) using the fixture keys in tests/fixtures/saml/keys/, so the
// gateway verifies real XML-DSig signatures produced by an independent
// implementation. With the `encrypt` option the (already signed) assertion is
// encrypted for the SP's certificate with xmlsec1 (XML Encryption, RSA-OAEP key
// transport) before the Response is signed, as IdPs do.
//
// Endpoints:
//   GET  /sso        HTTP-Redirect binding: SAMLRequest (base64 of raw DEFLATE)
//                    and RelayState in the query. Answers an auto-posting HTML
//                    form (HTTP-POST binding) carrying a signed SAMLResponse to
//                    the AuthnRequest's AssertionConsumerServiceURL.
//   POST /sso        HTTP-POST binding of the AuthnRequest (base64, no DEFLATE).
//   GET  /metadata   IdP metadata (EntityDescriptor with the signing certificate).
//
// Library use:
//   const idp = await startSamlIdp({ key: 'rsa', sign: 'assertion' });
//   idp.metadataUrl, idp.ssoUrl, idp.entityId
//   idp.set({ sign: 'both', clockOffset: -600 });   // options for later responses
//   idp.set({ encrypt: { cert: SP_ENCRYPTION.cert, algorithm: 'aes256-gcm' } });
//   idp.requests                                    // AuthnRequests received
//   const { samlResponse, html } = await idp.idpInitiated(acsUrl, { spEntityId });
//   await idp.close();
//
// CLI use (prints the base URL; metadata is at BASE/metadata):
//   node tests/e2e/peers/saml_idp.mjs --port 9200 --key rsa --sign both
//     [--encrypt-cert tests/fixtures/saml/keys/sp-rsa.crt --encrypt-algorithm aes128-cbc]

import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const KEY_DIR = fileURLToPath(new URL('../../fixtures/saml/keys/', import.meta.url));

/**
 * Fixture keys by name. `family` selects the default signature algorithm.
 * 'rsa-reissued' signs with the IdP RSA key but embeds and advertises the
 * re-issued certificate of that key; 'untrusted' is a key no gateway trusts.
 */
export const KEYS = Object.freeze({
  rsa: { key: 'idp-rsa.key', cert: 'idp-rsa.crt', family: 'rsa' },
  'rsa-reissued': { key: 'idp-rsa.key', cert: 'idp-rsa-reissued.crt', family: 'rsa' },
  ec: { key: 'idp-ec.key', cert: 'idp-ec.crt', family: 'ecdsa' },
  untrusted: { key: 'other-rsa.key', cert: 'other-rsa.crt', family: 'rsa' },
});

/** The SP encryption key pair of the fixtures (tests/fixtures/saml/keys/sp-rsa.*). */
export const SP_ENCRYPTION = Object.freeze({
  cert: path.join(KEY_DIR, 'sp-rsa.crt'),
  key: path.join(KEY_DIR, 'sp-rsa.key'),
});

export const NS = Object.freeze({
  protocol: 'urn:oasis:names:tc:SAML:2.0:protocol',
  assertion: 'urn:oasis:names:tc:SAML:2.0:assertion',
  metadata: 'urn:oasis:names:tc:SAML:2.0:metadata',
  dsig: 'http://www.w3.org/2000/09/xmldsig#',
  excC14n: 'http://www.w3.org/2001/10/xml-exc-c14n#',
});

export const DIGESTS = Object.freeze({
  sha1: 'http://www.w3.org/2000/09/xmldsig#sha1',
  sha256: 'http://www.w3.org/2001/04/xmlenc#sha256',
  sha384: 'http://www.w3.org/2001/04/xmldsig-more#sha384',
  sha512: 'http://www.w3.org/2001/04/xmlenc#sha512',
});

export const SIGNATURE_ALGORITHMS = Object.freeze({
  'rsa-sha1': 'http://www.w3.org/2000/09/xmldsig#rsa-sha1',
  'rsa-sha256': 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  'rsa-sha384': 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha384',
  'rsa-sha512': 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha512',
  'ecdsa-sha1': 'http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1',
  'ecdsa-sha256': 'http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256',
  'ecdsa-sha384': 'http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384',
  'ecdsa-sha512': 'http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512',
});

/** Content encryption algorithms for `encrypt.algorithm`, with xmlsec1's session key. */
export const ENCRYPTION_ALGORITHMS = Object.freeze({
  'aes128-gcm': { uri: 'http://www.w3.org/2009/xmlenc11#aes128-gcm', sessionKey: 'aes-128' },
  'aes256-gcm': { uri: 'http://www.w3.org/2009/xmlenc11#aes256-gcm', sessionKey: 'aes-256' },
  'aes128-cbc': { uri: 'http://www.w3.org/2001/04/xmlenc#aes128-cbc', sessionKey: 'aes-128' },
  'aes256-cbc': { uri: 'http://www.w3.org/2001/04/xmlenc#aes256-cbc', sessionKey: 'aes-256' },
});

/** Key transports for `encrypt.keyTransport`; rsa-1_5 only for refusal tests. */
export const KEY_TRANSPORTS = Object.freeze({
  'rsa-oaep-mgf1p': 'http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p',
  'rsa-1_5': 'http://www.w3.org/2001/04/xmlenc#rsa-1_5',
});

export const STATUS_SUCCESS = 'urn:oasis:names:tc:SAML:2.0:status:Success';
export const NAMEID_EMAIL = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';
export const BINDING_REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
export const BINDING_POST = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST';
const AUTHN_CONTEXT_PPT = 'urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport';

/** xmlsec1 arguments declaring the ID attributes of Response and Assertion. */
export const XMLSEC_ID_ATTRS = Object.freeze([
  '--id-attr:ID', `${NS.protocol}:Response`,
  '--id-attr:ID', `${NS.assertion}:Assertion`,
]);
export const RESPONSE_SIGNATURE_XPATH = "/*[local-name()='Response']/*[local-name()='Signature']";
export const ASSERTION_SIGNATURE_XPATH = "//*[local-name()='Assertion']/*[local-name()='Signature']";

export const DEFAULT_ATTRIBUTES = Object.freeze({
  email: 'alice@example.com',
  displayName: 'Alice Example',
  givenName: 'Alice',
  surname: 'Example',
  groups: Object.freeze(['engineering', 'admins']),
});

const DEFAULTS = Object.freeze({
  entityId: undefined, // http://127.0.0.1:PORT/metadata
  key: 'rsa',
  sign: 'assertion', // 'assertion' | 'response' | 'both' | 'none'
  digest: undefined, // sha256
  signatureAlgorithm: undefined, // rsa-sha256 or ecdsa-sha256, by key
  embedCertificate: true,
  user: 'alice@example.com',
  nameIdFormat: NAMEID_EMAIL,
  attributes: DEFAULT_ATTRIBUTES,
  lifetime: 300,
  clockOffset: 0,
  authnInstantOffset: 0, // seconds added to AuthnInstant only (an older sign-in at the IdP)
  status: STATUS_SUCCESS,
  statusMessage: undefined,
  subStatus: undefined,
  includeAssertion: undefined, // default: only with a Success status
  audience: undefined, // the AuthnRequest's Issuer
  recipient: undefined, // the ACS URL
  destination: undefined, // the ACS URL
  inResponseTo: undefined, // the AuthnRequest's ID
  sessionNotOnOrAfter: undefined,
  acsUrl: undefined, // used when an AuthnRequest names no ACS URL
  metadataKeys: undefined, // key names whose certificates metadata lists; default [key]
  encrypt: undefined, // { cert, algorithm?: 'aes256-gcm', keyTransport?: 'rsa-oaep-mgf1p' }
  mutate: undefined,
});

const KNOWN_OPTIONS = new Set([...Object.keys(DEFAULTS), 'port']);

export function xmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;',
  })[c]);
}

function htmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function xmlUnescape(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (m, ent) => {
    if (ent[0] === '#') {
      const code = ent[1] === 'x' || ent[1] === 'X' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : m;
    }
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[ent.toLowerCase()];
  });
}

/** SAML identifier: '_' followed by 20 random bytes in hex. */
export function randomId() {
  return `_${crypto.randomBytes(20).toString('hex')}`;
}

/** xs:dateTime in UTC without fractional seconds. */
export function samlTime(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function resolveKey(key) {
  if (typeof key === 'object' && key !== null) {
    return {
      keyPath: key.key,
      certPath: key.cert,
      family: key.family ?? (/EC PRIVATE|BEGIN EC/.test(fs.readFileSync(key.key, 'utf8')) ? 'ecdsa' : 'rsa'),
    };
  }
  const k = KEYS[key];
  if (!k) throw new Error(`unknown SAML IdP key ${key} (expected one of ${Object.keys(KEYS).join(', ')})`);
  return { keyPath: path.join(KEY_DIR, k.key), certPath: path.join(KEY_DIR, k.cert), family: k.family };
}

/** Body of a PEM certificate file as one base64 line. */
export function certificateBase64(certPath) {
  const pem = fs.readFileSync(certPath, 'utf8');
  const m = pem.match(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/);
  if (!m) throw new Error(`no certificate in ${certPath}`);
  return m[1].replace(/\s+/g, '');
}

function digestUri(digest) {
  const d = digest ?? 'sha256';
  if (d.includes(':')) return d;
  const uri = DIGESTS[d.toLowerCase().replace('-', '')];
  if (!uri) throw new Error(`unknown digest ${d}`);
  return uri;
}

// 'rsa-sha256', 'ecdsa-sha1', a full URI, or just 'sha1'/'sha256'/... (the key's family).
function signatureUri(alg, family) {
  const a = alg ?? 'sha256';
  if (a.includes(':')) return a;
  const name = /^sha\d+$/i.test(a) ? `${family}-${a.toLowerCase()}` : a.toLowerCase();
  const uri = SIGNATURE_ALGORITHMS[name];
  if (!uri) throw new Error(`unknown signature algorithm ${a}`);
  return uri;
}

/** Empty ds:Signature for one enveloped reference, as xmlsec1 --sign expects it. */
export function signatureTemplate(ref, { signatureAlgorithm, digest, embedCertificate = true }) {
  return `<ds:Signature xmlns:ds="${NS.dsig}">
<ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="${NS.excC14n}"/>
<ds:SignatureMethod Algorithm="${xmlEscape(signatureAlgorithm)}"/>
<ds:Reference URI="#${xmlEscape(ref)}">
<ds:Transforms>
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<ds:Transform Algorithm="${NS.excC14n}"><ec:InclusiveNamespaces xmlns:ec="${NS.excC14n}" PrefixList="xs"/></ds:Transform>
</ds:Transforms>
<ds:DigestMethod Algorithm="${xmlEscape(digest)}"/>
<ds:DigestValue/>
</ds:Reference>
</ds:SignedInfo>
<ds:SignatureValue/>${embedCertificate ? '\n<ds:KeyInfo><ds:X509Data/></ds:KeyInfo>' : ''}
</ds:Signature>`;
}

const P = '(?:[\\w.-]+:)?';
// Opening tag of the element, then its Issuer (the signature goes right after it).
// The Issuer holds text only; [^<]* keeps a match from running into a later Issuer.
const withIssuer = (local) => new RegExp(
  `(<${P}${local}\\b[^>]*>)(\\s*<${P}Issuer\\b[^>]*>[^<]*</${P}Issuer\\s*>)`,
);
const withIssuerAndSignature = (local) => new RegExp(
  `<${P}${local}\\b[^>]*>\\s*<${P}Issuer\\b[^>]*>[^<]*</${P}Issuer\\s*>\\s*<${P}Signature\\b`,
);

function insertTemplate(xml, local, opts) {
  const re = withIssuer(local);
  const m = xml.match(re);
  if (!m) throw new Error(`cannot sign: no <${local}> followed by its <Issuer>`);
  const id = m[1].match(/\sID\s*=\s*(?:"([^"]*)"|'([^']*)')/);
  if (!id) throw new Error(`cannot sign: <${local}> has no ID attribute`);
  const template = signatureTemplate(xmlUnescape(id[1] ?? id[2]), opts);
  return xml.replace(re, (all, open, issuer) => `${open}${issuer}\n${template}`);
}

/** Empty xenc:EncryptedData for one element, as xmlsec1 --encrypt expects it. */
export function encryptedDataTemplate(algorithm = 'aes256-gcm', keyTransport = 'rsa-oaep-mgf1p') {
  const data = ENCRYPTION_ALGORITHMS[algorithm];
  const transport = KEY_TRANSPORTS[keyTransport];
  if (!data) throw new Error(`unknown encryption algorithm ${algorithm}`);
  if (!transport) throw new Error(`unknown key transport ${keyTransport}`);
  const params = keyTransport === 'rsa-oaep-mgf1p' ? `<ds:DigestMethod Algorithm="${DIGESTS.sha1}"/>` : '';
  return `<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Element">
<xenc:EncryptionMethod Algorithm="${data.uri}"/>
<ds:KeyInfo xmlns:ds="${NS.dsig}">
<xenc:EncryptedKey>
<xenc:EncryptionMethod Algorithm="${transport}">${params}</xenc:EncryptionMethod>
<xenc:CipherData><xenc:CipherValue/></xenc:CipherData>
</xenc:EncryptedKey>
</ds:KeyInfo>
<xenc:CipherData><xenc:CipherValue/></xenc:CipherData>
</xenc:EncryptedData>`;
}

// The one Assertion element, whatever its prefix.
const ASSERTION_ELEMENT = new RegExp(`<(${P})Assertion\\b[\\s\\S]*</\\1Assertion\\s*>`);

function runXmlsec(args) {
  return new Promise((resolve, reject) => {
    execFile('xmlsec1', args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const e = new Error(`xmlsec1 ${args[0]} failed (${err.code}): ${stderr.trim()}`);
        e.stderr = stderr;
        e.code = err.code;
        reject(e);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

function attributeXml(name, value) {
  const values = Array.isArray(value) ? value : [value];
  return `<saml:Attribute Name="${xmlEscape(name)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">
${values.map((v) => `<saml:AttributeValue xsi:type="xs:string">${xmlEscape(v)}</saml:AttributeValue>`).join('\n')}
</saml:Attribute>`;
}

function statusUri(s) {
  return s.includes(':') ? s : `urn:oasis:names:tc:SAML:2.0:status:${s}`;
}

/**
 * Unsigned Response XML. `ctx`: { acsUrl, requestId (or undefined), spEntityId }.
 * Returns { xml, id, assertionId, sessionIndex }.
 */
function buildResponse(cfg, ctx, entityId) {
  const now = Date.now() + cfg.clockOffset * 1000;
  const id = randomId();
  const assertionId = randomId();
  const sessionIndex = randomId();
  const inResponseTo = cfg.inResponseTo === undefined ? ctx.requestId : cfg.inResponseTo;
  const destination = cfg.destination === undefined ? ctx.acsUrl : cfg.destination;
  const recipient = cfg.recipient === undefined ? ctx.acsUrl : cfg.recipient;
  const audience = cfg.audience === undefined ? ctx.spEntityId : cfg.audience;
  const status = statusUri(cfg.status);
  const includeAssertion = cfg.includeAssertion ?? status === STATUS_SUCCESS;
  const irtAttr = inResponseTo === undefined || inResponseTo === null ? '' : ` InResponseTo="${xmlEscape(inResponseTo)}"`;
  const optAttr = (name, v) => (v === undefined || v === null ? '' : ` ${name}="${xmlEscape(v)}"`);

  let sessionNotOnOrAfter = cfg.sessionNotOnOrAfter;
  if (typeof sessionNotOnOrAfter === 'number') sessionNotOnOrAfter = samlTime(now + sessionNotOnOrAfter * 1000);

  const statusCode = cfg.subStatus
    ? `<samlp:StatusCode Value="${xmlEscape(status)}"><samlp:StatusCode Value="${xmlEscape(statusUri(cfg.subStatus))}"/></samlp:StatusCode>`
    : `<samlp:StatusCode Value="${xmlEscape(status)}"/>`;
  const statusMessage = cfg.statusMessage === undefined || cfg.statusMessage === null
    ? '' : `\n<samlp:StatusMessage>${xmlEscape(cfg.statusMessage)}</samlp:StatusMessage>`;

  const attributes = Object.entries(cfg.attributes ?? {});
  const assertion = `<saml:Assertion ID="${assertionId}" Version="2.0" IssueInstant="${samlTime(now)}">
<saml:Issuer>${xmlEscape(entityId)}</saml:Issuer>
<saml:Subject>
<saml:NameID${optAttr('Format', cfg.nameIdFormat)}>${xmlEscape(cfg.user)}</saml:NameID>
<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">
<saml:SubjectConfirmationData${irtAttr} NotOnOrAfter="${samlTime(now + cfg.lifetime * 1000)}"${optAttr('Recipient', recipient)}/>
</saml:SubjectConfirmation>
</saml:Subject>
<saml:Conditions NotBefore="${samlTime(now - 5000)}" NotOnOrAfter="${samlTime(now + cfg.lifetime * 1000)}">${audience === null || audience === undefined ? '' : `
<saml:AudienceRestriction>
<saml:Audience>${xmlEscape(audience)}</saml:Audience>
</saml:AudienceRestriction>`}
</saml:Conditions>
<saml:AuthnStatement AuthnInstant="${samlTime(now + cfg.authnInstantOffset * 1000)}" SessionIndex="${sessionIndex}"${optAttr('SessionNotOnOrAfter', sessionNotOnOrAfter)}>
<saml:AuthnContext>
<saml:AuthnContextClassRef>${AUTHN_CONTEXT_PPT}</saml:AuthnContextClassRef>
</saml:AuthnContext>
</saml:AuthnStatement>${attributes.length ? `
<saml:AttributeStatement>
${attributes.map(([name, value]) => attributeXml(name, value)).join('\n')}
</saml:AttributeStatement>` : ''}
</saml:Assertion>`;

  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<samlp:Response xmlns:samlp="${NS.protocol}" xmlns:saml="${NS.assertion}" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="${id}" Version="2.0" IssueInstant="${samlTime(now)}"${optAttr('Destination', destination)}${irtAttr}>
<saml:Issuer Format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity">${xmlEscape(entityId)}</saml:Issuer>
<samlp:Status>
${statusCode}${statusMessage}
</samlp:Status>${includeAssertion ? `\n${assertion}` : ''}
</samlp:Response>
`;
  return {
    xml, id, assertionId: includeAssertion ? assertionId : undefined, sessionIndex, inResponseTo,
  };
}

function attrOf(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`));
  return m ? xmlUnescape(m[1] ?? m[2]) : undefined;
}

/** Fields of an AuthnRequest document (regex-based; enough for well-formed SP output). */
export function parseAuthnRequest(xml) {
  const open = xml.match(new RegExp(`<${P}AuthnRequest\\b[^>]*>`));
  if (!open) throw new Error('not an AuthnRequest');
  const issuer = xml.match(new RegExp(`<${P}Issuer\\b[^>]*>([\\s\\S]*?)</${P}Issuer\\s*>`));
  const policy = xml.match(new RegExp(`<${P}NameIDPolicy\\b[^>]*>`));
  return {
    id: attrOf(open[0], 'ID'),
    acsUrl: attrOf(open[0], 'AssertionConsumerServiceURL'),
    issuer: issuer ? xmlUnescape(issuer[1]).trim() : undefined,
    destination: attrOf(open[0], 'Destination'),
    issueInstant: attrOf(open[0], 'IssueInstant'),
    protocolBinding: attrOf(open[0], 'ProtocolBinding'),
    forceAuthn: attrOf(open[0], 'ForceAuthn'),
    isPassive: attrOf(open[0], 'IsPassive'),
    nameIdPolicyFormat: policy ? attrOf(policy[0], 'Format') : undefined,
  };
}

/** The SAMLRequest of an HTTP-Redirect URL: base64, then raw DEFLATE. */
export function decodeRedirectRequest(value) {
  // An unencoded '+' in a query string arrives as a space.
  const bytes = Buffer.from(value.replace(/ /g, '+'), 'base64');
  try {
    return zlib.inflateRawSync(bytes).toString('utf8');
  } catch (e) {
    const text = bytes.toString('utf8');
    if (text.trimStart().startsWith('<')) return text;
    throw e;
  }
}

/** Inverse of decodeRedirectRequest, for building SP requests in tests. */
export function encodeRedirectRequest(xml) {
  return zlib.deflateRawSync(Buffer.from(xml, 'utf8')).toString('base64');
}

/** The auto-posting page of the HTTP-POST binding. */
export function postFormHtml(acsUrl, samlResponse, relayState) {
  const relay = relayState === undefined || relayState === null
    ? '' : `\n<input type="hidden" name="RelayState" value="${htmlEscape(relayState)}">`;
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Signing in</title></head>
<body>
<form method="post" action="${htmlEscape(acsUrl)}">
<input type="hidden" name="SAMLResponse" value="${htmlEscape(samlResponse)}">${relay}
<noscript><p>Script is disabled; continue to the application.</p><button type="submit">Continue</button></noscript>
</form>
<script>document.forms[0].submit()</script>
</body>
</html>
`;
}

function page(status, title, text) {
  return {
    status,
    type: 'text/html; charset=utf-8',
    body: `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${htmlEscape(title)}</title></head>
<body><h1>${htmlEscape(title)}</h1><pre id="error">${htmlEscape(text)}</pre></body></html>
`,
  };
}

async function readBody(req, limit = 1024 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function checkOptions(opts) {
  for (const k of Object.keys(opts)) {
    if (!KNOWN_OPTIONS.has(k)) throw new Error(`unknown SAML IdP option ${k}`);
  }
  if (opts.sign !== undefined && !['assertion', 'response', 'both', 'none'].includes(opts.sign)) {
    throw new Error(`sign must be assertion, response, both or none (got ${opts.sign})`);
  }
  if (opts.key !== undefined) resolveKey(opts.key);
  if (opts.encrypt !== undefined && opts.encrypt !== null) {
    const e = opts.encrypt;
    if (typeof e !== 'object' || typeof e.cert !== 'string') {
      throw new Error('encrypt must be { cert: <path of the SP certificate>, algorithm?, keyTransport? }');
    }
    for (const k of Object.keys(e)) {
      if (!['cert', 'algorithm', 'keyTransport'].includes(k)) throw new Error(`unknown encrypt option ${k}`);
    }
    if (!fs.existsSync(e.cert)) throw new Error(`encrypt.cert ${e.cert} does not exist`);
    encryptedDataTemplate(e.algorithm, e.keyTransport);
  }
}

/**
 * Start a SAML 2.0 IdP on 127.0.0.1.
 *
 * @param {object} [opts]
 * @param {number} [opts.port=0] listening port, 0 for a free one
 * @param {string} [opts.entityId] default http://127.0.0.1:PORT/metadata
 * @param {'rsa'|'ec'|'untrusted'|'rsa-reissued'|{key:string,cert:string,family?:'rsa'|'ecdsa'}} [opts.key='rsa']
 * @param {'assertion'|'response'|'both'|'none'} [opts.sign='assertion']
 * @param {string} [opts.digest='sha256'] sha1 | sha256 | sha384 | sha512 | URI
 * @param {string} [opts.signatureAlgorithm] rsa-sha256 / ecdsa-sha256 by key; 'sha1' etc.
 *   picks the key's family; or a URI
 * @param {boolean} [opts.embedCertificate=true] KeyInfo/X509Data in each signature
 * @param {string} [opts.user='alice@example.com'] NameID
 * @param {string} [opts.nameIdFormat] default emailAddress
 * @param {Record<string,string|string[]>} [opts.attributes]
 * @param {number} [opts.lifetime=300] seconds (Conditions and SubjectConfirmationData)
 * @param {number} [opts.clockOffset=0] seconds added to every timestamp
 * @param {number} [opts.authnInstantOffset=0] seconds added to AuthnInstant alone
 * @param {string} [opts.status] StatusCode URI or its last part ('Responder'); default Success
 * @param {string} [opts.statusMessage]
 * @param {string} [opts.subStatus] second-level StatusCode (URI or last part)
 * @param {boolean} [opts.includeAssertion] default: only with a Success status
 * @param {string|null} [opts.audience] default the AuthnRequest's Issuer; null omits it
 * @param {string|null} [opts.recipient] default the ACS URL; null omits it
 * @param {string|null} [opts.destination] default the ACS URL; null omits it
 * @param {string|null} [opts.inResponseTo] default the AuthnRequest's ID; null omits it
 * @param {number|string} [opts.sessionNotOnOrAfter] seconds after now, or a literal xs:dateTime
 * @param {string} [opts.acsUrl] used when an AuthnRequest names no ACS URL
 * @param {string[]} [opts.metadataKeys] keys whose certificates metadata lists (default [key])
 * @param {{cert: string, algorithm?: 'aes256-gcm'|'aes128-gcm'|'aes128-cbc'|'aes256-cbc',
 *   keyTransport?: 'rsa-oaep-mgf1p'|'rsa-1_5'}} [opts.encrypt] encrypt the assertion (after
 *   signing it, before signing the Response) for this SP certificate; null or omitted: plain
 * @param {(xml: string) => string|Promise<string>} [opts.mutate] applied to the signed XML
 */
export async function startSamlIdp(opts = {}) {
  checkOptions(opts);
  const { port: wantedPort = 0, ...initial } = opts;
  let cfg = { ...DEFAULTS, ...initial };
  const requests = [];
  const responses = [];
  const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'portcullis-saml-idp-'));
  let fileCounter = 0;
  let closed = false;
  let baseUrl;

  const entityIdOf = (c) => c.entityId ?? `${baseUrl}/metadata`;

  async function signWith(xml, c) {
    const { keyPath, certPath, family } = resolveKey(c.key);
    const algs = {
      signatureAlgorithm: signatureUri(c.signatureAlgorithm, family),
      digest: digestUri(c.digest),
      embedCertificate: c.embedCertificate,
    };
    const passes = [];
    for (const [local, xpath, wanted] of [
      ['Assertion', ASSERTION_SIGNATURE_XPATH, c.sign === 'assertion' || c.sign === 'both'],
      ['Response', RESPONSE_SIGNATURE_XPATH, c.sign === 'response' || c.sign === 'both'],
    ]) {
      if (withIssuerAndSignature(local).test(xml)) {
        passes.push(xpath);
      } else if (wanted) {
        xml = insertTemplate(xml, local, algs);
        passes.push(xpath);
      }
    }
    // The assertion is signed first so that the response signature covers it.
    for (const xpath of passes) {
      fileCounter += 1;
      const input = path.join(tmpDir, `in-${fileCounter}.xml`);
      const output = path.join(tmpDir, `out-${fileCounter}.xml`);
      await fsp.writeFile(input, xml);
      try {
        await runXmlsec([
          '--sign', '--privkey-pem', `${keyPath},${certPath}`, ...XMLSEC_ID_ATTRS,
          '--node-xpath', xpath, '--output', output, input,
        ]);
        xml = await fsp.readFile(output, 'utf8');
      } finally {
        await fsp.rm(input, { force: true });
        await fsp.rm(output, { force: true });
      }
    }
    return xml;
  }

  // The Assertion wrapped in a saml:EncryptedAssertion and encrypted there by xmlsec1.
  async function encryptWith(xml, enc) {
    const m = xml.match(ASSERTION_ELEMENT);
    if (!m) throw new Error('cannot encrypt: no Assertion');
    const wrapped = xml.replace(ASSERTION_ELEMENT, (all, prefix) => `<${prefix}EncryptedAssertion>${all}</${prefix}EncryptedAssertion>`);
    fileCounter += 1;
    const input = path.join(tmpDir, `enc-in-${fileCounter}.xml`);
    const template = path.join(tmpDir, `enc-tpl-${fileCounter}.xml`);
    const output = path.join(tmpDir, `enc-out-${fileCounter}.xml`);
    const algorithm = enc.algorithm ?? 'aes256-gcm';
    await fsp.writeFile(input, wrapped);
    await fsp.writeFile(template, encryptedDataTemplate(algorithm, enc.keyTransport ?? 'rsa-oaep-mgf1p'));
    try {
      await runXmlsec([
        '--encrypt', '--pubkey-cert-pem', enc.cert, '--session-key', ENCRYPTION_ALGORITHMS[algorithm].sessionKey,
        '--xml-data', input, '--node-xpath', "//*[local-name()='Assertion']", '--output', output, template,
      ]);
      return await fsp.readFile(output, 'utf8');
    } finally {
      await Promise.all([input, template, output].map((f) => fsp.rm(f, { force: true })));
    }
  }

  // Signs (and, with `encrypt`, encrypts) a built Response: the assertion is signed first,
  // then encrypted, then the Response is signed over the EncryptedAssertion.
  async function protect(xml, c, hasAssertion) {
    if (!c.encrypt || !hasAssertion) return c.sign === 'none' ? xml : signWith(xml, c);
    let out = xml;
    if (c.sign === 'assertion' || c.sign === 'both') out = await signWith(out, { ...c, sign: 'assertion' });
    out = await encryptWith(out, c.encrypt);
    if (c.sign === 'response' || c.sign === 'both') out = await signWith(out, { ...c, sign: 'response' });
    return out;
  }

  // Builds, signs and mutates one Response; records it in `responses`.
  async function issue(ctx, overrides = {}) {
    checkOptions(overrides);
    const c = { ...cfg, ...overrides };
    const entityId = entityIdOf(c);
    const built = buildResponse(c, ctx, entityId);
    let xml = await protect(built.xml, c, built.assertionId !== undefined);
    if (typeof c.mutate === 'function') xml = await c.mutate(xml);
    const samlResponse = Buffer.from(xml, 'utf8').toString('base64');
    const html = postFormHtml(ctx.acsUrl, samlResponse, ctx.relayState);
    const record = {
      id: built.id,
      assertionId: built.assertionId,
      sessionIndex: built.sessionIndex,
      inResponseTo: built.inResponseTo,
      acsUrl: ctx.acsUrl,
      relayState: ctx.relayState,
      xml,
      samlResponse,
    };
    responses.push(record);
    return { ...record, html };
  }

  function metadataXml() {
    const names = cfg.metadataKeys ?? [cfg.key];
    const keyDescriptors = names.map((k) => `<md:KeyDescriptor use="signing">
<ds:KeyInfo><ds:X509Data><ds:X509Certificate>${certificateBase64(resolveKey(k).certPath)}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
</md:KeyDescriptor>`).join('\n');
    return `<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="${NS.metadata}" xmlns:ds="${NS.dsig}" entityID="${xmlEscape(entityIdOf(cfg))}">
<md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="${NS.protocol}">
${keyDescriptors}
<md:NameIDFormat>${xmlEscape(cfg.nameIdFormat ?? NAMEID_EMAIL)}</md:NameIDFormat>
<md:SingleSignOnService Binding="${BINDING_REDIRECT}" Location="${baseUrl}/sso"/>
<md:SingleSignOnService Binding="${BINDING_POST}" Location="${baseUrl}/sso"/>
</md:IDPSSODescriptor>
</md:EntityDescriptor>
`;
  }

  async function handleSso(req, url) {
    let params = url.searchParams;
    let binding = BINDING_REDIRECT;
    if (req.method === 'POST') {
      params = new URLSearchParams(await readBody(req));
      binding = BINDING_POST;
    }
    const encoded = params.get('SAMLRequest');
    if (!encoded) return page(400, 'Bad request', 'SAMLRequest is missing');
    let xml;
    try {
      xml = binding === BINDING_REDIRECT
        ? decodeRedirectRequest(encoded)
        : Buffer.from(encoded.replace(/ /g, '+'), 'base64').toString('utf8');
    } catch (e) {
      return page(400, 'Bad request', `SAMLRequest cannot be decoded: ${e.message}`);
    }
    let parsed;
    try {
      parsed = parseAuthnRequest(xml);
    } catch (e) {
      return page(400, 'Bad request', e.message);
    }
    const relayState = params.get('RelayState') ?? undefined;
    requests.push({
      ...parsed,
      binding,
      relayState,
      sigAlg: params.get('SigAlg') ?? undefined,
      signature: params.get('Signature') ?? undefined,
      xml,
      receivedAt: Date.now(),
    });
    const acsUrl = parsed.acsUrl ?? cfg.acsUrl;
    if (!acsUrl) return page(400, 'Bad request', 'the AuthnRequest names no AssertionConsumerServiceURL');
    const out = await issue({
      acsUrl, requestId: parsed.id, spEntityId: parsed.issuer, relayState,
    });
    return { status: 200, type: 'text/html; charset=utf-8', body: out.html };
  }

  const server = http.createServer((req, res) => {
    const send = ({ status, type, body }) => {
      if (res.destroyed) return;
      res.writeHead(status, {
        'content-type': type,
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      });
      res.end(body);
    };
    let url;
    try {
      url = new URL(req.url, 'http://127.0.0.1');
    } catch {
      send(page(400, 'Bad request', 'bad URL'));
      return;
    }
    (async () => {
      if (url.pathname === '/sso' && (req.method === 'GET' || req.method === 'POST')) {
        return handleSso(req, url);
      }
      req.resume();
      if (url.pathname === '/metadata' && req.method === 'GET') {
        return { status: 200, type: 'application/samlmetadata+xml', body: metadataXml() };
      }
      return page(404, 'Not found', `${req.method} ${url.pathname}`);
    })().then(send, (e) => send(page(500, 'IdP error', e.message)));
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(wantedPort, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = server.address().port;
  baseUrl = `http://127.0.0.1:${port}`;

  return {
    url: baseUrl,
    port,
    metadataUrl: `${baseUrl}/metadata`,
    ssoUrl: `${baseUrl}/sso`,
    /** Entity ID in use (changes with set({ entityId })). */
    get entityId() {
      return entityIdOf(cfg);
    },
    /** Current options (read-only copy). */
    get options() {
      return { ...cfg };
    },
    /** AuthnRequests received, oldest first: { id, acsUrl, issuer, relayState, binding, xml, ... }. */
    requests,
    /** Responses issued, oldest first: { id, assertionId, sessionIndex, inResponseTo, acsUrl, xml, samlResponse }. */
    responses,
    /** Merge options for the responses that follow. */
    set(next = {}) {
      checkOptions(next);
      if (Object.hasOwn(next, 'port')) throw new Error('port cannot be changed');
      cfg = { ...cfg, ...next };
    },
    /** Back to the options given to startSamlIdp. */
    reset() {
      cfg = { ...DEFAULTS, ...initial };
    },
    /**
     * Sign a document with the current key and algorithms (overridable). Existing
     * empty ds:Signature templates after an Issuer are signed as they are; otherwise
     * templates are inserted per `sign`. `mutate` is not applied.
     */
    sign(xml, overrides = {}) {
      checkOptions(overrides);
      return signWith(xml, { ...cfg, ...overrides, sign: overrides.sign ?? cfg.sign });
    },
    /**
     * An unsolicited (IdP-initiated) Response for `acsUrl`, without InResponseTo.
     * Other option overrides apply to this response only.
     * @returns {Promise<{ samlResponse, html, xml, id, assertionId, sessionIndex }>}
     */
    idpInitiated(acsUrl, { relayState, spEntityId, ...overrides } = {}) {
      return issue({
        acsUrl, requestId: undefined, spEntityId, relayState,
      }, overrides);
    },
    /**
     * A Response as if answering an AuthnRequest, without an HTTP round trip.
     * @returns {Promise<{ samlResponse, html, xml, id, assertionId, sessionIndex }>}
     */
    respond({ acsUrl, requestId, spEntityId, relayState, ...overrides }) {
      return issue({
        acsUrl, requestId, spEntityId, relayState,
      }, overrides);
    },
    /** Body of the current signing certificate (base64 DER, one line). */
    certificateBase64() {
      return certificateBase64(resolveKey(cfg.key).certPath);
    },
    /** Path of the current signing certificate (PEM). */
    certificatePath() {
      return resolveKey(cfg.key).certPath;
    },
    metadata: metadataXml,
    async close() {
      if (closed) return;
      closed = true;
      await new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await fsp.rm(tmpDir, { recursive: true, force: true });
    },
  };
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      const v = argv[i + 1];
      if (v === undefined) throw new Error(`missing value for ${arg}`);
      i += 1;
      return v;
    };
    switch (arg) {
      case '--port': out.port = Number(value()); break;
      case '--entity-id': out.entityId = value(); break;
      case '--key': out.key = value(); break;
      case '--sign': out.sign = value(); break;
      case '--user': out.user = value(); break;
      case '--acs-url': out.acsUrl = value(); break;
      case '--lifetime': out.lifetime = Number(value()); break;
      case '--encrypt-cert': out.encrypt = { ...out.encrypt, cert: value() }; break;
      case '--encrypt-algorithm': out.encrypt = { ...out.encrypt, algorithm: value() }; break;
      case '-h':
      case '--help':
        out.help = true;
        break;
      default:
        throw new Error(`unknown argument ${arg}`);
    }
  }
  return out;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(e.message);
    process.exit(2);
  }
  if (args.help) {
    console.log(`usage: node saml_idp.mjs [--port N] [--entity-id ID] [--key rsa|ec|untrusted|rsa-reissued]
       [--sign assertion|response|both|none] [--user NAMEID] [--acs-url URL] [--lifetime SECONDS]
       [--encrypt-cert SP_CERT_PEM [--encrypt-algorithm aes256-gcm|aes128-gcm|aes128-cbc|aes256-cbc]]`);
    return;
  }
  const { help, ...opts } = args;
  const idp = await startSamlIdp(opts);
  console.log(idp.url);
  const shutdown = () => {
    idp.close().finally(() => process.exit(0));
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
