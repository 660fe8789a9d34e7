// Hardening (issue #9), end to end in workerd: KV failing and hanging in every flow (through
// the KV port's test switch), the IdP down, slow, garbled, oversized or on a wrong clock, the
// origin down or slow, and abuse of the gateway's own routes (sizes, methods, CORS, floods).
// Each refusal is checked for its status, its JSON code and the log line naming the cause.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp, parseForms, rawRequest, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider, pageReference, waitForEvent } from './lib/fixtures.mjs';
import { startOpProcess } from './lib/processes.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const SESSION = '__Host-portcullis_session';
const PENDING = '__Host-portcullis_pending';
const ADMIN_TOKEN = 'e2e-admin-token-hardening-0123456789-abcdef';
const JSON_HEADERS = { accept: 'application/json' };
const KV_TIMEOUT_MS = 400;
const CACHE_TTL_S = 3;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('hardening: failures and abuse fail closed', () => {
  let op;
  let origin;
  let gw;
  let port;
  let closedPort;
  let skewAhead;
  let skewBehind;
  const site = (p) => `http://localhost:${port}${p}`;
  const other = (p) => `http://127.0.0.1:${port}${p}`;

  async function setFaults(state) {
    const r = await rawRequest(site('/_portcullis/_test/faults'), {
      method: 'POST', headers: new Headers({ 'content-type': 'application/json' }), body: JSON.stringify(state),
    });
    assert.equal(r.status, 200, r.body.toString());
    return JSON.parse(r.body.toString());
  }
  const clearFaults = () => setFaults({});

  /** The refusal's log line, found by the reference on the page or in the JSON. */
  async function lineFor(r) {
    const reference = r.headers.get('content-type')?.includes('json') ? r.json().reference : pageReference(r.text);
    assert.ok(reference, `a reference in ${r.text.slice(0, 300)}`);
    return waitForEvent(gw, (l) => l.reference === reference);
  }

  async function signIn(provider = 'rs', rd = '/home') {
    const client = new Client();
    const { final } = await loginViaOp(client, site(`/_portcullis/login?provider=${provider}&rd=${rd}`));
    assert.equal(final.status, 200, final.text);
    return client;
  }

  before(async () => {
    port = await freePort();
    closedPort = await freePort();
    origin = await startOrigin();
    const client = (id) => ({
      client_id: id, client_secret: `${id}-secret`,
      redirect_uris: [site('/_portcullis/oidc/callback')],
      post_logout_redirect_uris: [site('/_portcullis/logged-out')],
    });
    op = await startOp({ clients: [client('gw')] });
    const skewArgs = ['--client-id', 'gw-skew', '--client-secret', 'gw-skew-secret',
      '--redirect-uri', site('/_portcullis/oidc/callback')];
    // An IdP 10 minutes ahead (iat in the future) and one 400 s behind whose ID tokens
    // live 120 s (exp 280 s in the past); the allowed skew is the default 60 s.
    [skewAhead, skewBehind] = await Promise.all([
      startOpProcess(['--clock-skew', '600', ...skewArgs]),
      startOpProcess(['--clock-skew', '-400', '--id-token-ttl', '120', ...skewArgs]),
    ]);
    const same = (name, extra = {}) => oidcProvider(name, op, 'gw', { client_secret: 'SECRET_GW', ...extra });
    const providers = [same('rs', { rp_logout: false })];
    for (const kind of ['d', 'j']) {
      for (const mode of ['500', 'hang', 'garbage', 'huge']) providers.push(same(`${kind}${mode}`));
    }
    providers.push(oidcProvider('dead', { issuer: `http://127.0.0.1:${closedPort}` }, 'gw', { client_secret: 'SECRET_GW' }));
    for (const [name, peer] of [['ahead', skewAhead], ['behind', skewBehind]]) {
      providers.push(oidcProvider(name, peer, 'gw-skew', { client_secret: 'SECRET_SKEW' }));
    }
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({
          admin_token: 'ADMIN_TOKEN',
          fetch_timeout_ms: 1500,
          kv_timeout_ms: KV_TIMEOUT_MS,
          session_cache_ttl: CACHE_TTL_S,
          login_rate_limit: { burst: 30, per_minute: 120 },
        }),
        tenants: [
          {
            id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
            public_paths: [{ path: '/slow', match: 'exact' }],
            providers,
          },
          {
            id: 'down', name: 'Down', hosts: ['127.0.0.1'], origin: `http://127.0.0.1:${closedPort}`,
            public_paths: [{ path: '/', match: 'prefix' }],
            providers: [same('rs')],
          },
        ],
      },
      secrets: gatewaySecrets({
        SECRET_GW: 'gw-secret', SECRET_SKEW: 'gw-skew-secret', ADMIN_TOKEN, PORTCULLIS_TEST_FAULTS: '1',
      }),
    });
  });

  after(async () => {
    await gw?.stop();
    await op?.close();
    await origin?.close();
    await skewAhead?.close();
    await skewBehind?.close();
  });

  test('the fault switch is announced loudly and reports its state', async () => {
    await gw.waitForLog(/test_faults_enabled.*KV FAULT INJECTION IS ENABLED/);
    const state = await setFaults({ kv: { put: 'fail' } });
    assert.deepEqual(state, { kv: { get: 'ok', put: 'fail', delete: 'ok', list: 'ok' }, kv_stale_ms: 0 });
    const now = await new Client().get(site('/_portcullis/_test/faults'));
    assert.deepEqual(now.json(), state);
    assert.equal((await new Client().post(site('/_portcullis/_test/faults'), { kv: { get: 'slow' } })).status, 400);
    assert.deepEqual(await clearFaults(), { kv: { get: 'ok', put: 'ok', delete: 'ok', list: 'ok' }, kv_stale_ms: 0 });
  });

  test('KV put failing or hanging at login start: 503, no pending cookie, cause logged', async () => {
    await signIn(); // discovery cached; a start then only writes state
    try {
      for (const [mode, cause] of [['fail', /put: injected failure/], ['timeout', new RegExp(`put timed out after ${KV_TIMEOUT_MS} ms`)]]) {
        await setFaults({ kv: { put: mode } });
        const client = new Client();
        const page = await client.get(site('/_portcullis/login?provider=rs&rd=/x'), { headers: NAVIGATION_HEADERS });
        assert.equal(page.status, 503);
        assert.match(page.text, /cannot reach its storage/);
        assert.equal(client.cookies('localhost')[PENDING], undefined, 'no pending-login cookie');
        const line = await lineFor(page);
        assert.equal(line.code, 'storage_unavailable');
        assert.match(line.cause, cause);
        const api = await new Client().get(site('/_portcullis/login?provider=rs'), { headers: JSON_HEADERS });
        assert.equal(api.status, 503);
        assert.equal(api.json().error, 'storage_unavailable');
      }
      // A start reads nothing from KV once discovery is cached: read faults do not stop it.
      await setFaults({ kv: { get: 'fail' } });
      assert.equal((await new Client().get(site('/_portcullis/login?provider=rs'))).status, 302);
    } finally {
      await clearFaults();
    }
  });

  // The callback reads the state, claims it at the coordination object (bound by default),
  // deletes it from KV, then writes a "used" marker. A failure at the read leaves the state
  // for a retry of the same response; a failure after the claim has spent it (the retry is
  // a replay). Either way no session exists until a callback fully succeeds.
  // After a failed delete the KV state is still there but claimed (a replay); after a
  // failed marker write it is gone from KV (expired, as far as KV can tell).
  for (const [op_, mode, retry, code] of [
    ['get', 'fail', 'completes'], ['get', 'timeout', 'completes'],
    ['delete', 'fail', 'refused', 'state_replayed'], ['delete', 'timeout', 'refused', 'state_replayed'],
    ['put', 'fail', 'refused', 'state_expired'], ['put', 'timeout', 'refused', 'state_expired'],
  ]) {
    test(`KV ${op_} ${mode} at the callback: 503, no session; a retry ${retry}`, async () => {
      const client = new Client();
      const start = await client.get(site('/_portcullis/login?provider=rs&rd=/after-fault'), { headers: NAVIGATION_HEADERS });
      assert.equal(start.status, 302);
      let callback;
      try {
        await setFaults({ kv: { [op_]: mode } });
        const { final, chain } = await loginViaOp(client, start.headers.get('location'));
        callback = chain.find((u) => u.includes('/_portcullis/oidc/callback'));
        assert.ok(callback, 'the OP redirected back to the callback');
        assert.equal(final.status, 503, final.text);
        assert.equal(client.cookies('localhost')[SESSION], undefined, 'no session cookie');
        const line = await lineFor(final);
        assert.equal(line.code, 'storage_unavailable');
        assert.match(line.cause, mode === 'fail' ? new RegExp(`${op_}: injected failure`) : new RegExp(`${op_} timed out`));
      } finally {
        await clearFaults();
      }
      const again = await client.get(callback, { headers: NAVIGATION_HEADERS });
      if (retry === 'completes') {
        assert.equal(again.status, 302, again.text);
        assert.equal(again.headers.get('location'), '/after-fault');
        assert.ok(client.cookies('localhost')[SESSION]);
      } else {
        assert.equal(again.status, 400);
        assert.equal((await lineFor(again)).code, code);
        assert.equal(client.cookies('localhost')[SESSION], undefined);
      }
    });
  }

  test('a signed-in user is not logged out by KV read errors; past the cache it is 503, not a logout', async () => {
    const client = await signIn();
    try {
      // Within session_cache_ttl the isolate does not read KV.
      await setFaults({ kv: { get: 'fail' } });
      assert.equal((await client.get(site('/in-cache'))).status, 200);
      await sleep(CACHE_TTL_S * 1000 + 300);
      for (const mode of ['fail', 'timeout']) {
        await setFaults({ kv: { get: mode } });
        const page = await client.get(site('/cache-miss'), { headers: NAVIGATION_HEADERS });
        assert.equal(page.status, 503, 'not a redirect to the login page');
        assert.deepEqual(page.setCookies ?? [], [], 'the session cookie is kept');
        assert.match((await lineFor(page)).cause, mode === 'fail' ? /get: injected failure/ : /get timed out/);
        const api = await client.get(site('/api/cache-miss'), { headers: JSON_HEADERS });
        assert.equal(api.status, 503);
        assert.equal(api.json().error, 'storage_unavailable');
      }
    } finally {
      await clearFaults();
    }
    assert.equal((await client.get(site('/after'))).status, 200, 'the same session works again');
  });

  test('logout with KV delete failing or hanging: 503, the session stays valid, logout works after', async () => {
    const client = await signIn();
    const form = parseForms((await client.get(site('/_portcullis/logout'), { headers: NAVIGATION_HEADERS })).text)[0];
    try {
      for (const mode of ['fail', 'timeout']) {
        await setFaults({ kv: { delete: mode } });
        const r = await client.post(site('/_portcullis/logout'), new URLSearchParams({ csrf: form.fields.csrf }), { headers: NAVIGATION_HEADERS });
        assert.equal(r.status, 503);
        assert.match((await lineFor(r)).cause, /delete/);
        assert.ok(client.cookies('localhost')[SESSION], 'the cookie is not cleared while the session lives');
      }
    } finally {
      await clearFaults();
    }
    assert.equal((await client.get(site('/still-in'))).status, 200);
    const out = await client.post(site('/_portcullis/logout'), new URLSearchParams({ csrf: form.fields.csrf }), { headers: NAVIGATION_HEADERS });
    assert.equal(out.status, 302);
    assert.equal((await client.get(site('/gone'), { headers: JSON_HEADERS })).status, 401);
  });

  test('admin revoke with KV failing or hanging: 503 JSON, nothing half done, revoke works after', async () => {
    const client = await signIn('rs', '/admin-target');
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}`, ...JSON_HEADERS };
    const me = (await client.get(site('/_portcullis/me'), { headers: JSON_HEADERS })).json();
    const list = await new Client().get(site(`/_portcullis/admin/sessions?user_id=${encodeURIComponent(me.user_id)}`), { headers: auth });
    assert.equal(list.status, 200);
    const hash = list.json().sessions.find((s) => s.session.startsWith(me.session)).session;
    try {
      for (const fault of [{ get: 'fail' }, { get: 'timeout' }, { delete: 'fail' }, { delete: 'timeout' }]) {
        await setFaults({ kv: fault });
        const r = await new Client().post(site('/_portcullis/admin/sessions/revoke'), { session: hash }, { headers: auth });
        assert.equal(r.status, 503, JSON.stringify(fault));
        assert.equal(r.json().error, 'storage_unavailable');
        assert.match((await lineFor(r)).cause, new RegExp(Object.keys(fault)[0]));
      }
    } finally {
      await clearFaults();
    }
    assert.equal((await client.get(site('/still-in'))).status, 200);
    const ok = await new Client().post(site('/_portcullis/admin/sessions/revoke'), { session: hash }, { headers: auth });
    assert.equal(ok.status, 200);
    assert.equal((await client.get(site('/revoked'), { headers: JSON_HEADERS })).status, 401);
  });

  const IDP_CAUSES = { 500: /answered 500/, hang: /timed out/, garbage: /JSON|expected|invalid|parse|not/i, huge: /too large/ };

  test('discovery down, slow, garbled, huge or refused: 502, cause logged, then serving again', async () => {
    for (const mode of ['500', 'hang', 'garbage', 'huge']) {
      op.setFault('discovery', mode);
      try {
        const page = await new Client().get(site(`/_portcullis/login?provider=d${mode}`), { headers: NAVIGATION_HEADERS });
        assert.equal(page.status, 502, mode);
        assert.match(page.text, /could not be reached or gave an unusable answer/);
        const line = await lineFor(page);
        assert.equal(line.code, 'idp_unavailable');
        assert.match(line.cause, IDP_CAUSES[mode]);
      } finally {
        op.setFault('discovery', 'ok');
      }
      assert.equal((await new Client().get(site(`/_portcullis/login?provider=d${mode}`))).status, 302, `${mode}: serving again`);
    }
    const refused = await new Client().get(site('/_portcullis/login?provider=dead'), { headers: JSON_HEADERS });
    assert.equal(refused.status, 502);
    assert.equal(refused.json().error, 'idp_unavailable');
    assert.match((await lineFor(refused)).cause, /unreachable/);
  });

  test('JWKS down, slow, garbled or huge: 502 at the callback, no session', async () => {
    for (const mode of ['500', 'hang', 'garbage', 'huge']) {
      const client = new Client();
      op.setFault('jwks', mode);
      try {
        const { final } = await loginViaOp(client, site(`/_portcullis/login?provider=j${mode}&rd=/`));
        assert.equal(final.status, 502, mode);
        assert.equal(client.cookies('localhost')[SESSION], undefined);
        const line = await lineFor(final);
        assert.equal(line.code, 'idp_unavailable');
        assert.match(line.cause, new RegExp(`JWKS: .*(?:${IDP_CAUSES[mode].source})`, 'i'));
      } finally {
        op.setFault('jwks', 'ok');
      }
    }
    await signIn('j500');
  });

  test('token endpoint down, slow, garbled or huge: refused, no session', async () => {
    const expected = { 500: [502, 'idp_unavailable'], hang: [502, 'idp_unavailable'], garbage: [400, 'code_rejected'], huge: [502, 'idp_unavailable'] };
    for (const mode of ['500', 'hang', 'garbage', 'huge']) {
      const client = new Client();
      op.setFault('token', mode);
      try {
        const { final } = await loginViaOp(client, site('/_portcullis/login?provider=rs&rd=/'));
        assert.equal(final.status, expected[mode][0], mode);
        assert.equal(client.cookies('localhost')[SESSION], undefined);
        const line = await lineFor(final);
        assert.equal(line.code, expected[mode][1]);
        assert.match(line.cause, IDP_CAUSES[mode]);
      } finally {
        op.setFault('token', 'ok');
      }
    }
    await signIn();
  });

  test('an IdP clock beyond the allowed skew: iat in the future and exp in the past are refused', async () => {
    for (const [name, cause] of [['ahead', /iat|future/i], ['behind', /expired|exp/i]]) {
      const client = new Client();
      const { final } = await loginViaOp(client, site(`/_portcullis/login?provider=${name}&rd=/`));
      assert.equal(final.status, 401, `${name}: ${final.text.slice(0, 200)}`);
      assert.match(final.text, /outside its validity period; a clock may be wrong/);
      assert.equal(client.cookies('localhost')[SESSION], undefined);
      const line = await lineFor(final);
      assert.equal(line.code, 'token_time');
      assert.match(line.cause, cause);
    }
  });

  test('origin down: 502 page naming the cause; origin slow: answered late, others served meanwhile', async () => {
    const page = await new Client().get(other('/page'), { headers: NAVIGATION_HEADERS });
    assert.equal(page.status, 502);
    assert.match(page.text, /did not answer/);
    const line = await lineFor(page);
    assert.equal(line.code, 'origin_unreachable');
    const api = await new Client().get(other('/api'), { headers: JSON_HEADERS });
    assert.equal(api.status, 502);
    assert.equal(api.json().error, 'origin_unreachable');

    const t0 = Date.now();
    const slow = new Client().get(site('/slow?ms=2500'));
    await sleep(200);
    const health = await new Client().get(site('/_portcullis/health'));
    assert.equal(health.status, 200);
    assert.ok(Date.now() - t0 < 2000, 'the gateway answers while the origin is slow');
    const r = await slow;
    assert.equal(r.status, 200);
    assert.ok(Date.now() - t0 >= 2500);
  });

  test('oversized headers, cookies, URLs and bodies are refused with 431, 414 and 413', async () => {
    const c = new Client();
    for (const headers of [{ 'x-pad': 'a'.repeat(40_000) }, { cookie: `big=${'b'.repeat(40_000)}` }]) {
      const r = await c.get(site('/_portcullis/login'), { headers });
      assert.equal(r.status, 431);
      assert.match(r.text, /Request header fields too large/, 'refused by the gateway itself');
    }
    assert.equal((await c.get(site(`/_portcullis/login?rd=${'q'.repeat(9000)}`))).status, 414);
    assert.equal((await c.get(site(`/anything?${'q'.repeat(9000)}`))).status, 414);
    const big = await c.post(site('/_portcullis/logout'), new URLSearchParams({ csrf: 'x'.repeat(70_000) }));
    assert.equal(big.status, 413);
    assert.equal((await c.get(site('/_portcullis/health'))).status, 200, 'still serving');
  });

  test('methods: TRACE and unknown methods get 405 with Allow, HEAD is GET without a body', async () => {
    const routes = {
      '/_portcullis/login': 'GET, HEAD, OPTIONS',
      '/_portcullis/oidc/callback': 'GET, OPTIONS',
      '/_portcullis/logout': 'GET, HEAD, POST, OPTIONS',
      '/_portcullis/health': 'GET, HEAD, OPTIONS',
      '/_portcullis/saml/acs': 'POST, OPTIONS',
    };
    for (const [path, allow] of Object.entries(routes)) {
      for (const method of ['TRACE', 'PUT', 'DELETE']) {
        const r = await rawRequest(site(path), { method, headers: new Headers(JSON_HEADERS) });
        assert.equal(r.status, 405, `${method} ${path}`);
        assert.equal(r.headers.get('allow'), allow, `${method} ${path}`);
      }
    }
    const trace = await rawRequest(site('/_portcullis/admin/sessions'), { method: 'TRACE', headers: new Headers(JSON_HEADERS) });
    assert.ok(trace.status >= 400 && trace.status < 500, `admin TRACE: ${trace.status}`);
    for (const path of ['/_portcullis/login', '/_portcullis/health', '/_portcullis/logged-out', '/.well-known/portcullis/jwks.json']) {
      const get = await rawRequest(site(path));
      const head = await rawRequest(site(path), { method: 'HEAD' });
      assert.equal(head.status, get.status, path);
      assert.equal(head.body.length, 0, path);
      assert.equal(head.headers.get('content-type'), get.headers.get('content-type'), path);
    }
    // A HEAD must not spend a sign-in response.
    const head = await rawRequest(site('/_portcullis/oidc/callback?state=x&code=y'), { method: 'HEAD' });
    assert.equal(head.status, 405);
    assert.equal(head.headers.get('allow'), 'GET, OPTIONS');
  });

  test('CORS: gateway routes grant nothing, even to a preflight', async () => {
    const evil = 'https://evil.example';
    for (const path of ['/_portcullis/me', '/_portcullis/login', '/_portcullis/logout', '/_portcullis/admin/sessions', '/_portcullis/health']) {
      const pre = await rawRequest(site(path), {
        method: 'OPTIONS',
        headers: new Headers({ origin: evil, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' }),
      });
      const get = await rawRequest(site(path), { headers: new Headers({ origin: evil, authorization: `Bearer ${ADMIN_TOKEN}` }) });
      for (const r of [pre, get]) {
        const granted = [...r.headers.keys()].filter((h) => h.startsWith('access-control-'));
        assert.deepEqual(granted, [], `${path}: ${granted}`);
      }
      assert.ok(pre.status === 204 || pre.status >= 400, `${path} preflight: ${pre.status}`);
    }
  });

  test('login-start flood: one client gets 429 with Retry-After, others are unaffected', async () => {
    const flood = (ip) => new Client().get(site('/_portcullis/login?provider=rs'), { headers: { ...JSON_HEADERS, 'cf-connecting-ip': ip } });
    const statuses = [];
    let limited;
    for (let i = 0; i < 40; i += 1) {
      const r = await flood('203.0.113.7');
      statuses.push(r.status);
      if (r.status === 429) limited = r;
    }
    assert.ok(statuses.slice(0, 30).every((s) => s === 302), statuses.join());
    assert.ok(limited, `a 429 among ${statuses.join()}`);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal(limited.json().error, 'rate_limited');
    assert.match((await lineFor(limited)).cause, /too many sign-in starts/);
    assert.equal((await flood('198.51.100.4')).status, 302, 'another client is not limited');
  });
});
