// Self-checks of the SAML IdP test peer, without the gateway: responses are
// fetched the way the gateway's users would get them (HTTP-Redirect AuthnRequest,
// auto-posting form) and verified independently with `xmlsec1 --verify`
// (and, for encrypted assertions, decrypted with `xmlsec1 --decrypt`).
// Run: node --test tests/e2e/saml_idp_peer.test.mjs

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { Client, parseForms } from './lib/client.mjs';
import {
  startSamlIdp, XMLSEC_ID_ATTRS, RESPONSE_SIGNATURE_XPATH, ASSERTION_SIGNATURE_XPATH,
  SIGNATURE_ALGORITHMS, DIGESTS, SP_ENCRYPTION, ENCRYPTION_ALGORITHMS, KEY_TRANSPORTS,
} from './peers/saml_idp.mjs';

const KEY_DIR = fileURLToPath(new URL('../fixtures/saml/keys/', import.meta.url));
const CERTS = {
  rsa: path.join(KEY_DIR, 'idp-rsa.crt'),
  ec: path.join(KEY_DIR, 'idp-ec.crt'),
  untrusted: path.join(KEY_DIR, 'other-rsa.crt'),
};
const SP_ENTITY_ID = 'https://sp.example.test/saml/metadata';
const ACS_URL = 'https://sp.example.test/saml/acs?x=1&y=2';

let idp;
let tmpDir;

before(async () => {
  tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'saml-idp-peer-test-'));
  idp = await startSamlIdp();
});

after(async () => {
  await idp?.close();
  if (tmpDir) await fsp.rm(tmpDir, { recursive: true, force: true });
});

function xmlEscape(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
}

function authnRequest({ id = `_req-${crypto.randomBytes(8).toString('hex')}`, acs = ACS_URL, issuer = SP_ENTITY_ID } = {}) {
  const xml = `<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" `
    + `xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" `
    + `IssueInstant="${new Date().toISOString()}" Destination="${idp.ssoUrl}" `
    + `ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" `
    + `AssertionConsumerServiceURL="${xmlEscape(acs)}">`
    + `<saml:Issuer>${xmlEscape(issuer)}</saml:Issuer>`
    + '<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" AllowCreate="true"/>'
    + '</samlp:AuthnRequest>';
  return { id, xml };
}

/** GET /sso with a deflated AuthnRequest; returns the decoded Response and the form. */
async function login({ relayState = 'rs-Ω/€ & more', request = authnRequest() } = {}) {
  const u = new URL(idp.ssoUrl);
  u.searchParams.set('SAMLRequest', zlib.deflateRawSync(Buffer.from(request.xml)).toString('base64'));
  if (relayState !== undefined) u.searchParams.set('RelayState', relayState);
  const res = await new Client().get(u.href);
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers.get('content-type'), /text\/html/);
  const forms = parseForms(res.text);
  assert.equal(forms.length, 1);
  const [form] = forms;
  return {
    request, res, form, xml: Buffer.from(form.fields.SAMLResponse, 'base64').toString('utf8'),
  };
}

function xmlsecVerify(xml, cert, xpath) {
  const file = path.join(tmpDir, `${crypto.randomBytes(8).toString('hex')}.xml`);
  return fsp.writeFile(file, xml).then(() => new Promise((resolve) => {
    execFile('xmlsec1', ['--verify', '--pubkey-cert-pem', cert, ...XMLSEC_ID_ATTRS, '--node-xpath', xpath, file],
      (err, stdout, stderr) => {
        fsp.rm(file, { force: true }).finally(() => resolve({ ok: !err, output: `${stdout}${stderr}` }));
      });
  }));
}

/** `xmlsec1 --decrypt` with the SP key: the document with the assertion in place. */
function xmlsecDecrypt(xml, key = SP_ENCRYPTION.key) {
  const file = path.join(tmpDir, `${crypto.randomBytes(8).toString('hex')}.xml`);
  return fsp.writeFile(file, xml).then(() => new Promise((resolve) => {
    execFile('xmlsec1', ['--decrypt', '--privkey-pem', key, file], (err, stdout, stderr) => {
      fsp.rm(file, { force: true }).finally(() => resolve({ ok: !err, xml: stdout, output: stderr }));
    });
  }));
}

