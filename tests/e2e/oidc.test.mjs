// OIDC sign-in end to end: the gateway in workerd, npm oidc-provider as the OpenID
// Provider (its own login and consent pages), a real origin, and an HTTP client that keeps
// cookies and follows redirects.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { Client, loginViaOp, logoutViaOp, parseForms, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { events, gatewaySecrets, gatewaySection, oidcProvider, pageReference, waitForEvent } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const SESSION = '__Host-portcullis_session';

describe('OIDC sign-in against oidc-provider', () => {
  let op;
  let origin;
  let gw;
  let port;
  const acme = (p) => `http://localhost:${port}${p}`;
  const beta = (p) => `http://127.0.0.1:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    const client = (id, alg, host = 'localhost') => ({
      client_id: id,
      client_secret: `${id}-secret`,
      id_token_signed_response_alg: alg,
      redirect_uris: [`http://${host}:${port}/_portcullis/oidc/callback`],
      post_logout_redirect_uris: [`http://${host}:${port}/_portcullis/logged-out`],
    });
    op = await startOp({
      clients: [client('gw-rs', 'RS256'), client('gw-es', 'ES256'), client('gw-beta', 'RS256', '127.0.0.1')],
      accessTokenTtl: 62,
    });
    const groups = { map: { engineering: ['eng'] }, roles: { superuser: ['admins'] } };
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ fetch_timeout_ms: 2000, session_cache_ttl: 1 }),
        tenants: [
          {
            id: 'acme',
            name: 'Acme',
            hosts: ['localhost'],
            origin: origin.url,
            groups,
            providers: [
              oidcProvider('rs', op, 'gw-rs'),
              oidcProvider('es', op, 'gw-es'),
              // Same client as `rs`, its own key cache: used where a cold JWKS cache matters.
              oidcProvider('cold', op, 'gw-rs', { client_secret: 'SECRET_RS' }),
            ],
          },
          {
            id: 'beta',
            name: 'Beta',
            hosts: ['127.0.0.1'],
            origin: origin.url,
            groups: { map: { engineering: ['eng'] }, mirror: true, require_mapped_group: true },
            headers: { preset: 'oauth2-proxy' },
            providers: [oidcProvider('beta', op, 'gw-beta')],
          },
        ],
      },
      secrets: gatewaySecrets({ SECRET_RS: 'gw-rs-secret', SECRET_ES: 'gw-es-secret', SECRET_BETA: 'gw-beta-secret' }),
    });
  });

  after(async () => {
    await gw?.stop();
    await op?.close();
    await origin?.close();
  });

  async function login(url, opts) {
    const client = new Client();
    const result = await loginViaOp(client, url, opts);
    return { client, ...result };
  }

  async function gatewayJwks() {
    return createLocalJWKSet((await new Client().get(acme('/.well-known/portcullis/jwks.json'))).json());
  }

  test('the login page lists the providers', async () => {
    const { final, chain } = await new Client().navigate(acme('/reports?year=2026'));
    assert.equal(chain[1], acme('/_portcullis/login?rd=%2Freports%3Fyear%3D2026'));
    assert.equal(final.status, 200);
    for (const name of ['rs', 'es', 'cold']) assert.match(final.text, new RegExp(`provider=${name}&amp;rd=%2Freports%3Fyear%3D2026`));
  });

  test('RS256: a full login reaches the origin with identity headers and a verifiable assertion', async () => {
    const { client, final, chain } = await login(acme('/_portcullis/login?provider=rs&rd=%2Fapp%2Fpage%3Fx%3D1'));
    assert.equal(final.status, 200, final.text);
    const seen = final.json();
    assert.equal(seen.path, '/app/page');
    assert.deepEqual(seen.query, { x: '1' });
    assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/alice`);
    assert.equal(seen.headers['x-portcullis-email'], 'alice@example.com');
    assert.equal(seen.headers['x-portcullis-groups'], 'admins,eng');
    assert.equal(seen.headers['x-portcullis-roles'], 'superuser');
    assert.equal(seen.headers.cookie, undefined);
    assert.ok(chain.some((u) => u.startsWith(`${op.issuer}/interaction/`)), 'went through the OP login page');
    const { payload, protectedHeader } = await jwtVerify(seen.headers['x-portcullis-assertion'], await gatewayJwks(), {
      issuer: 'https://gateway.test', audience: 'acme', algorithms: ['ES256'],
    });
    assert.equal(protectedHeader.kid, 'a1');
    assert.equal(payload.sub, `${op.issuer}/alice`);
    assert.deepEqual(payload.roles, ['superuser']);
    assert.equal(payload.exp - payload.iat, 300);
    const me = await client.get(acme('/_portcullis/me'), { headers: { accept: 'application/json' } });
    assert.equal(me.json().user_id, `${op.issuer}/alice`);
    const line = await waitForEvent(gw, (l) => l.event === 'login_success' && l.provider === 'rs');
    assert.equal(line.alg, 'RS256');
    assert.ok(!JSON.stringify(gw.logs).match(/eyJ[A-Za-z0-9_-]{20,}\./), 'no token in any log line');
  });

  test('ES256 provider', async () => {
    const { final } = await login(acme('/_portcullis/login?provider=es&rd=/es'));
    assert.equal(final.status, 200, final.text);
    assert.equal(final.json().headers['x-portcullis-user'], `${op.issuer}/alice`);
    const line = await waitForEvent(gw, (l) => l.event === 'login_success' && l.provider === 'es');
    assert.equal(line.alg, 'ES256');
  });

  test('key rotation at the OP mid-run: the gateway refetches the JWKS once and signs in', async () => {
    assert.equal((await login(acme('/_portcullis/login?provider=rs&rd=/before'))).final.status, 200);
    const fetchesBefore = op.counts.jwks;
    const { RS256: newKid } = await op.rotateKeys();
    const { final } = await login(acme('/_portcullis/login?provider=rs&rd=/after'));
    assert.equal(final.status, 200, final.text);
    assert.equal(op.counts.jwks, fetchesBefore + 1);
    await waitForEvent(gw, (l) => l.event === 'jwks_refetch' && l.provider === 'rs');
    await waitForEvent(gw, (l) => l.event === 'login_success' && l.kid === newKid);
  });

  test('two tenants on two hosts, with their own header preset and cookies', async () => {
    const { client, final } = await login(beta('/_portcullis/login?provider=beta&rd=/b'));
    assert.equal(final.status, 200, final.text);
    const seen = final.json();
    assert.equal(seen.headers['x-auth-request-user'], 'alice');
    assert.equal(seen.headers['x-auth-request-groups'], 'eng', 'mirror keeps only mapped groups');
    assert.equal(seen.headers['x-portcullis-user'], undefined);
    // The beta session is not a session on the acme host.
    const value = client.cookies('127.0.0.1')[SESSION];
    const other = new Client();
    other.setCookie('localhost', SESSION, value);
    const r = await other.get(acme('/x'), { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 302);
    await waitForEvent(gw, (l) => l.event === 'session_refused' && /signature/.test(l.cause));
  });

  test('groups that map to nothing are refused with "no roles assigned"', async () => {
    const { final } = await login(beta('/_portcullis/login?provider=beta&rd=/'), { login: 'mallory' });
    assert.equal(final.status, 403);
    assert.match(final.text, /no roles assigned/);
    await waitForEvent(gw, (l) => l.code === 'no_roles' && l.user === `${op.issuer}/mallory`);
  });

  test('a replayed callback is refused', async () => {
    const { client, chain } = await login(acme('/_portcullis/login?provider=rs&rd=/'));
    const callback = chain.find((u) => u.includes('/_portcullis/oidc/callback'));
    assert.ok(callback);
    const again = await client.get(callback, { headers: NAVIGATION_HEADERS });
    // The pending cookie was cleared by the first use; a browser that kept it gets the replay.
    assert.equal(again.status, 400);
    const fresh = new Client();
    const pending = await fresh.get(acme('/_portcullis/login?provider=rs'), { headers: NAVIGATION_HEADERS });
    assert.equal(pending.status, 302);
    const r = await fresh.get(callback, { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 400);
    await waitForEvent(gw, (l) => l.reference === pageReference(r.text) && l.code === 'login_not_started_here');
  });

  test('the same state used twice with its own pending cookie is a replay', async () => {
    const client = new Client();
    const start = await client.get(acme('/_portcullis/login?provider=rs&rd=/'), { headers: NAVIGATION_HEADERS });
    const pendingCookie = client.cookies('localhost')['__Host-portcullis_pending'];
    const { chain } = await loginViaOp(client, start.headers.get('location'));
    const callback = chain.find((u) => u.includes('/_portcullis/oidc/callback'));
    client.setCookie('localhost', '__Host-portcullis_pending', pendingCookie);
    const r = await client.get(callback, { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 400);
    assert.match(r.text, /already used/);
    await waitForEvent(gw, (l) => l.reference === pageReference(r.text) && l.code === 'state_replayed');
  });

  test('a callback from another login in this browser is refused', async () => {
    const a = await login(acme('/_portcullis/login?provider=rs&rd=/'));
    const callback = a.chain.find((u) => u.includes('/_portcullis/oidc/callback'));
    const b = new Client();
    await b.get(acme('/_portcullis/login?provider=rs'), { headers: NAVIGATION_HEADERS });
    const r = await b.get(callback, { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 400);
    const line = await waitForEvent(gw, (l) => l.reference === pageReference(r.text));
    assert.match(line.cause, /belongs to another login/);
  });

  test('an unknown (expired) state is refused', async () => {
    const client = new Client();
    const start = await client.get(acme('/_portcullis/login?provider=rs'), { headers: NAVIGATION_HEADERS });
    const state = new URL(start.headers.get('location')).searchParams.get('state');
    // The state the browser holds a cookie for, but altered: KV has no such entry.
    const forged = `${state.slice(0, -2)}AA`;
    const r = await client.get(acme(`/_portcullis/oidc/callback?code=x&state=${forged}`), { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 400);
    assert.ok([`login_not_started_here`, `state_expired`].includes(
      (await waitForEvent(gw, (l) => l.reference === pageReference(r.text))).code,
    ));
  });

  test('IdP error=access_denied is shown with its description', async () => {
    const { final } = await login(acme('/_portcullis/login?provider=rs&rd=/'), { cancel: true });
    assert.equal(final.status, 403);
    assert.match(final.text, /did not sign you in \(access_denied/);
    await waitForEvent(gw, (l) => l.reference === pageReference(final.text) && l.code === 'idp_error');
  });

  test('token endpoint 500 and timeout are refused with 502', async () => {
    try {
      op.setFault('token', '500');
      let { final } = await login(acme('/_portcullis/login?provider=rs&rd=/'));
      assert.equal(final.status, 502);
      assert.match(final.text, /could not be reached/);
      let line = await waitForEvent(gw, (l) => l.reference === pageReference(final.text));
      assert.match(line.cause, /token endpoint answered 500/);
      op.setFault('token', 'hang');
      ({ final } = await login(acme('/_portcullis/login?provider=rs&rd=/')));
      assert.equal(final.status, 502);
      line = await waitForEvent(gw, (l) => l.reference === pageReference(final.text));
      assert.match(line.cause, /timed out/);
    } finally {
      op.setFault('token', 'ok');
    }
  });

  test('JWKS unreachable is refused with 502', async () => {
    try {
      op.setFault('jwks', '500');
      const { final } = await login(acme('/_portcullis/login?provider=cold&rd=/'));
      assert.equal(final.status, 502);
      const line = await waitForEvent(gw, (l) => l.reference === pageReference(final.text));
      assert.match(line.cause, /JWKS: .* answered 500/);
    } finally {
      op.setFault('jwks', 'ok');
    }
  });

  test('sign-out revokes the session everywhere it was copied, then logs out at the OP', async () => {
    const { client } = await login(acme('/_portcullis/login?provider=rs&rd=/'));
    const copy = new Client();
    copy.setCookie('localhost', SESSION, client.cookies('localhost')[SESSION]);
    assert.equal((await copy.get(acme('/still-in'))).status, 200);
    const page = await client.get(acme('/_portcullis/logout'), { headers: NAVIGATION_HEADERS });
    const form = parseForms(page.text)[0];
    assert.ok(form.fields.csrf, 'the logout form carries a CSRF token');
    const refused = await client.post(acme('/_portcullis/logout'), new URLSearchParams({ csrf: 'wrong' }), { headers: NAVIGATION_HEADERS });
    assert.equal(refused.status, 403);
    const out = await client.post(acme('/_portcullis/logout'), new URLSearchParams({ csrf: form.fields.csrf }), { headers: NAVIGATION_HEADERS });
    assert.equal(out.status, 302);
    const loc = new URL(out.headers.get('location'));
    assert.equal(loc.origin, op.issuer, 'RP-initiated logout at the OP');
    assert.ok(loc.searchParams.get('id_token_hint'));
    const back = await logoutViaOp(client, loc.href);
    assert.equal(back.final.url, acme('/_portcullis/logged-out'));
    assert.match(back.final.text, /You have signed out/);
    const r = await copy.get(acme('/still-in'), { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 302);
    assert.match(r.headers.get('location'), /reason=expired/);
    await waitForEvent(gw, (l) => l.event === 'logout' && l.user === `${op.issuer}/alice`);
  });

  test('a tampered session cookie is refused and logged', async () => {
    const { client } = await login(acme('/_portcullis/login?provider=rs&rd=/'));
    const value = client.cookies('localhost')[SESSION];
    const last = value.at(-1) === 'A' ? 'B' : 'A';
    client.setCookie('localhost', SESSION, value.slice(0, -1) + last);
    const r = await client.get(acme('/x'), { headers: { accept: 'application/json' } });
    assert.equal(r.status, 401);
    await waitForEvent(gw, (l) => l.event === 'session_refused' && /signature does not verify/.test(l.cause));
  });

  test('refresh keeps the session; an unusable refresh answer ends it', async () => {
    const { client } = await login(acme('/_portcullis/login?provider=rs&rd=/'));
    // Access tokens live 62 s; refresh is due 60 s before expiry.
    await new Promise((r) => setTimeout(r, 3_000));
    const before = op.counts.token;
    assert.equal((await client.get(acme('/refreshed'))).status, 200);
    assert.equal(op.counts.token, before + 1);
    await waitForEvent(gw, (l) => l.event === 'session_refreshed');
    try {
      op.setFault('token', 'garbage');
      await new Promise((r) => setTimeout(r, 3_000));
      // The refreshed token is again due for refresh within the margin.
      const r = await client.get(acme('/after'), { headers: NAVIGATION_HEADERS });
      assert.equal(r.status, 302);
      await waitForEvent(gw, (l) => l.event === 'session_revoked' && /refresh refused/.test(l.cause));
    } finally {
      op.setFault('token', 'ok');
    }
  });

  test('nothing in the logs is a secret', () => {
    const all = gw.logs.join('\n');
    for (const s of ['gw-rs-secret', 'gw-es-secret', 'gw-beta-secret']) assert.ok(!all.includes(s));
    assert.ok(events(gw).length > 10);
  });
});
