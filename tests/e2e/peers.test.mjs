// Self-checks of the end-to-end test peers (OpenID Provider, echo origin,
// HTTP client), without the gateway. Run: node --test tests/e2e/peers.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';
import {
  Client, loginViaOp, logoutViaOp, parseForms, parseSetCookie,
} from './lib/client.mjs';
import { envFileQuote, buildEnvFile, configText } from './lib/gateway.mjs';

let op;
let origin;
let redirectUri;

const RS = { client_id: 'rs-client', client_secret: 'rs-secret' };
const ES = { client_id: 'es-client', client_secret: 'es-secret' };
const BC = { client_id: 'bc-client', client_secret: 'bc-secret' };

before(async () => {
  origin = await startOrigin();
  redirectUri = `${origin.url}/cb`;
  op = await startOp({
    clients: [
      {
        ...RS,
        redirect_uris: [redirectUri],
        post_logout_redirect_uris: [`${origin.url}/logged-out`],
      },
      { ...ES, redirect_uris: [redirectUri], id_token_signed_response_alg: 'ES256' },
      {
        ...BC,
        redirect_uris: [redirectUri],
        post_logout_redirect_uris: [`${origin.url}/logged-out`],
        backchannel_logout_uri: `${origin.url}/backchannel`,
        backchannel_logout_session_required: true,
      },
    ],
  });
});

after(async () => {
  await op?.close();
  await origin?.close();
});

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

function authorizeUrl(clientId, { scope = 'openid email profile groups offline_access', challenge, state, nonce, extra = {} }) {
  const u = new URL(op.discovery.authorization_endpoint);
  const params = {
    client_id: clientId,
    response_type: 'code',
    redirect_uri: redirectUri,
    scope,
    state,
    nonce,
    ...(challenge ? { code_challenge: challenge, code_challenge_method: 'S256' } : {}),
    ...extra,
  };
  u.search = new URLSearchParams(params).toString();
  return u.href;
}