async function assertVerifies(xml, cert, xpath) {
  const r = await xmlsecVerify(xml, cert, xpath);
  assert.ok(r.ok, r.output);
  assert.match(r.output, /^OK$/m);
}

function countSignatures(xml) {
  return (xml.match(/<ds:Signature\b/g) ?? []).length;
}

function signatureAfter(xml, local) {
  return new RegExp(`<saml[p]?:${local}\\b[^>]*>\\s*<saml:Issuer\\b[^>]*>[^<]*</saml:Issuer>\\s*<ds:Signature\\b`).test(xml);
}

describe('SP-initiated flow (HTTP-Redirect in, HTTP-POST out)', () => {
  for (const key of ['rsa', 'ec']) {
    for (const sign of ['assertion', 'response', 'both']) {
      test(`${key} key, ${sign} signed: xmlsec1 verifies the signature(s)`, async () => {
        idp.set({ key, sign });
        const { xml } = await login();
        assert.equal(countSignatures(xml), sign === 'both' ? 2 : 1);
        const alg = key === 'ec' ? 'ecdsa-sha256' : 'rsa-sha256';
        assert.ok(xml.includes(`SignatureMethod Algorithm="${SIGNATURE_ALGORITHMS[alg]}"`));
        assert.ok(xml.includes(`DigestMethod Algorithm="${DIGESTS.sha256}"`));
        if (sign !== 'response') {
          assert.ok(signatureAfter(xml, 'Assertion'), 'assertion signature right after its Issuer');
          await assertVerifies(xml, CERTS[key], ASSERTION_SIGNATURE_XPATH);
        }
        if (sign !== 'assertion') {
          assert.ok(signatureAfter(xml, 'Response'), 'response signature right after its Issuer');
          await assertVerifies(xml, CERTS[key], RESPONSE_SIGNATURE_XPATH);
        }
        // Another key's certificate does not verify it.
        const other = await xmlsecVerify(xml, CERTS.untrusted,
          sign === 'response' ? RESPONSE_SIGNATURE_XPATH : ASSERTION_SIGNATURE_XPATH);
        assert.equal(other.ok, false, other.output);
      });
    }
  }

  test('the form, the Response fields and the recorded AuthnRequest', async () => {
    idp.reset();
    const { request, res, form, xml } = await login();
    assert.equal(form.method, 'post');
    assert.equal(form.action, ACS_URL);
    assert.equal(form.fields.RelayState, 'rs-Ω/€ & more');
    assert.match(res.text, /<noscript>[\s\S]*<button type="submit"/);
    assert.match(res.text, /<script>document\.forms\[0\]\.submit\(\)<\/script>/);

    const rec = idp.requests.at(-1);
    assert.equal(rec.id, request.id);
    assert.equal(rec.acsUrl, ACS_URL);
    assert.equal(rec.issuer, SP_ENTITY_ID);
    assert.equal(rec.relayState, 'rs-Ω/€ & more');
    assert.equal(rec.xml, request.xml);

    const acsEscaped = 'https://sp.example.test/saml/acs?x=1&amp;y=2';
    assert.match(xml, new RegExp(`<samlp:Response [^>]*ID="_[0-9a-f]{40}"`));
    assert.ok(xml.includes(`Destination="${acsEscaped}"`));
    assert.ok(xml.includes(`InResponseTo="${request.id}"`));
    assert.equal(xml.split(`InResponseTo="${request.id}"`).length - 1, 2, 'Response and SubjectConfirmationData');
    assert.ok(xml.includes(`Recipient="${acsEscaped}"`));
    assert.ok(xml.includes(`<saml:Audience>${SP_ENTITY_ID}</saml:Audience>`));
    assert.ok(xml.includes(`<saml:Issuer Format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity">${idp.entityId}</saml:Issuer>`));
    assert.equal(idp.entityId, `${idp.url}/metadata`);
    assert.ok(xml.includes('<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'));
    assert.ok(xml.includes('Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">alice@example.com</saml:NameID>'));
    assert.ok(xml.includes('Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"'));
    assert.ok(xml.includes('PasswordProtectedTransport</saml:AuthnContextClassRef>'));
    assert.match(xml, /<saml:Attribute Name="groups"[^>]*>\s*<saml:AttributeValue xsi:type="xs:string">engineering<\/saml:AttributeValue>\s*<saml:AttributeValue xsi:type="xs:string">admins</);
    assert.match(xml, /<saml:Attribute Name="displayName"[^>]*>\s*<saml:AttributeValue xsi:type="xs:string">Alice Example</);

    const notBefore = Date.parse(xml.match(/NotBefore="([^"]+)"/)[1]);
    const notOnOrAfter = Date.parse(xml.match(/<saml:Conditions [^>]*NotOnOrAfter="([^"]+)"/)[1]);
    assert.ok(Math.abs(notBefore - (Date.now() - 5000)) < 3000);
    assert.ok(Math.abs(notOnOrAfter - (Date.now() + 300_000)) < 3000);

    const issued = idp.responses.at(-1);
    assert.equal(issued.inResponseTo, request.id);
    assert.equal(issued.xml, xml);
    assert.ok(xml.includes(`SessionIndex="${issued.sessionIndex}"`));
  });

  test('overrides: values are escaped, attributes, clock offset, status, omissions', async () => {
    idp.set({
      key: 'rsa',
      sign: 'both',
      user: 'o\'brien+<tag>@example.com',
      attributes: { email: 'a&b@example.com', groups: ['x<y', 'z"w'] },
      clockOffset: -3600,
      lifetime: 60,
      audience: 'urn:other-audience',
      destination: null,
      inResponseTo: null,
      sessionNotOnOrAfter: 120,
    });
    const { xml } = await login();
    // The signed document is libxml2's serialization (xmlsec1 rewrites it):
    // quotes in text content come back unescaped.
    assert.ok(xml.includes(">o'brien+&lt;tag&gt;@example.com</saml:NameID>"));
    assert.ok(xml.includes('>a&amp;b@example.com<'));
    assert.ok(xml.includes('>x&lt;y<') && xml.includes('>z"w<'));
    assert.ok(xml.includes('<saml:Audience>urn:other-audience</saml:Audience>'));
    assert.ok(!xml.includes('Destination='));
    assert.ok(!xml.includes('InResponseTo='));
    const issue = Date.parse(xml.match(/IssueInstant="([^"]+)"/)[1]);
    assert.ok(Math.abs(issue - (Date.now() - 3_600_000)) < 3000);
    const cond = Date.parse(xml.match(/<saml:Conditions [^>]*NotOnOrAfter="([^"]+)"/)[1]);
    assert.equal(cond - issue, 60_000);
    const sess = Date.parse(xml.match(/SessionNotOnOrAfter="([^"]+)"/)[1]);
    assert.equal(sess - issue, 120_000);
    await assertVerifies(xml, CERTS.rsa, ASSERTION_SIGNATURE_XPATH);
    await assertVerifies(xml, CERTS.rsa, RESPONSE_SIGNATURE_XPATH);

    idp.reset();
    idp.set({
      sign: 'response',
      status: 'Responder',
      subStatus: 'AuthnFailed',
      statusMessage: 'User account is <disabled>',
    });
    const failed = (await login()).xml;
    assert.ok(failed.includes('<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"/>'));
    assert.ok(failed.includes('<samlp:StatusMessage>User account is &lt;disabled&gt;</samlp:StatusMessage>'));
    assert.ok(!failed.includes('<saml:Assertion'));
    await assertVerifies(failed, CERTS.rsa, RESPONSE_SIGNATURE_XPATH);
    idp.reset();
  });

  test('sha1 algorithms for refusal tests', async () => {
    idp.set({ key: 'rsa', sign: 'assertion', digest: 'sha1', signatureAlgorithm: 'sha1' });
    const { xml } = await login();
    assert.ok(xml.includes(`SignatureMethod Algorithm="${SIGNATURE_ALGORITHMS['rsa-sha1']}"`));
    assert.ok(xml.includes(`DigestMethod Algorithm="${DIGESTS.sha1}"`));
    await assertVerifies(xml, CERTS.rsa, ASSERTION_SIGNATURE_XPATH);
    idp.reset();
  });

  test('the untrusted key signs with a certificate no gateway trusts', async () => {
    idp.set({ key: 'untrusted' });
    const { xml } = await login();
    await assertVerifies(xml, CERTS.untrusted, ASSERTION_SIGNATURE_XPATH);
    const r = await xmlsecVerify(xml, CERTS.rsa, ASSERTION_SIGNATURE_XPATH);
    assert.equal(r.ok, false, r.output);
    idp.reset();
  });

  test('mutate runs after signing: the change is present and the signature breaks', async () => {
    idp.set({
      sign: 'both',
      mutate: (xml) => xml.replace('>alice@example.com</saml:NameID>', '>mallory@example.com</saml:NameID>'),
    });
    const { xml } = await login();
    assert.ok(xml.includes('>mallory@example.com</saml:NameID>'));
    for (const xpath of [ASSERTION_SIGNATURE_XPATH, RESPONSE_SIGNATURE_XPATH]) {
      const r = await xmlsecVerify(xml, CERTS.rsa, xpath);
      assert.equal(r.ok, false, r.output);
    }
    idp.reset();
    const clean = (await login()).xml;
    await assertVerifies(clean, CERTS.rsa, ASSERTION_SIGNATURE_XPATH);
  });

  test('bad requests are refused', async () => {
    const client = new Client();
    assert.equal((await client.get(idp.ssoUrl)).status, 400);
    const u = new URL(idp.ssoUrl);
    u.searchParams.set('SAMLRequest', Buffer.from('not xml at all').toString('base64'));
    assert.equal((await client.get(u.href)).status, 400);
    assert.equal((await client.get(`${idp.url}/nowhere`)).status, 404);
  });
});

