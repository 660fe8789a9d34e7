// Time-based refusals in workerd: an expired pre-login state and an idle session. Both use
// the shortest lifetimes KV allows (60 s), so this file waits once, for about a minute.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, loginViaOp, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider, pageReference, waitForEvent } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

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

test('an expired login state and an idle session are refused', async () => {
  const signedIn = new Client();
  const { final } = await loginViaOp(signedIn, site('/_portcullis/login?provider=corp&rd=/in'));
  assert.equal(final.status, 200, final.text);
  const slow = new Client();
  const start = await slow.get(site('/_portcullis/login?provider=corp&rd=/late'), { headers: NAVIGATION_HEADERS });
  assert.equal(start.status, 302);

  await new Promise((r) => setTimeout(r, 62_000));

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
