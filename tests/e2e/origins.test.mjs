// The gateway in front of real origin servers (nginx, Apache httpd + PHP, Tomcat 10), each
// serving a protected /admin and a public /static/. A corpus of path and header variants
// from the public advisories on proxies and path normalisation must never reach /admin
// without a session, and no identity or forwarding value from the client may reach the
// application. Each corpus entry is first sent to the origins directly, to show which ones
// the origins would serve as /admin (so the test can fail).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, waitForEvent } from './lib/fixtures.mjs';
import { rawHttp, startApache, startNginx, startTomcat } from './peers/servers.mjs';

const PATHS = [
  // Path parameters, stripped by Tomcat, Jetty and Spring.
  '/static/..;/admin', '/static/%2e%2e;/admin', '/static/..%3b/admin', '/static/..%3B/admin', '/static/..;x=1/admin',
  '/static/x/..;/..;/admin', '/static/..;jsessionid=1/admin', '/static/;jsessionid=1/../admin', '/static/x;jsessionid=1',
  '/admin;jsessionid=1', '/admin;x', '/STATIC/..;/admin', '/%73tatic/..;/admin', '/static/%2e%2e%3b/admin',
  // Dot segments, encoded once, twice, overlong, with Unicode look-alikes.
  '/static/../admin', '/static/./../admin', '/static/%2e%2e/admin', '/static/.%2e/admin', '/static/%2E%2E/admin',
  '/static/x/../../admin', '/static/%252e%252e/admin', '/static/..%252fadmin', '/static/%252e%252e%252fadmin',
  '/static/%25252e%25252e/admin', '/static/%c0%ae%c0%ae/admin', '/static/%c0%ae%c0%ae%c0%afadmin',
  '/static/%e0%80%ae%e0%80%ae/admin', '/static/%ef%bc%8e%ef%bc%8e/admin', '/static/%u002e%u002e/admin',
  '/static/..%20/admin', '/static/..%09/admin', '/static/\u00c0\u00ae\u00c0\u00ae/admin',
  // Encoded separators, backslashes, NUL.
  '/static/..%2fadmin', '/static/..%2Fadmin', '/static/%2e%2e%2fadmin', '/static/..%5cadmin', '/static/%5c..%5cadmin',
  '/static\\..\\admin', '/static/..\\admin', '/static/%00/../admin', '/static/..%00/admin', '/static/x%00.css',
  // Empty segments, case, trailing dot or space.
  '//admin', '///admin', '/static//../admin', '/static/..//admin', '/ADMIN', '/Admin/', '/admin.', '/admin%2e',
  '/admin%20', '/admin..', '/admin', '/admin/',
];

const OWNED = [
  'X-Portcullis-User', 'X-Portcullis-Roles', 'X-Portcullis-Groups', 'X-Portcullis-Email', 'X-Auth-Request-Email',
  'X-Auth-Request-User', 'X-Forwarded-For', 'X-Forwarded-Host', 'X-Forwarded-Proto', 'X-Real-IP', 'Forwarded',
  'X-Original-URL', 'X-HTTP-Method-Override', 'Proxy',
];

/** Every spelling of a header name: each separator `-` or `_`, in three cases. */
function spellings(name) {
  const parts = name.split('-');
  const out = new Set();
  for (let mask = 0; mask < 2 ** (parts.length - 1); mask += 1) {
    let n = parts[0];
    for (let i = 1; i < parts.length; i += 1) n += ((mask >> (i - 1)) & 1 ? '_' : '-') + parts[i];
    out.add(n);
    out.add(n.toLowerCase());
    out.add(n.toUpperCase());
  }
  return [...out];
}