describe('encrypted assertions', () => {
  for (const algorithm of ['aes256-gcm', 'aes128-cbc']) {
    for (const sign of ['assertion', 'response', 'both']) {
      test(`${algorithm}, ${sign} signed: xmlsec1 decrypts, the signatures verify`, async () => {
        idp.set({ key: 'rsa', sign, encrypt: { cert: SP_ENCRYPTION.cert, algorithm } });
        const { request, xml } = await login();
        assert.ok(!/<saml:Assertion\b/.test(xml), 'no plain assertion');
        assert.equal((xml.match(/<saml:EncryptedAssertion>/g) ?? []).length, 1);
        assert.ok(xml.includes(`<xenc:EncryptionMethod Algorithm="${ENCRYPTION_ALGORITHMS[algorithm].uri}"/>`));
        assert.ok(xml.includes(`Algorithm="${KEY_TRANSPORTS['rsa-oaep-mgf1p']}"`));
        assert.ok(!xml.includes('alice@example.com'), 'the identity is not readable');
        assert.equal(countSignatures(xml), sign === 'assertion' ? 0 : 1, 'only the Response signature is visible');
        if (sign !== 'assertion') {
          // The Response signature covers the EncryptedAssertion.
          assert.ok(signatureAfter(xml, 'Response'));
          await assertVerifies(xml, CERTS.rsa, RESPONSE_SIGNATURE_XPATH);
        }
        const decrypted = await xmlsecDecrypt(xml);
        assert.ok(decrypted.ok, decrypted.output);
        // xmlsec1 puts the plaintext in place of the EncryptedData.
        assert.ok(!decrypted.xml.includes('EncryptedData'));
        assert.match(decrypted.xml, /<saml:EncryptedAssertion>\s*<saml:Assertion /);
        assert.ok(decrypted.xml.includes('>alice@example.com</saml:NameID>'));
        assert.ok(decrypted.xml.includes(`InResponseTo="${request.id}"`));
        assert.equal(countSignatures(decrypted.xml), sign === 'both' ? 2 : 1);
        if (sign !== 'response') {
          await assertVerifies(decrypted.xml, CERTS.rsa, ASSERTION_SIGNATURE_XPATH);
        }
        // Another key cannot decrypt it.
        const other = await xmlsecDecrypt(xml, path.join(KEY_DIR, 'other-rsa.key'));
        assert.equal(other.ok, false);
      });
    }
  }

  test('rsa-1_5 key transport on request; failed statuses carry no assertion to encrypt', async () => {
    idp.set({ encrypt: { cert: SP_ENCRYPTION.cert, keyTransport: 'rsa-1_5' } });
    const { xml } = await login();
    assert.ok(xml.includes(`Algorithm="${KEY_TRANSPORTS['rsa-1_5']}"`));
    assert.ok(xml.includes(`Algorithm="${ENCRYPTION_ALGORITHMS['aes256-gcm'].uri}"`));
    const decrypted = await xmlsecDecrypt(xml);
    assert.ok(decrypted.ok, decrypted.output);
    idp.set({ status: 'Responder', sign: 'response' });
    const failed = (await login()).xml;
    assert.ok(!failed.includes('Assertion'));
    await assertVerifies(failed, CERTS.rsa, RESPONSE_SIGNATURE_XPATH);
    idp.reset();
  });

  test('bad encrypt options are refused', () => {
    assert.throws(() => idp.set({ encrypt: { cert: SP_ENCRYPTION.cert, algorithm: 'des3-cbc' } }), /algorithm/);
    assert.throws(() => idp.set({ encrypt: { cert: '/nonexistent.crt' } }), /does not exist/);
    assert.throws(() => idp.set({ encrypt: SP_ENCRYPTION.cert }), /encrypt must be/);
    assert.throws(() => idp.set({ encrypt: { cert: SP_ENCRYPTION.cert, key: 'x' } }), /unknown encrypt option/);
  });
});

