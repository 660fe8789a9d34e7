// Machine clients end to end: the gateway in workerd accepts JWT access tokens that npm
// oidc-provider issues by client credentials (RFC 8707 resource indicators, RFC 9068 tokens
// typed at+jwt), forwards them to a real origin as a machine principal, and refuses forged,
// expired, foreign-audience and under-scoped tokens with RFC 6750 challenges.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider, waitForEvent } from './lib/fixtures.mjs';
import { connect } from './lib/websocket.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const API = 'https://api.acme.test';
const ADMIN_TOKEN = 'e2e-admin-token-0123456789-0123456789-abc';
const OTHER = 'https://other.test';

describe('machine clients with client-credentials JWT access tokens', () => {
  let op;
  let origin;
  let gw;
  let port;
  const url = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    op = await startOp({
      clients: [
        {
          client_id: 'gw', client_secret: 'gw-secret',
          redirect_uris: [`http://localhost:${port}/_portcullis/oidc/callback`],
        },
        {
          client_id: 'ci-job', client_secret: 'ci-secret',
          grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
        },
      ],
      resources: {
        [API]: { scope: 'api read write', ttl: 300 },
        // Tokens that expire at once, for the expiry check (the issuer's skew is 0).
        'https://api.acme.test/short': { scope: 'api', ttl: 1 },
        [OTHER]: { scope: 'api' },
      },
    });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ fetch_timeout_ms: 2000, admin_token: 'ADMIN_TOKEN' }),
        tenants: [{
          id: 'acme',
          hosts: ['localhost'],
          origin: origin.url,
          providers: [oidcProvider('corp', op, 'gw')],
          service_tokens: true,
          bearer: [{
            provider: 'corp',
            audiences: [API, 'https://api.acme.test/short'],
            scopes: ['api'],
            require_typ: true,
            clock_skew: 0,
          }],
          policy: [
            { path: '/admin', match: 'prefix', require_scopes: ['write'] },
            { path: '/people', match: 'prefix', principal: 'user' },
          ],
        }],
      },
      secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret', ADMIN_TOKEN }),
    });
  });

  after(async () => {
    await gw?.stop();
    await op?.close();
    await origin?.close();
  });

  async function clientCredentials(resource, scope) {
    const r = await fetch(`${op.issuer}${op.paths.token}`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from('ci-job:ci-secret').toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope }),
    });
    const body = await r.json();
    assert.equal(r.status, 200, JSON.stringify(body));
    return body.access_token;
  }

  const call = (path, token, headers = {}) => fetch(url(path), {
    headers: { accept: 'application/json', authorization: `Bearer ${token}`, ...headers },
    redirect: 'manual',
  });

  test('a client-credentials token reaches the origin as a machine principal with a verifiable assertion', async () => {
    const token = await clientCredentials(API, 'api read');
    const r = await call('/reports?x=1', token, { 'x-portcullis-principal': 'user' });
    assert.equal(r.status, 200, await r.clone().text());
    assert.equal(r.headers.get('set-cookie'), null, 'a bearer principal gets no session cookie');
    const seen = await r.json();
    assert.equal(seen.path, '/reports');
    assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/ci-job`);
    assert.equal(seen.headers['x-portcullis-principal'], 'machine');
    assert.equal(seen.headers['x-portcullis-scopes'], 'api,read');
    const jwks = await (await fetch(url('/.well-known/portcullis/jwks.json'))).json();
    const { payload } = await jwtVerify(seen.headers['x-portcullis-assertion'], createLocalJWKSet(jwks), {
      issuer: 'https://gateway.test', audience: 'acme',
    });
    assert.equal(payload.principal, 'machine');
    assert.equal(payload.client_id, 'ci-job');
    assert.equal(payload.scope, 'api read');
    assert.equal(payload.idp, 'corp');
    await waitForEvent(gw, (e) => e.event === 'bearer_accepted' && e.client_id === 'ci-job');
  });

  test('a forged token (signed by another key under the issuer\'s kid) is refused with invalid_token', async () => {
    const token = await clientCredentials(API, 'api');
    const [h, p] = token.split('.');
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const signature = crypto.sign('sha256', Buffer.from(`${h}.${p}`), privateKey).toString('base64url');
    const before = origin.requests.length;
    const r = await call('/reports', `${h}.${p}.${signature}`);
    assert.equal(r.status, 401);
    const challenge = r.headers.get('www-authenticate');
    assert.match(challenge, /^Bearer realm="acme", error="invalid_token", error_description="signature invalid"$/);
    assert.equal((await r.json()).error, 'invalid_token');
    assert.equal(origin.requests.length, before, 'nothing reached the origin');
    // A token whose payload was altered fails the same way.
    const claims = JSON.parse(Buffer.from(p, 'base64url'));
    claims.scope = 'api read write';
    const altered = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${token.split('.')[2]}`;
    assert.equal((await call('/admin', altered)).status, 401);
  });

  test('an expired token is refused with invalid_token', async () => {
    const token = await clientCredentials('https://api.acme.test/short', 'api');
    await new Promise((resolve) => { setTimeout(resolve, 2100); });
    const r = await call('/reports', token);
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate'), /error="invalid_token", error_description="token expired"/);
    await waitForEvent(gw, (e) => e.event === 'refusal' && /expired/.test(e.cause ?? ''));
  });

  test('a token for another resource, an ID-token-shaped JWT or an unknown issuer is refused', async () => {
    const foreign = await clientCredentials(OTHER, 'api');
    let r = await call('/reports', foreign);
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate'), /error_description="audience not accepted"/);
    r = await call('/reports', 'eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2V2aWwudGVzdCJ9.');
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate'), /error_description="issuer not accepted"/);
  });

  test('scopes: the issuer\'s required scope and a policy rule\'s are enforced with insufficient_scope', async () => {
    const readOnly = await clientCredentials(API, 'read');
    let r = await call('/reports', readOnly);
    assert.equal(r.status, 403);
    assert.match(r.headers.get('www-authenticate'), /error="insufficient_scope".*scope="api"/);
    const api = await clientCredentials(API, 'api');
    r = await call('/admin/x', api);
    assert.equal(r.status, 403);
    assert.match(r.headers.get('www-authenticate'), /error="insufficient_scope", scope="write"/);
    r = await call('/people/x', api);
    assert.equal(r.status, 403, 'a user-only rule refuses a machine');
    const writer = await clientCredentials(API, 'api write');
    r = await call('/admin/x', writer);
    assert.equal(r.status, 200);
  });

  test('a bearer token opens a WebSocket to the origin', async () => {
    const token = await clientCredentials(API, 'api');
    const ws = await connect(url('/ws'), { authorization: `Bearer ${token}` });
    assert.equal(ws.status, 101);
    ws.send('ping');
    assert.equal((await ws.receive()).payload.toString('utf8'), 'echo:ping');
    assert.equal(origin.upgrades.at(-1).headers['x-portcullis-principal'], 'machine');
    ws.close();
    const refused = await connect(url('/ws'), { authorization: 'Bearer not-a-token', accept: 'application/json' });
    assert.equal(refused.status, 401);
  });

  test('a service token made through the admin API passes as CF-Access-Client-Id/-Secret; revoked, it does not', async () => {
    const admin = (path, body) => fetch(url(`/_portcullis/admin/${path}`), {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: 'application/json', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const made = await (await admin('service-tokens', { name: 'nightly', scopes: ['write'] })).json();
    const creds = { 'cf-access-client-id': made.client_id, 'cf-access-client-secret': made.client_secret };
    let r = await fetch(url('/admin/x'), { headers: { accept: 'application/json', ...creds } });
    assert.equal(r.status, 200, await r.clone().text());
    const seen = await r.json();
    assert.equal(seen.headers['x-portcullis-user'], `service-token/${made.client_id}`);
    assert.equal(seen.headers['cf-access-client-secret'], undefined, 'the secret never reaches the origin');
    r = await fetch(url('/admin/x'), { headers: { accept: 'application/json', ...creds, 'cf-access-client-secret': 'wrong' } });
    assert.equal(r.status, 401);
    assert.equal((await admin('service-tokens/revoke', { client_id: made.client_id })).status, 200);
    r = await fetch(url('/admin/x'), { headers: { accept: 'application/json', ...creds } });
    assert.equal(r.status, 401);
  });

  test('without a token an API client is offered the Bearer scheme', async () => {
    const r = await fetch(url('/reports'), { headers: { accept: 'application/json' } });
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate'), /Bearer realm="acme"/);
  });
});