function basic(id, secret) {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

async function tokenRequest(client, creds, params) {
  return client.post(op.discovery.token_endpoint, new URLSearchParams(params), {
    headers: { authorization: basic(creds.client_id, creds.client_secret) },
  });
}

/** Full authorization-code + PKCE flow ending on the echo origin; returns the token response. */
async function codeFlow(client, creds, { login = 'alice', scope } = {}) {
  const { verifier, challenge } = pkce();
  const state = crypto.randomBytes(8).toString('hex');
  const nonce = crypto.randomBytes(8).toString('hex');
  const { final, chain } = await loginViaOp(client, authorizeUrl(creds.client_id, {
    challenge, state, nonce, scope,
  }), { login });
  assert.equal(final.status, 200, `flow ended on ${final.url}: ${final.text.slice(0, 300)}`);
  const echo = final.json();
  assert.equal(echo.path, '/cb');
  assert.equal(echo.query.state, state);
  assert.equal(echo.query.iss, op.issuer, 'RFC 9207 iss parameter in the authorization response');
  assert.ok(echo.query.code, 'authorization code');
  assert.ok(chain.some((u) => u.startsWith(`${op.issuer}/interaction/`)), 'went through the OP login page');

  const res = await tokenRequest(client, creds, {
    grant_type: 'authorization_code',
    code: echo.query.code,
    redirect_uri: redirectUri,
    code_verifier: verifier,
  });
  assert.equal(res.status, 200, res.text);
  return { tokens: res.json(), nonce };
}

async function fetchJwks() {
  const res = await fetch(op.discovery.jwks_uri);
  assert.equal(res.status, 200);
  return res.json();
}

test('discovery advertises the expected endpoints and features', () => {
  const d = op.discovery;
  assert.equal(d.issuer, op.issuer);
  assert.equal(d.authorization_response_iss_parameter_supported, true);
  assert.deepEqual(d.code_challenge_methods_supported, ['S256']);
  assert.ok(d.scopes_supported.includes('offline_access'));
  assert.ok(d.scopes_supported.includes('groups'));
  assert.deepEqual([...d.id_token_signing_alg_values_supported].sort(), ['ES256', 'RS256']);
  assert.equal(d.backchannel_logout_supported, true);
  assert.ok(d.end_session_endpoint);
  assert.deepEqual(op.paths, {
    discovery: '/.well-known/openid-configuration',
    jwks: '/jwks',
    token: '/token',
    userinfo: '/me',
    authorize: '/auth',
    end_session: '/session/end',
    revocation: '/token/revocation',
  });
});

test('authorization code + PKCE flow, RS256 ID token, refresh token rotation, userinfo', async () => {
  const client = new Client();
  const { tokens, nonce } = await codeFlow(client, RS, { login: 'alice' });
  assert.equal(tokens.token_type, 'Bearer');
  assert.ok(tokens.access_token);
  assert.ok(tokens.refresh_token, 'offline_access yields a refresh token');

  const jwks = createLocalJWKSet(await fetchJwks());
  const { payload, protectedHeader } = await jwtVerify(tokens.id_token, jwks, {
    issuer: op.issuer, audience: RS.client_id,
  });
  assert.equal(protectedHeader.alg, 'RS256');
  assert.equal(protectedHeader.kid, op.kids().RS256);
  assert.equal(payload.sub, 'alice');
  assert.equal(payload.nonce, nonce);
  assert.equal(payload.email, 'alice@example.com');
  assert.equal(payload.email_verified, true);
  assert.equal(payload.preferred_username, 'alice');
  assert.equal(payload.name, 'Alice Example');
  assert.deepEqual(payload.groups, ['engineering', 'admins']);

  const info = await client.get(op.discovery.userinfo_endpoint, {
    headers: { authorization: `Bearer ${tokens.access_token}` },
  });
  assert.equal(info.status, 200, info.text);
  assert.deepEqual(info.json().groups, ['engineering', 'admins']);

  const refreshed = await tokenRequest(client, RS, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
  assert.equal(refreshed.status, 200, refreshed.text);
  const r = refreshed.json();
  assert.ok(r.id_token && r.access_token);
  assert.ok(r.refresh_token && r.refresh_token !== tokens.refresh_token, 'refresh token rotated');
  const reused = await tokenRequest(client, RS, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
  assert.equal(reused.status, 400);
  assert.equal(reused.json().error, 'invalid_grant');
});

test('ES256 client, per-user groups, no refresh token without offline_access', async () => {
  const client = new Client();
  const { tokens } = await codeFlow(client, ES, { login: 'bob', scope: 'openid email profile groups' });
  assert.equal(tokens.refresh_token, undefined);
  const header = decodeProtectedHeader(tokens.id_token);
  assert.equal(header.alg, 'ES256');
  assert.equal(header.kid, op.kids().ES256);
  const { payload } = await jwtVerify(tokens.id_token, createLocalJWKSet(await fetchJwks()), {
    issuer: op.issuer, audience: ES.client_id,
  });
  assert.equal(payload.email, 'bob@example.com');
  assert.deepEqual(payload.groups, ['marketing']);

  for (const [login, groups] of [['carol', []], ['mallory', ['unmapped-group']], ['zed', ['engineering']]]) {
    const { tokens: t } = await codeFlow(new Client(), RS, { login, scope: 'openid groups' });
    const { payload: p } = await jwtVerify(t.id_token, createLocalJWKSet(await fetchJwks()), { issuer: op.issuer });
    assert.deepEqual(p.groups, groups, login);
    assert.equal(p.email, undefined, 'email scope not requested');
  }
});

test('a second authorization with an OP session needs no login page (SSO)', async () => {
  const client = new Client();
  await codeFlow(client, RS, { login: 'alice' });
  const { challenge } = pkce();
  const { final, chain } = await client.follow(authorizeUrl(RS.client_id, { challenge, state: 's2', nonce: 'n2' }));
  assert.equal(final.json().path, '/cb');
  assert.ok(final.json().query.code);
  assert.ok(!chain.some((u) => u.includes('/interaction/')), chain.join('\n'));
});

test('response_mode=form_post is submitted like a browser would', async () => {
  const { challenge } = pkce();
  const { final } = await loginViaOp(new Client(), authorizeUrl(RS.client_id, {
    challenge, state: 'fp', nonce: 'n', extra: { response_mode: 'form_post' },
  }));
  const echo = final.json();
  assert.equal(echo.method, 'POST');
  assert.equal(echo.path, '/cb');
  const body = new URLSearchParams(echo.body);
  assert.ok(body.get('code'));
  assert.equal(body.get('state'), 'fp');
  assert.equal(body.get('iss'), op.issuer);
});

test('PKCE is required and the verifier is checked', async () => {
  const client = new Client();
  const { final } = await client.follow(authorizeUrl(RS.client_id, { state: 's', nonce: 'n' }));
  assert.equal(final.json().path, '/cb');
  assert.equal(final.json().query.error, 'invalid_request');
  assert.match(final.json().query.error_description, /PKCE/);

  const { challenge } = pkce();
  const { final: cb } = await loginViaOp(client, authorizeUrl(RS.client_id, { challenge, state: 's', nonce: 'n' }));
  const res = await tokenRequest(client, RS, {
    grant_type: 'authorization_code',
    code: cb.json().query.code,
    redirect_uri: redirectUri,
    code_verifier: pkce().verifier,
  });
  assert.equal(res.status, 400);
  assert.equal(res.json().error, 'invalid_grant');
});

test('declining consent or cancelling the login returns access_denied', async () => {
  for (const opts of [{ consent: false }, { cancel: true }]) {
    const { challenge } = pkce();
    const { final } = await loginViaOp(new Client(), authorizeUrl(RS.client_id, { challenge, state: 'x', nonce: 'n' }), opts);
    assert.equal(final.json().path, '/cb');
    assert.equal(final.json().query.error, 'access_denied', JSON.stringify(opts));
    assert.equal(final.json().query.state, 'x');
  }
});

test('RP-initiated logout through the OP confirmation page', async () => {
  const client = new Client();
  const { tokens } = await codeFlow(client, RS, { login: 'alice' });
  const u = new URL(op.discovery.end_session_endpoint);
  u.search = new URLSearchParams({
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: `${origin.url}/logged-out`,
    state: 'bye',
  }).toString();
  const { final } = await logoutViaOp(client, u.href);
  assert.equal(final.json().path, '/logged-out');
  assert.equal(final.json().query.state, 'bye');
  // The OP session is gone: a new authorization shows the login page again.
  const { challenge } = pkce();
  const again = await client.follow(authorizeUrl(RS.client_id, { challenge, state: 's', nonce: 'n' }));
  assert.ok(parseForms(again.final.text).some((f) => f.inputs.some((i) => i.name === 'login')));
});

test('back-channel logout posts a logout token with sid to the client', async () => {
  const client = new Client();
  const { tokens } = await codeFlow(client, BC, { login: 'alice' });
  const jwks = createLocalJWKSet(await fetchJwks());
  const { payload: idt } = await jwtVerify(tokens.id_token, jwks, { issuer: op.issuer, audience: BC.client_id });
  assert.ok(idt.sid, 'sid claim present for a client that requires it');

  const seen = origin.requests.length;
  const u = new URL(op.discovery.end_session_endpoint);
  u.search = new URLSearchParams({ id_token_hint: tokens.id_token, post_logout_redirect_uri: `${origin.url}/logged-out` }).toString();
  const { final } = await logoutViaOp(client, u.href);
  assert.equal(final.json().path, '/logged-out');
  const bc = origin.requests.slice(seen).find((r) => r.path === '/backchannel');
  assert.ok(bc, `back-channel logout request received: ${JSON.stringify(op.backchannel)}`);
  assert.equal(bc.method, 'POST');
  const logoutToken = new URLSearchParams(bc.body).get('logout_token');
  const { payload } = await jwtVerify(logoutToken, jwks, { issuer: op.issuer, audience: BC.client_id });
  assert.equal(payload.sub, 'alice');
  assert.equal(payload.sid, idt.sid);
  assert.ok(payload.events['http://schemas.openid.net/event/backchannel-logout']);
});

test('rotateKeys: new kids, old keys gone from the JWKS, logins keep working', async () => {
  const before = op.kids();
  const client = new Client();
  await codeFlow(client, RS, { login: 'alice' });

  const after = await op.rotateKeys();
  assert.notEqual(after.RS256, before.RS256);
  assert.notEqual(after.ES256, before.ES256);
  const jwks = await fetchJwks();
  const kids = jwks.keys.map((k) => k.kid).sort();
  assert.deepEqual(kids, [after.ES256, after.RS256].sort());
  assert.ok(jwks.keys.every((k) => k.d === undefined && k.p === undefined), 'public keys only');

  // The same browser still has its OP session (SSO) after rotation.
  const { tokens } = await (async () => {
    const { verifier, challenge } = pkce();
    const { final } = await client.follow(authorizeUrl(RS.client_id, { challenge, state: 's', nonce: 'n' }));
    const res = await tokenRequest(client, RS, {
      grant_type: 'authorization_code', code: final.json().query.code, redirect_uri: redirectUri, code_verifier: verifier,
    });
    assert.equal(res.status, 200, res.text);
    return { tokens: res.json() };
  })();
  assert.equal(decodeProtectedHeader(tokens.id_token).kid, after.RS256);

  // A new browser logs in from scratch; both algorithms use the new keys.
  const { tokens: es } = await codeFlow(new Client(), ES, { login: 'bob' });
  assert.equal(decodeProtectedHeader(es.id_token).kid, after.ES256);
  await jwtVerify(es.id_token, createLocalJWKSet(jwks), { issuer: op.issuer, audience: ES.client_id });
});

test('fault injection and request counting', async (t) => {
  t.after(() => {
    for (const e of ['discovery', 'jwks', 'token', 'userinfo']) op.setFault(e, 'ok');
  });
  const client = new Client();
  const startToken = op.counts.token;

  op.setFault('token', '500');
  const r500 = await tokenRequest(client, RS, { grant_type: 'authorization_code', code: 'x', code_verifier: 'y', redirect_uri: redirectUri });
  assert.equal(r500.status, 500);
  assert.equal(r500.json().error, 'server_error');
  assert.equal(op.counts.token, startToken + 1);

  op.setFault('jwks', 'garbage');
  const garbage = await client.get(op.discovery.jwks_uri);
  assert.equal(garbage.status, 200);
  assert.throws(() => garbage.json());

  op.setFault('discovery', 'huge');
  const huge = await client.get(`${op.issuer}/.well-known/openid-configuration`);
  assert.equal(huge.status, 200);
  assert.ok(huge.text.length >= 5 * 1024 * 1024);

  op.setFault('userinfo', 'hang');
  const t0 = Date.now();
  await assert.rejects(client.get(`${op.issuer}${op.paths.userinfo}`, { timeoutMs: 300 }), /timeout|aborted/i);
  assert.ok(Date.now() - t0 < 5000);

  for (const e of ['discovery', 'jwks', 'token', 'userinfo']) op.setFault(e, 'ok');
  const ok = await client.get(`${op.issuer}/.well-known/openid-configuration`);
  assert.equal(ok.json().issuer, op.issuer);
  assert.equal((await client.get(op.discovery.jwks_uri)).json().keys.length, 2);
  assert.ok(op.counts.discovery >= 2 && op.counts.jwks >= 2 && op.counts.userinfo >= 1);
  assert.throws(() => op.setFault('nope', 'ok'));
  assert.throws(() => op.setFault('token', 'nope'));
});

test('echo origin: echo, duplicate headers, cookies, redirect, slow, html', async () => {
  const client = new Client();
  const res = await client.post(`${origin.url}/p/a?x=1&x=2&y=3`, 'hello', {
    headers: { 'content-type': 'text/plain', 'x-portcullis-user': '<b>alice</b>' },
  });
  const echo = res.json();
  assert.equal(echo.method, 'POST');
  assert.equal(echo.path, '/p/a');
  assert.deepEqual(echo.query, { x: ['1', '2'], y: '3' });
  assert.equal(echo.body, 'hello');
  assert.equal(echo.headers['x-portcullis-user'], '<b>alice</b>');
  assert.deepEqual(origin.requests.at(-1), echo);

  // Duplicate request headers are joined (raw socket: fetch merges them itself).
  const net = await import('node:net');
  const raw = await new Promise((resolve, reject) => {
    const sock = net.connect(origin.port, '127.0.0.1', () => {
      sock.end('GET /dup HTTP/1.1\r\nHost: x\r\nX-Dup: one\r\nX-Dup: two\r\nConnection: close\r\n\r\n');
    });
    let buf = '';
    sock.on('data', (d) => { buf += d; });
    sock.on('end', () => resolve(buf));
    sock.on('error', reject);
  });
  assert.match(raw, /"x-dup":"one, two"/);

  const sc = await client.get(`${origin.url}/set-cookies`);
  assert.deepEqual(sc.setCookies, ['a=1; Path=/', 'b=2; Path=/']);
  assert.deepEqual(client.cookies('127.0.0.1'), { a: '1', b: '2' });
  assert.equal(client.cookies('localhost').a, undefined, 'hosts have separate jars');
  const withCookies = (await client.get(`${origin.url}/echo`)).json();
  assert.equal(withCookies.headers.cookie, 'a=1; b=2');

  const nav = (await client.navigate(`${origin.url}/nav`)).final.json();
  assert.equal(nav.headers['sec-fetch-mode'], 'navigate');
  assert.match(nav.headers.accept, /text\/html/);
  const api = (await client.get(`${origin.url}/api`, { headers: { host: 'tenant.example:8443' } })).json();
  assert.equal(api.headers.host, 'tenant.example:8443');
  assert.equal(api.headers.accept, '*/*');
  assert.equal(api.headers['sec-fetch-mode'], undefined);

  const redirect = await client.get(`${origin.url}/redirect`);
  assert.equal(redirect.status, 302);
  assert.equal(redirect.location, '/elsewhere');
  const followed = await client.follow(`${origin.url}/redirect`);
  assert.deepEqual(followed.chain, [`${origin.url}/redirect`, `${origin.url}/elsewhere`]);

  const t0 = Date.now();
  const slow = await client.get(`${origin.url}/slow?ms=150`);
  assert.equal(slow.status, 200);
  assert.ok(Date.now() - t0 >= 140);

  const html = await client.get(`${origin.url}/html`, { headers: { 'x-portcullis-email': '<script>x</script>' } });
  assert.match(html.headers.get('content-type'), /text\/html/);
  assert.match(html.text, /&#60;script&#62;x&#60;\/script&#62;/);
  assert.doesNotMatch(html.text, /<script>/);
});

test('cookie jar: paths, expiry, Secure on http, tampering helpers', async () => {
  const c = new Client();
  const base = 'http://127.0.0.1:1/app/page';
  c.storeSetCookies(base, [
    '__Host-s=1; Path=/; Secure; HttpOnly; SameSite=Lax',
    'scoped=2; Path=/app',
    'deflt=3',
    'other=4; Path=/application',
    'gone=5; Path=/; Max-Age=0',
    'old=6; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT',
  ]);
  assert.deepEqual(c.cookies('127.0.0.1'), {
    '__Host-s': '1', scoped: '2', deflt: '3', other: '4',
  });
  assert.equal(c.cookieHeaderFor('http://127.0.0.1:2/app/x'), 'scoped=2; deflt=3; __Host-s=1');
  assert.equal(c.cookieHeaderFor('http://127.0.0.1:2/app'), 'scoped=2; deflt=3; __Host-s=1');
  assert.equal(c.cookieHeaderFor('http://127.0.0.1:2/apple'), '__Host-s=1');
  assert.equal(c.cookieHeaderFor('http://127.0.0.1:2/application/x'), 'other=4; __Host-s=1');
  assert.equal(c.cookieHeaderFor('http://localhost:2/app/x'), '');

  c.storeSetCookies(base, ['scoped=; Path=/app; Max-Age=0']);
  assert.equal(c.cookies('127.0.0.1').scoped, undefined);
  c.setCookie('127.0.0.1', '__Host-s', 'tampered');
  assert.equal(c.cookies('127.0.0.1')['__Host-s'], 'tampered');
  c.deleteCookie('127.0.0.1', '__Host-s');
  assert.equal(c.cookies('127.0.0.1')['__Host-s'], undefined);

  const parsed = parseSetCookie('n=v; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Strict', base);
  assert.equal(parsed.secure, true);
  assert.equal(parsed.httpOnly, true);
  assert.equal(parsed.sameSite, 'Strict');
  assert.ok(parsed.expires > Date.now() + 50_000);
});

test('env file quoting survives JSON with quotes, #, =, $ and backslashes', () => {
  // The round trip through wrangler itself is covered by the gateway tests;
  // this checks the quoting rules.
  assert.equal(envFileQuote('{"a":"b#c=d"}'), '\'{"a":"b#c=d"}\'');
  assert.equal(envFileQuote('a$HOME'), "'a\\$HOME'");
  assert.equal(envFileQuote("it's"), '`it\'s`');
  assert.throws(() => envFileQuote("'`"));
  assert.throws(() => envFileQuote('a\r\nb'));
  const text = configText({ s: "it's `x`" });
  assert.deepEqual(JSON.parse(text), { s: "it's `x`" });
  assert.doesNotThrow(() => envFileQuote(text));
  assert.match(buildEnvFile({ A: 'x', B: undefined }), /^A='x'\n$/);
});
