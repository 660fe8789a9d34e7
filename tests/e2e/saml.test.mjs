// SAML 2.0 SP-initiated login end to end: the gateway in workerd, a SAML IdP that signs
// fresh Responses with xmlsec1, and a real origin.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Client, parseForms, submitForm, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, pageReference, waitForEvent } from './lib/fixtures.mjs';
import { startSamlIdp, certificateBase64, KEYS } from './peers/saml_idp.mjs';
import { startOrigin } from './peers/origin.mjs';

describe('SAML SP-initiated login', () => {
  let idp;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    idp = await startSamlIdp({ key: 'rsa', sign: 'assertion' });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1 }),
        tenants: [{
          id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
          groups: { map: { engineering: ['eng'] }, roles: { superuser: ['admins'] } },
          providers: [
            // Imported from the IdP's metadata document, plus the EC certificate (rollover list).
            { type: 'saml', name: 'corp', label: 'Corp SAML', idp_metadata: idp.metadata(),
              idp_certificates: [idp.certificateBase64(), certificateBase64(new URL(`../fixtures/saml/keys/${KEYS.ec.cert}`, import.meta.url))],
              attributes: { extra: { given: 'givenName' } } },
            // Encrypted assertions, decrypted with the SP key from a Worker secret.
            { type: 'saml', name: 'sealed', label: 'Sealed', idp_metadata: idp.metadata(), sp_private_key: 'SP_KEY',
              sp_certificate: fs.readFileSync(new URL('../fixtures/saml/keys/sp-rsa.crt', import.meta.url), 'utf8') },
            // Only the metadata URL: entity id, SSO URL and certificates are fetched at run time.
            { type: 'saml', name: 'fetched', label: 'Fetched', idp_metadata_url: idp.metadataUrl },
            { type: 'saml', name: 'portal', label: 'Portal', idp_entity_id: idp.entityId, idp_sso_url: idp.ssoUrl,
              idp_certificates: [idp.certificateBase64()], allow_idp_initiated: true },
          ],
        }],
      },
      secrets: gatewaySecrets({ SP_KEY: fs.readFileSync(new URL('../fixtures/saml/keys/sp-rsa.key', import.meta.url), 'utf8') }),
    });
  });

  after(async () => {
    await gw?.stop();
    await idp?.close();
    await origin?.close();
  });

  for (const algorithm of ['aes256-gcm', 'aes128-cbc']) {
    test(`an encrypted assertion (${algorithm}) is decrypted with the SP key and signs in`, async () => {
      idp.reset();
      idp.set({ key: 'rsa', sign: 'assertion', encrypt: { cert: fileURLToPath(new URL('../fixtures/saml/keys/sp-rsa.crt', import.meta.url)), algorithm } });
      const client = new Client();
      const { final: page } = await client.navigate(site('/_portcullis/login?provider=sealed&rd=/enc'));
      assert.match(Buffer.from(parseForms(page.text)[0].fields.SAMLResponse, 'base64').toString(), /EncryptedAssertion/);
      const { final } = await submitForm(client, page.url, parseForms(page.text)[0]);
      assert.equal(final.status, 200, final.text);
      assert.equal(final.json().headers['x-portcullis-email'], 'alice@example.com');
      idp.reset();
    });
  }

  test('an encrypted assertion without a configured SP key is refused clearly', async () => {
    idp.reset();
    idp.set({ key: 'rsa', sign: 'assertion', encrypt: { cert: fileURLToPath(new URL('../fixtures/saml/keys/sp-rsa.crt', import.meta.url)), algorithm: 'aes256-gcm' } });
    const { final } = await login();
    await refusal(final, 500, 'config_error', /SP's private key|decrypt/i);
    idp.reset();
  });

  /** Starts a login and returns the IdP's auto-posting page (not submitted yet). */
  async function toIdp(rd = '/docs', client = new Client()) {
    const { final } = await client.navigate(site(`/_portcullis/login?provider=corp&rd=${encodeURIComponent(rd)}`));
    assert.equal(final.status, 200, final.text);
    const form = parseForms(final.text)[0];
    assert.ok(form?.fields.SAMLResponse, 'the IdP answers with an auto-posting form');
    return { client, page: final, form };
  }

  async function post(client, page, form, values = {}) {
    return (await submitForm(client, page.url, form, values)).final;
  }

  async function login(rd = '/docs') {
    const { client, page, form } = await toIdp(rd);
    return { client, final: await post(client, page, form), form };
  }

  async function refusal(final, status, code, cause) {
    assert.equal(final.status, status, final.text);
    const line = await waitForEvent(gw, (l) => l.reference === pageReference(final.text));
    assert.equal(line.code, code);
    if (cause) assert.match(line.cause, cause);
    return line;
  }

  for (const [sign, key] of [['assertion', 'rsa'], ['response', 'rsa'], ['both', 'rsa'], ['assertion', 'ec'], ['response', 'ec']]) {
    test(`a login with the ${sign} signed (${key}) reaches the origin`, async () => {
      idp.set({ sign, key });
      const { final } = await login('/docs?page=2');
      assert.equal(final.status, 200, final.text);
      const seen = final.json();
      assert.equal(seen.path, '/docs');
      assert.equal(seen.headers['x-portcullis-user'], `${idp.entityId}/alice@example.com`);
      assert.equal(seen.headers['x-portcullis-email'], 'alice@example.com');
      assert.equal(seen.headers['x-portcullis-name'], 'Alice Example');
      assert.equal(seen.headers['x-portcullis-groups'], 'admins,eng');
      assert.equal(seen.headers['x-portcullis-roles'], 'superuser');
      const payload = JSON.parse(Buffer.from(seen.headers['x-portcullis-assertion'].split('.')[1], 'base64url').toString());
      assert.deepEqual(payload.attributes, { given: ['Alice'] }, 'extra attribute mapping reaches the assertion');
      assert.equal(payload.sub, `${idp.entityId}/alice@example.com`);
    });
  }

  test('a connection configured by its metadata URL signs in', async () => {
    idp.reset();
    idp.set({ key: 'rsa', sign: 'response' });
    const client = new Client();
    const { final: page } = await client.navigate(site('/_portcullis/login?provider=fetched&rd=/m'));
    assert.equal(page.status, 200, page.text);
    const { final } = await submitForm(client, page.url, parseForms(page.text)[0]);
    assert.equal(final.status, 200, final.text);
    assert.equal(final.json().path, '/m');
  });

  test('adding a factor asks the IdP for a fresh sign-in (ForceAuthn) and checks its AuthnInstant', async () => {
    idp.reset();
    idp.set({ key: 'rsa', sign: 'assertion' });
    const { client, final } = await login('/docs');
    assert.equal(final.status, 200, final.text);
    const page = await client.get(site('/_portcullis/mfa/enroll?rd=%2Fdocs'), { headers: NAVIGATION_HEADERS });
    assert.equal(page.status, 302);
    const again = page.headers.get('location');
    assert.match(again, /^\/_portcullis\/login\?provider=corp&reauth=1&/);
    // An IdP that answers from an older sign-in (ForceAuthn ignored) is refused.
    idp.set({ authnInstantOffset: -3600 });
    let { final: toIdpPage } = await client.navigate(site(again));
    assert.equal(idp.requests.at(-1).forceAuthn, 'true');
    let { final: answer } = await submitForm(client, toIdpPage.url, parseForms(toIdpPage.text)[0]);
    await refusal(answer, 401, 'fresh_sign_in_required', /fresh sign-in/);
    // A fresh one leads to enrolment.
    idp.set({ authnInstantOffset: 0 });
    ({ final: toIdpPage } = await client.navigate(site(again)));
    ({ final: answer } = await submitForm(client, toIdpPage.url, parseForms(toIdpPage.text)[0]));
    assert.equal(answer.status, 200, answer.text);
    assert.equal(new URL(answer.url).pathname, '/_portcullis/mfa/enroll');
    assert.match(answer.text, /id="totp-secret"/);
    idp.reset();
  });

  test('the AuthnRequest names our ACS, entity id and a fresh ID', async () => {
    idp.reset();
    idp.set({ key: 'rsa', sign: 'assertion' });
    await toIdp();
    const req = idp.requests.at(-1);
    assert.equal(req.acsUrl, site('/_portcullis/saml/acs?ws=corp'));
    assert.equal(req.issuer, site('/_portcullis/saml/metadata?ws=corp'));
    assert.match(req.id, /^_[0-9a-f]{32,}$|^_[A-Za-z0-9_-]{20,}$/);
    const md = await new Client().get(site('/_portcullis/saml/metadata?ws=corp'));
    assert.match(md.text, /AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"/);
  });

  const refusals = [
    ['a signature by another key', { key: 'untrusted' }, 401, 'invalid_saml_response', /signature|certificate|key/i],
    ['an attribute changed after signing', { mutate: (x) => x.replace('Alice Example', 'Mallory Example') }, 401, 'invalid_saml_response', /digest/i],
    ['an unsigned response', { sign: 'none' }, 401, 'invalid_saml_response', /is signed/i],
    ['a wrong audience', { audience: 'https://other-sp.example' }, 401, 'invalid_saml_response', /audience/i],
    ['a wrong Recipient', { recipient: 'https://evil.example/acs' }, 401, 'invalid_saml_response', /Recipient/i],
    ['a wrong Destination', { destination: 'https://evil.example/acs' }, 401, 'invalid_saml_response', /Destination/i],
    ['a wrong InResponseTo', { inResponseTo: '_not-our-request' }, 401, 'invalid_saml_response', /InResponseTo/i],
    ['a missing InResponseTo', { inResponseTo: null }, 401, 'invalid_saml_response', /InResponseTo/i],
    ['an expired assertion', { clockOffset: -3600 }, 401, 'token_time', null],
    ['an assertion not yet valid', { clockOffset: 3600 }, 401, 'token_time', null],
    ['SHA-1 when legacy algorithms are off', { signatureAlgorithm: 'sha1', digest: 'sha1' }, 401, 'invalid_saml_response', /SHA-1|sha1/i],
  ];
  for (const [what, opts, status, code, cause] of refusals) {
    test(`refused: ${what}`, async () => {
      idp.reset();
      idp.set({ key: 'rsa', sign: 'assertion', ...opts });
      const { final } = await login();
      await refusal(final, status, code, cause);
      idp.reset();
    });
  }

  test('refused: status Responder is shown with its message', async () => {
    idp.reset();
    idp.set({ sign: 'response', status: 'urn:oasis:names:tc:SAML:2.0:status:Responder', statusMessage: 'Account disabled' });
    const { final } = await login();
    await refusal(final, 403, 'idp_error', /Responder/);
    assert.match(final.text, /Responder: Account disabled/);
    idp.reset();
  });

  test('refused: the same response posted twice (login state is single use)', async () => {
    idp.reset();
    idp.set({ key: 'rsa', sign: 'assertion' });
    const { client, page, form } = await toIdp();
    assert.equal((await post(client, page, form)).status, 200);
    const again = await post(client, page, form);
    await refusal(again, 400, 'state_replayed', null);
  });

  test('refused: an IdP-initiated assertion replayed', async () => {
    idp.reset();
    const acs = site('/_portcullis/saml/acs?ws=portal');
    const { samlResponse } = await idp.idpInitiated(acs, { spEntityId: site('/_portcullis/saml/metadata?ws=portal'), relayState: '/welcome' });
    const a = new Client();
    const first = await a.post(acs, new URLSearchParams({ SAMLResponse: samlResponse, RelayState: '/welcome' }), { headers: NAVIGATION_HEADERS });
    assert.equal(first.status, 302, first.text);
    assert.equal(first.headers.get('location'), '/welcome');
    const b = new Client();
    const second = await b.post(acs, new URLSearchParams({ SAMLResponse: samlResponse, RelayState: '/welcome' }), { headers: NAVIGATION_HEADERS });
    await refusal(second, 400, 'saml_replay', /replay/);
  });

  test('refused: unsolicited responses where IdP-initiated login is off', async () => {
    idp.reset();
    const acs = site('/_portcullis/saml/acs?ws=corp');
    const { samlResponse } = await idp.idpInitiated(acs, { spEntityId: site('/_portcullis/saml/metadata?ws=corp') });
    const r = await new Client().post(acs, new URLSearchParams({ SAMLResponse: samlResponse }), { headers: NAVIGATION_HEADERS });
    await refusal(r, 400, 'unsolicited', null);
  });

  test('refused: a 10 MB body and a DOCTYPE', async () => {
    const big = 'A'.repeat(10 * 1024 * 1024);
    const r = await new Client().post(site('/_portcullis/saml/acs?ws=corp'), new URLSearchParams({ SAMLResponse: big }), { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 413);
    const evil = Buffer.from('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&x;</samlp:Response>').toString('base64');
    const d = await new Client().post(site('/_portcullis/saml/acs?ws=corp'), new URLSearchParams({ SAMLResponse: evil }), { headers: NAVIGATION_HEADERS });
    await refusal(d, 401, 'invalid_saml_response', /DOCTYPE/i);
  });

  test('refused: one 518 KB start tag with 74,000 distinct attributes, and a 5,000-prefix PrefixList', async () => {
    // The attribute bomb is refused at the attribute limit, as the tag is read.
    let tag = '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"';
    for (let i = 0; tag.length < 518_000; i += 1) tag += ` a${i}=""`;
    const bomb = Buffer.from(`${tag}/>`).toString('base64');
    const r = await new Client().post(site('/_portcullis/saml/acs?ws=corp'), new URLSearchParams({ SAMLResponse: bomb }), { headers: NAVIGATION_HEADERS });
    await refusal(r, 401, 'invalid_saml_response', /more than 128 attributes/);
    // A signature whose InclusiveNamespaces list names thousands of prefixes is refused
    // before anything is canonicalized.
    const prefixes = Array.from({ length: 5000 }, (_, i) => `p${i}`).join(' ');
    const signed = fs.readFileSync(new URL('../fixtures/saml/signed/response-signed-rsa.xml', import.meta.url), 'utf8')
      .replace('PrefixList="xs"', `PrefixList="${prefixes}"`);
    const p = await new Client().post(site('/_portcullis/saml/acs?ws=corp'), new URLSearchParams({ SAMLResponse: Buffer.from(signed).toString('base64') }), { headers: NAVIGATION_HEADERS });
    await refusal(p, 401, 'invalid_saml_response', /PrefixList has more than 32 prefixes/);
  });
});

describe('SAML single logout', () => {
  let idp;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    idp = await startSamlIdp({ key: 'rsa', sign: 'assertion' });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1 }),
        tenants: [{ id: 'acme', hosts: ['localhost'], origin: origin.url, providers: [
          { type: 'saml', name: 'corp', label: 'Corp', idp_metadata: idp.metadata() },
          { type: 'saml', name: 'slo', label: 'With SLO', idp_metadata: idp.metadata(), idp_slo_url: `${idp.url}/slo` },
        ] }],
      },
      secrets: gatewaySecrets(),
    });
  });

  after(async () => {
    await gw?.stop();
    await idp?.close();
    await origin?.close();
  });

  /** A LogoutRequest over HTTP-Redirect, signed like an IdP does (bindings 3.4.4.1). */
  function logoutQuery({ nameId = 'alice@example.com', sign = true, tamper = false } = {}) {
    const xml = `<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_lr${Date.now()}" Version="2.0" IssueInstant="${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}" Destination="${site('/_portcullis/saml/slo?ws=corp')}"><saml:Issuer>${idp.entityId}</saml:Issuer><saml:NameID>${nameId}</saml:NameID></samlp:LogoutRequest>`;
    const enc = (v) => encodeURIComponent(v);
    const msg = zlib.deflateRawSync(Buffer.from(xml)).toString('base64');
    let q = `SAMLRequest=${enc(msg)}&RelayState=rs1&SigAlg=${enc('http://www.w3.org/2001/04/xmldsig-more#rsa-sha256')}`;
    if (!sign) return q.replace(/&SigAlg=.*/, '');
    const key = fs.readFileSync(new URL('../fixtures/saml/keys/idp-rsa.key', import.meta.url));
    const sig = crypto.sign('sha256', Buffer.from(q), key).toString('base64');
    if (tamper) {
      const evil = zlib.deflateRawSync(Buffer.from(xml.replace(nameId, 'bob@example.com'))).toString('base64');
      q = q.replace(/^SAMLRequest=[^&]*/, `SAMLRequest=${enc(evil)}`);
    }
    return `${q}&Signature=${enc(sig)}`;
  }

  test('a signed LogoutRequest from the IdP ends the session; unsigned or altered ones are refused', async () => {
    const client = new Client();
    const { final: page } = await client.navigate(site('/_portcullis/login?provider=corp&rd=/in'));
    const { final } = await submitForm(client, page.url, parseForms(page.text)[0]);
    assert.equal(final.status, 200, final.text);
    const slo = (q) => new Client().get(site(`/_portcullis/saml/slo?ws=corp&${q}`), { headers: { accept: 'application/json' } });
    assert.equal((await slo(logoutQuery({ sign: false }))).status, 400);
    const altered = await slo(logoutQuery({ tamper: true }));
    assert.equal(altered.status, 400);
    assert.match(altered.json().message, /signature does not verify/);
    assert.equal((await client.get(site('/in'))).status, 200, 'still signed in after refused requests');
    const ok = await slo(logoutQuery());
    assert.equal(ok.status, 200, ok.text);
    await waitForEvent(gw, (l) => l.event === 'saml_logout' && l.revoked === 1);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await client.get(site('/in'), { headers: NAVIGATION_HEADERS })).status, 302);
  });
});

