// Time-based refusals in workerd: an expired pre-login state and an idle session. Both use
// the shortest lifetimes KV allows (60 s), so this file waits once, for about a minute.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Client, loginViaOp, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider, pageReference, waitForEvent } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

/**
 * Entries stored by the coordination Durable Object, read from wrangler's local SQLite
 * files (the object's storage) with Python's sqlite3: [key, value] pairs.
 */
function coordinatorEntries(stateDir) {
  const dir = path.join(stateDir, 'v3', 'do', 'portcullis-Coordinator');
  const script = `
import glob, json, sqlite3, sys
out = []
for f in glob.glob(sys.argv[1] + '/*.sqlite'):
    if f.endswith('/metadata.sqlite'):
        continue
    c = sqlite3.connect('file:' + f + '?mode=ro', uri=True)
    tables = [r[0] for r in c.execute("select name from sqlite_master where type='table'")]
    if '_cf_KV' in tables:
        out += [[k, bytes(v).decode('utf-8', 'replace')] for k, v in c.execute('select key, value from _cf_KV')]
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

let op;
let origin;
let gw;
let port;
const site = (p) => `http://localhost:${port}${p}`;

before(async () => {
  port = await freePort();
  origin = await startOrigin();
  op = await startOp({ clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [`http://localhost:${port}/_portcullis/oidc/callback`] }] });
  gw = await startGateway({
    port,
    config: {
      gateway: gatewaySection({ login_state_ttl: 60, session_cache_ttl: 1 }),
      tenants: [{
        id: 'acme', hosts: ['localhost'], origin: origin.url,
        session: { idle_timeout: 60, absolute_timeout: 3600 },
        providers: [oidcProvider('corp', op, 'gw', { refresh: false })],
      }],
    },
    secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret' }),
  });
});

after(async () => {
  await gw?.stop();
  await op?.close();
  await origin?.close();
});

test('an expired login state and an idle session are refused; the object sweeps expired claims', async () => {
  const signedIn = new Client();
  const { final } = await loginViaOp(signedIn, site('/_portcullis/login?provider=corp&rd=/in'));
  assert.equal(final.status, 200, final.text);
  const slow = new Client();
  const start = await slow.get(site('/_portcullis/login?provider=corp&rd=/late'), { headers: NAVIGATION_HEADERS });
  assert.equal(start.status, 302);
  // The sign-in's state was claimed at the coordination object, for the state's lifetime.
  const claimed = coordinatorEntries(gw.stateDir).filter(([k]) => k.startsWith('state:'));
  assert.equal(claimed.length, 1, JSON.stringify(claimed));

  await new Promise((r) => setTimeout(r, 62_000));

  // The object's alarm swept the expired claim: nothing accumulates.
  assert.deepEqual(coordinatorEntries(gw.stateDir).filter(([k]) => k.startsWith('state:')), []);

  const late = await loginViaOp(slow, start.headers.get('location'));
  assert.equal(late.final.status, 400);
  assert.match(late.final.text, /took too long/);
  const line = await waitForEvent(gw, (l) => l.reference === pageReference(late.final.text));
  assert.equal(line.code, 'state_expired');

  const idle = await signedIn.get(site('/in'), { headers: NAVIGATION_HEADERS });
  assert.equal(idle.status, 302);
  assert.match(idle.headers.get('location'), /reason=expired/);
  const page = await signedIn.get(new URL(idle.headers.get('location'), site('/')).href, { headers: NAVIGATION_HEADERS });
  assert.match(page.text, /Your session has ended/);
});
