// The gateway in workerd in front of a real origin: routing, header rules, public paths,
// 302 vs 401, the 502 page, unknown hosts and configuration errors.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, rawRequest, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { events, gatewaySecrets, gatewaySection, pageReference, waitForEvent } from './lib/fixtures.mjs';
import { startOrigin } from './peers/origin.mjs';

describe('foundation', () => {
  let origin;
  let gw;
  let deadPort;

  before(async () => {
    origin = await startOrigin();
    deadPort = await freePort();
    gw = await startGateway({
      config: {
        gateway: gatewaySection(),
        tenants: [
          {
            id: 'site',
            name: 'Site',
            hosts: ['localhost'],
            origin: origin.url,
            public_paths: [
              { path: '/public', match: 'prefix' },
              { path: '/set-cookies', match: 'exact' },
              { path: '/redirect', match: 'exact' },
              { path: '/assets/*.css', match: 'glob', methods: ['GET'] },
            ],
            providers: [],
          },
          { id: 'down', hosts: ['127.0.0.1'], origin: `http://127.0.0.1:${deadPort}`, public_paths: [{ path: '/', match: 'prefix' }] },
        ],
      },
      secrets: gatewaySecrets(),
    });
  });

  after(async () => {
    await gw?.stop();
    await origin?.close();
  });

  const site = (p) => `http://localhost:${gw.port}${p}`;

  test('health answers without touching the origin', async () => {
    const before = origin.requests.length;
    const r = await new Client().get(site('/_portcullis/health'));
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { status: 'ok' });
    assert.equal(origin.requests.length, before);
  });

  test('client-supplied identity headers never reach the origin; hop-by-hop headers are dropped', async () => {
    const headers = new Headers({
      'x-portcullis-user': 'https://idp/admin',
      'x-portcullis-email': 'ceo@example.com',
      'x-portcullis-assertion': 'forged',
      'x-auth-request-user': 'admin',
      'x-auth-request-groups': 'admins',
      // workerd consumes `Connection` before the worker runs, so the headers it lists
      // cannot be told apart from ordinary ones here; the fixed hop-by-hop set is dropped.
      'keep-alive': 'timeout=5',
      'proxy-authorization': 'Basic Zm9vOmJhcg==',
      'proxy-connection': 'keep-alive',
      te: 'trailers',
      'x-forwarded-for': '6.6.6.6',
      'x-kept': 'yes',
      cookie: '__Host-portcullis_session=v1.c1.abc.def; app=1; __Host-portcullis_pending=x',
    });
    const r = await rawRequest(site('/public/echo?x=1&x=2'), { headers });
    assert.equal(r.status, 200);
    const seen = JSON.parse(r.body.toString());
    for (const h of ['x-portcullis-user', 'x-portcullis-email', 'x-portcullis-assertion', 'x-auth-request-user',
      'x-auth-request-groups', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te']) {
      assert.equal(seen.headers[h], undefined, `${h} must not reach the origin`);
    }
    assert.equal(seen.headers['x-kept'], 'yes');
    assert.equal(seen.headers.cookie, 'app=1', "the gateway's cookies are removed, the site's kept");
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-forwarded-host'], `localhost:${gw.port}`);
    assert.notEqual(seen.headers['x-forwarded-for'], '6.6.6.6', 'a client-supplied X-Forwarded-For is replaced');
    assert.equal(seen.path, '/public/echo');
    assert.deepEqual(seen.query, { x: ['1', '2'] });
  });

  test('method, body and status pass through; several Set-Cookie survive; redirects are not followed', async () => {
    const c = new Client();
    const posted = await c.post(site('/public/form'), 'a=1&b=two', { headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    const seen = posted.json();
    assert.equal(seen.method, 'POST');
    assert.equal(seen.body, 'a=1&b=two');
    const cookies = await c.get(site('/set-cookies'));
    assert.deepEqual(cookies.setCookies.map((s) => s.split(';')[0]), ['a=1', 'b=2']);
    const redirect = await c.get(site('/redirect'));
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.get('location'), '/elsewhere');
  });

  test('public glob paths are per method', async () => {
    const c = new Client();
    assert.equal((await c.get(site('/assets/site.css'))).status, 200);
    const post = await c.post(site('/assets/site.css'), 'x', { headers: { accept: 'application/json' } });
    assert.equal(post.status, 401);
  });

  test('a browser without a session is redirected to the login page; an API client gets 401', async () => {
    const c = new Client();
    const nav = await c.get(site('/private/page?q=1'), { headers: NAVIGATION_HEADERS });
    assert.equal(nav.status, 302);
    assert.equal(nav.headers.get('location'), '/_portcullis/login?rd=%2Fprivate%2Fpage%3Fq%3D1');
    const apiCall = await c.get(site('/private/api'), { headers: { accept: 'application/json' } });
    assert.equal(apiCall.status, 401);
    assert.match(apiCall.headers.get('www-authenticate'), /^Portcullis realm="site"/);
    assert.equal(apiCall.json().error, 'unauthenticated');
    assert.ok(!origin.requests.some((r) => r.path.startsWith('/private')), 'nothing reached the origin');
  });

  test('an unreachable origin gives a 502 page that says so', async () => {
    const r = await new Client().get(`http://127.0.0.1:${gw.port}/anything`, { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 502);
    assert.match(r.text, /Site unreachable/);
    assert.match(r.text, /did not answer/);
    const ref = pageReference(r.text);
    assert.ok(ref);
    const line = await waitForEvent(gw, (l) => l.reference === ref);
    assert.equal(line.code, 'origin_unreachable');
  });

  test('an unknown host gets a clear 404 page', async () => {
    const r = await rawRequest(`http://127.0.0.1:${gw.port}/`, { headers: new Headers({ host: 'unknown.example', ...NAVIGATION_HEADERS }) });
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), /Unknown site/);
  });

  test('gateway pages carry security headers; unknown gateway routes are 404', async () => {
    const r = await new Client().get(site('/_portcullis/nope'), { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 404);
    const csp = r.headers.get('content-security-policy');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const options = await new Client().request(site('/_portcullis/login'), { method: 'OPTIONS', headers: { origin: 'https://evil.example' } });
    assert.equal(options.headers.get('access-control-allow-origin'), null);
  });
});

describe('configuration errors', () => {
  test('a bad document is refused with the precise field path, and no request is served', async () => {
    const gw = await startGateway({
      config: {
        gateway: gatewaySection(),
        tenants: [{ id: 'site', hosts: ['localhost'], origin: 'ftp://origin.example', providers: [
          { type: 'oidc', name: 'corp', label: 'Corp', issuer: 'http://idp.example', client_id: 'c', client_secret: 'MISSING' },
        ] }],
      },
      secrets: gatewaySecrets(),
    });
    try {
      const health = await new Client().get(`http://localhost:${gw.port}/_portcullis/health`);
      assert.equal(health.status, 503);
      const page = await new Client().get(`http://localhost:${gw.port}/`, { headers: NAVIGATION_HEADERS });
      assert.equal(page.status, 500);
      assert.match(page.text, /misconfigured/);
      assert.doesNotMatch(page.text, /tenants\[0\]/, 'details stay in the log');
      const line = await waitForEvent(gw, (l) => l.event === 'config_invalid');
      assert.deepEqual(line.errors, [
        'tenants[0].origin: not an http(s) URL',
        'tenants[0].providers[0].issuer: not an https URL',
        'tenants[0].providers[0].client_secret: Worker secret MISSING is not set',
      ]);
      assert.equal(events(gw, (l) => l.event === 'config_invalid').length, 1);
    } finally {
      await gw.stop();
    }
  });

  test('a document the deserialiser refuses names the field path too (found from the error position in the Worker)', async () => {
    const gw = await startGateway({
      config: {
        gateway: gatewaySection(),
        tenants: [{ id: 'site', hosts: ['localhost'], origin: 'http://origin.example', session: { idle_timeout: 'soon' }, providers: [
          { type: 'oidc', name: 'corp', label: 'Corp', issuer: 'https://idp.example', client_id: 'c', client_secret: 'MISSING' },
        ] }],
      },
      secrets: gatewaySecrets(),
    });
    try {
      const health = await new Client().get(`http://localhost:${gw.port}/_portcullis/health`);
      assert.equal(health.status, 503);
      const line = await waitForEvent(gw, (l) => l.event === 'config_invalid');
      assert.equal(line.errors.length, 1, JSON.stringify(line.errors));
      assert.match(line.errors[0], /^tenants\[0\]\.session\.idle_timeout: invalid type: string "soon", expected u64 at line 1 column \d+$/);
    } finally {
      await gw.stop();
    }
  });
});