describe('SAML single logout started by the user', () => {
  test('signing out of a SAML session sends a LogoutRequest to the IdP', async () => {
    const idp = await startSamlIdp({ key: 'rsa', sign: 'assertion' });
    const origin = await startOrigin();
    const port = await freePort();
    const site = (p) => `http://localhost:${port}${p}`;
    const gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection(),
        tenants: [{ id: 'acme', hosts: ['localhost'], origin: origin.url, providers: [
          { type: 'saml', name: 'slo', label: 'With SLO', idp_metadata: idp.metadata(), idp_slo_url: `${idp.url}/slo` },
        ] }],
      },
      secrets: gatewaySecrets(),
    });
    try {
      const client = new Client();
      const { final: page } = await client.navigate(site('/_portcullis/login?provider=slo&rd=/in'));
      assert.equal((await submitForm(client, page.url, parseForms(page.text)[0])).final.status, 200);
      const confirm = await client.get(site('/_portcullis/logout'), { headers: NAVIGATION_HEADERS });
      const form = parseForms(confirm.text)[0];
      const out = await client.post(site('/_portcullis/logout'), new URLSearchParams({ csrf: form.fields.csrf }), { headers: NAVIGATION_HEADERS });
      assert.equal(out.status, 302);
      const loc = new URL(out.headers.get('location'));
      assert.equal(`${loc.origin}${loc.pathname}`, `${idp.url}/slo`);
      const xml = zlib.inflateRawSync(Buffer.from(loc.searchParams.get('SAMLRequest'), 'base64')).toString();
      assert.match(xml, /<samlp:LogoutRequest /);
      assert.match(xml, /<saml:NameID[^>]*>alice@example.com<\/saml:NameID>/);
      assert.match(xml, /<samlp:SessionIndex>[^<]+<\/samlp:SessionIndex>/);
      assert.equal((await client.get(site('/in'), { headers: NAVIGATION_HEADERS })).status, 302, 'the local session is gone');
    } finally {
      await gw.stop();
      await idp.close();
      await origin.close();
    }
  });
});