describe('other entry points', () => {
  test('metadata carries the entity ID, the current certificate and the SSO location', async () => {
    const client = new Client();
    for (const key of ['rsa', 'ec']) {
      idp.set({ key });
      const res = await client.get(idp.metadataUrl);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /samlmetadata\+xml/);
      const pem = await fsp.readFile(CERTS[key], 'utf8');
      const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
      assert.equal(idp.certificateBase64(), body);
      assert.ok(res.text.includes(`<ds:X509Certificate>${body}</ds:X509Certificate>`));
      assert.ok(res.text.includes(`entityID="${idp.entityId}"`));
      assert.ok(res.text.includes('<md:KeyDescriptor use="signing">'));
      assert.ok(res.text.includes(`Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="${idp.ssoUrl}"`));
    }
    idp.set({ entityId: 'https://idp.example.test/entity' });
    assert.ok((await client.get(idp.metadataUrl)).text.includes('entityID="https://idp.example.test/entity"'));
    idp.reset();
  });

  test('idpInitiated: unsolicited response without InResponseTo', async () => {
    const acs = 'http://127.0.0.1:1/saml/acs';
    const out = await idp.idpInitiated(acs, { relayState: '/after', spEntityId: SP_ENTITY_ID, sign: 'both' });
    const xml = Buffer.from(out.samlResponse, 'base64').toString('utf8');
    assert.equal(xml, out.xml);
    assert.ok(!xml.includes('InResponseTo='));
    assert.ok(xml.includes(`Destination="${acs}"`));
    assert.ok(xml.includes(`<saml:Audience>${SP_ENTITY_ID}</saml:Audience>`));
    await assertVerifies(xml, CERTS.rsa, ASSERTION_SIGNATURE_XPATH);
    await assertVerifies(xml, CERTS.rsa, RESPONSE_SIGNATURE_XPATH);
    const [form] = parseForms(out.html);
    assert.equal(form.action, acs);
    assert.equal(form.fields.SAMLResponse, out.samlResponse);
    assert.equal(form.fields.RelayState, '/after');
  });

  test('sign() signs a hand-made document', async () => {
    const xml = `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r1" Version="2.0" IssueInstant="2024-05-01T12:00:00Z">
  <saml:Issuer>https://idp.example.test</saml:Issuer>
  <samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>
  <saml:Assertion ID="_a1" Version="2.0" IssueInstant="2024-05-01T12:00:00Z">
    <saml:Issuer>https://idp.example.test</saml:Issuer>
    <saml:Subject><saml:NameID>bob</saml:NameID></saml:Subject>
  </saml:Assertion>
</samlp:Response>`;
    const signed = await idp.sign(xml, { key: 'ec', sign: 'both' });
    assert.equal(countSignatures(signed), 2);
    assert.ok(signed.includes('<ds:Reference URI="#_r1">') && signed.includes('<ds:Reference URI="#_a1">'));
    await assertVerifies(signed, CERTS.ec, ASSERTION_SIGNATURE_XPATH);
    await assertVerifies(signed, CERTS.ec, RESPONSE_SIGNATURE_XPATH);
  });
});