describe('real origins behind the gateway', () => {
  const servers = [];
  let gw;

  before(async () => {
    for (const start of [startNginx, startApache, startTomcat]) servers.push(await start());
    gw = await startGateway({
      config: {
        gateway: gatewaySection(),
        tenants: servers.map((s) => ({
          id: s.name,
          name: s.name,
          hosts: [`${s.name}.localhost`],
          origin: s.url,
          public_paths: [{ path: '/static/', match: 'prefix' }],
          providers: [],
        })),
      },
      secrets: gatewaySecrets(),
    });
  });

  after(async () => {
    await gw?.stop();
    for (const s of servers) await s.stop();
  });

  const viaGateway = (s, opts) => rawHttp(gw.port, { host: `${s.name}.localhost`, ...opts });

  test('each origin serves /admin for some of the corpus when asked directly', async () => {
    for (const s of servers) {
      const reached = [];
      for (const target of PATHS) {
        const r = await rawHttp(s.port, { target });
        if (r.body.includes('ADMIN-MARKER') && !/^\/admin\/?$/.test(target)) reached.push(target);
      }
      console.log(`${s.name}: ${reached.length} of ${PATHS.length} corpus paths reach /admin directly: ${reached.join(' ')}`);
      assert.ok(reached.length > 0, `${s.name} served /admin for none of the corpus`);
    }
  });

  test('no path in the corpus reaches /admin through the gateway without a session', async () => {
    for (const s of servers) {
      const statuses = {};
      for (const target of PATHS) {
        const r = await viaGateway(s, { target });
        assert.ok(!r.body.includes('ADMIN-MARKER'), `${s.name} ${target} reached /admin: ${r.status} ${r.body.slice(0, 200)}`);
        // Refused, or (where the runtime's URL parser already resolved a plain `..`) a
        // public page that is really under /static/.
        const served = r.status === 200 && r.body.includes('STATIC-MARKER') && !/uri=\/admin/.test(r.body);
        assert.ok((r.status >= 400 && r.status < 500) || served, `${s.name} ${target}: ${r.status} ${r.body.slice(0, 200)}`);
        statuses[r.status] = [...(statuses[r.status] ?? []), target];
      }
      const summary = Object.entries(statuses).map(([st, ts]) => `${st}: ${ts.length}${st === '400' ? '' : ` (${ts.join(' ')})`}`);
      console.log(`${s.name} through the gateway: ${summary.join('; ')}`);
    }
    // The refusals are explained: JSON with a reference id, and a log line naming the cause.
    const r = await viaGateway(servers[2], { target: '/static/..;/admin' });
    assert.equal(r.status, 400);
    const body = JSON.parse(r.body);
    assert.equal(body.error, 'ambiguous_path');
    assert.match(body.reference, /^[a-z0-9]{8}$/);
    const logged = await waitForEvent(gw, (e) => e.reference === body.reference);
    assert.equal(logged.code, 'ambiguous_path');
    assert.match(logged.cause, /path parameter/);
  });

  test('public paths still reach each origin, exactly as sent', async () => {
    for (const s of servers) {
      for (const target of ['/static/app.js', '/static/a%20b.css?v=1']) {
        const r = await viaGateway(s, { target });
        assert.equal(r.status, 200, `${s.name} ${target}: ${r.body.slice(0, 200)}`);
        assert.ok(r.body.includes(`STATIC-MARKER ${s.name}`), `${s.name} ${target}: ${r.body.slice(0, 200)}`);
      }
    }
  });

  test('no identity or forwarding value from the client reaches the application, in any spelling', async () => {
    for (const name of OWNED) {
      const headers = spellings(name).map((n, i) => [n, `spoof${i}x`]);
      // Sent directly, the application sees it (on every origin here, except that Apache
      // already drops `Proxy` itself).
      const shown = [];
      for (const s of servers) {
        if (/spoof\d+x/.test((await rawHttp(s.port, { target: '/static/x', headers })).body)) shown.push(s.name);
      }
      assert.ok(shown.length >= (name === 'Proxy' ? 2 : 3), `${name}: shown directly by ${shown}`);
      for (const s of servers) {
        const r = await viaGateway(s, { target: '/static/x', headers });
        assert.equal(r.status, 200, `${s.name} ${name}: ${r.body.slice(0, 200)}`);
        assert.ok(r.body.includes('STATIC-MARKER'), `${s.name} ${name}`);
        assert.doesNotMatch(r.body, /spoof\d+x/, `${s.name} ${name}: a client value reached the application:\n${r.body}`);
      }
    }
  });

  test('method overrides are not passed on; unknown methods get 405', async () => {
    for (const s of servers) {
      const headers = [['X-HTTP-Method-Override', 'DELETE'], ['X-HTTP-Method', 'DELETE'], ['X-Method-Override', 'DELETE'], ['X_HTTP_Method_Override', 'DELETE']];
      const r = await viaGateway(s, { method: 'POST', target: '/static/x', headers, body: 'x' });
      assert.equal(r.status, 200, `${s.name}: ${r.body.slice(0, 200)}`);
      assert.match(r.body, /method=POST/);
      assert.doesNotMatch(r.body, /DELETE/, `${s.name}: an override reached the application:\n${r.body}`);
      // The gateway answers 405; the runtime itself refuses some tokens (501) before it.
      for (const method of ['TRACE', 'TRACK', 'PROPFIND', 'FOO', 'DEBUG']) {
        const m = await viaGateway(s, { method, target: '/static/x' });
        assert.ok([405, 501].includes(m.status), `${s.name} ${method}: ${m.status} ${m.body.slice(0, 200)}`);
        assert.ok(!m.body.includes('MARKER'), `${s.name} ${method} was forwarded`);
      }
    }
  });

  test("an origin cannot set the gateway's cookies", async () => {
    const nginx = servers.find((s) => s.name === 'nginx');
    const r = await viaGateway(nginx, { target: '/static/setcookie' });
    assert.equal(r.status, 200);
    const cookies = r.headers.filter(([n]) => n === 'set-cookie').map(([, v]) => v);
    assert.deepEqual(cookies, ['app=1; Path=/']);
    const direct = await rawHttp(nginx.port, { target: '/static/setcookie' });
    assert.equal(direct.headers.filter(([n]) => n === 'set-cookie').length, 2);
  });
});
