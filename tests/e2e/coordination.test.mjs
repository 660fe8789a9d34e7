// The coordination Durable Object in workerd: what must happen once happens once, even
// when many requests arrive together. wrangler dev runs the object locally (SQLite-backed,
// as on the Free plan), bound as PORTCULLIS_COORDINATOR by wrangler.toml.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { events, gatewaySecrets, gatewaySection, oidcProvider, waitForEvent } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';
import { startSamlIdp } from './peers/saml_idp.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ADMIN_TOKEN = 'e2e-admin-token-coordination-0123456789-abcdef';

/**
 * Signs in, then turns this gateway's KV into "another location" (reads keep returning what
 * they returned first, for 60 s: KV's propagation delay), revokes all of the user's sessions
 * through the admin API and asks again after the session cache bound (1 s).
 */
async function requestAfterRevocation(site, user) {
  const browser = new Client();
  const { final } = await loginViaOp(browser, site('/_portcullis/login?provider=corp&rd=/acct'), { login: user });
  assert.equal(final.status, 200, final.text);
  const faults = await new Client().post(site('/_portcullis/_test/faults'), { kv_stale_ms: 60_000 });
  assert.equal(faults.status, 200, faults.text);
  try {
    const api = { accept: 'application/json' };
    // Past the session cache bound, so this location reads (and keeps returning) the record
    // and the absence of any revocation mark, as a lagging replica would.
    await sleep(1200);
    assert.equal((await browser.get(site('/acct/1'), { headers: api })).status, 200);
    const userId = JSON.parse((await browser.get(site('/_portcullis/me'), { headers: api })).text).user_id;
    const revoked = await new Client().post(site('/_portcullis/admin/sessions/revoke-user'), { user_id: userId }, {
      headers: { ...api, authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(revoked.status, 200, revoked.text);
    await sleep(1200);
    return await browser.get(site('/acct/2'), { headers: api });
  } finally {
    await new Client().post(site('/_portcullis/_test/faults'), {});
  }
}

describe('with the coordination Durable Object', () => {
  let op;
  let idp;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;
  const isCallback = (u) => u.includes('/_portcullis/oidc/callback');

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    idp = await startSamlIdp({ key: 'rsa', sign: 'assertion' });
    // Access tokens live 65 s: with the gateway's 60 s refresh margin, a refresh is due
    // 5 s after sign-in. Refresh tokens rotate on every use (reuse is refused).
    op = await startOp({
      accessTokenTtl: 65,
      clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [`http://localhost:${port}/_portcullis/oidc/callback`] }],
    });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1, admin_token: 'ADMIN_TOKEN' }),
        tenants: [{
          id: 'acme', hosts: ['localhost'], origin: origin.url,
          providers: [
            oidcProvider('corp', op, 'gw'),
            { type: 'saml', name: 'portal', label: 'Portal', idp_entity_id: idp.entityId, idp_sso_url: idp.ssoUrl,
              idp_certificates: [idp.certificateBase64()], allow_idp_initiated: true },
          ],
        }],
      },
      secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret', ADMIN_TOKEN, PORTCULLIS_TEST_FAULTS: '1' }),
    });
  });

  after(async () => {
    await gw?.stop();
    await op?.close();
    await idp?.close();
    await origin?.close();
  });

  test('20 concurrent callbacks with the same state: exactly one signs in', async () => {
    const browser = new Client();
    const { final } = await loginViaOp(browser, site('/_portcullis/login?provider=corp&rd=/in'), { stopAt: isCallback });
    assert.equal(final.status, 0, 'stopped before the callback');
    const tokenCalls = op.counts.token;
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => browser.get(final.stoppedAt, { headers: NAVIGATION_HEADERS })),
    );
    const signedIn = answers.filter((r) => r.status === 302 && r.headers.get('location') === '/in');
    const refused = answers.filter((r) => r.status === 400);
    assert.equal(signedIn.length, 1, answers.map((r) => r.status).join(','));
    assert.equal(refused.length, 19);
    for (const r of refused) assert.match(r.text, /already been used|already used/i);
    // The authorization code was redeemed once: the other 19 never reached the OP.
    assert.equal(op.counts.token - tokenCalls, 1);
    await waitForEvent(gw, (l) => l.code === 'state_replayed');
    const home = await browser.get(site('/in'), { headers: NAVIGATION_HEADERS });
    assert.equal(home.status, 200, 'the one session works');
  });

  test('the same SAML assertion posted 20 times at once: one session', async () => {
    idp.reset();
    const acs = site('/_portcullis/saml/acs?ws=portal');
    const { samlResponse } = await idp.idpInitiated(acs, { spEntityId: site('/_portcullis/saml/metadata?ws=portal'), relayState: '/welcome' });
    const before = events(gw, (l) => l.event === 'login_success').length;
    const answers = await Promise.all(Array.from({ length: 20 }, () => new Client().post(
      acs, new URLSearchParams({ SAMLResponse: samlResponse, RelayState: '/welcome' }), { headers: NAVIGATION_HEADERS },
    )));
    const ok = answers.filter((r) => r.status === 302 && r.headers.get('location') === '/welcome');
    assert.equal(ok.length, 1, answers.map((r) => r.status).join(','));
    assert.equal(answers.filter((r) => r.status === 400).length, 19);
    await sleep(200);
    assert.equal(events(gw, (l) => l.event === 'login_success').length - before, 1);
    assert.ok(events(gw, (l) => l.code === 'saml_replay').length >= 19);
  });

  test('10 concurrent requests needing a refresh: one refresh at the OP, all succeed', async () => {
    const browser = new Client();
    const { final } = await loginViaOp(browser, site('/_portcullis/login?provider=corp&rd=/r'));
    assert.equal(final.status, 200, final.text);
    await sleep(5500);
    const tokenCalls = op.counts.token;
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => browser.get(site(`/r/${i}`), { headers: { accept: 'application/json' } })),
    );
    assert.deepEqual(answers.map((r) => r.status), Array(10).fill(200), answers.map((r) => r.text).join('\n'));
    assert.equal(op.counts.token - tokenCalls, 1, 'one refresh call at the OP');
    const refreshed = await waitForEvent(gw, (l) => l.event === 'session_refreshed');
    assert.ok(refreshed.session);
    assert.equal(events(gw, (l) => l.event === 'session_revoked').length, 0);
    const later = await browser.get(site('/r/after'), { headers: { accept: 'application/json' } });
    assert.equal(later.status, 200, 'the session survives');
  });

  test('a revocation is refused at once where KV still has the session', async () => {
    const r = await requestAfterRevocation(site, 'carol');
    assert.equal(r.status, 401, r.text);
    assert.equal(JSON.parse(r.text).error, 'session_expired');
    await waitForEvent(gw, (l) => l.event === 'session_refused' && l.cause === 'session revoked (coordinator)');
  });
});

describe('without the Durable Object (gateway.coordination = kv)', () => {
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
        gateway: gatewaySection({ coordination: 'kv', session_cache_ttl: 1, admin_token: 'ADMIN_TOKEN' }),
        tenants: [{ id: 'acme', hosts: ['localhost'], origin: origin.url, providers: [oidcProvider('corp', op, 'gw')] }],
      },
      secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret', ADMIN_TOKEN, PORTCULLIS_TEST_FAULTS: '1' }),
    });
  });

  after(async () => {
    await gw?.stop();
    await op?.close();
    await origin?.close();
  });

  test('a revocation reaches a location whose KV lags only when KV converges', async () => {
    // The documented weakness of KV alone, shown: the lagging location still accepts.
    const r = await requestAfterRevocation(site, 'dave');
    assert.equal(r.status, 200, r.text);
  });

  test('sign-in, a replayed callback and sign-out work on KV alone', async () => {
    const browser = new Client();
    const { final, chain } = await loginViaOp(browser, site('/_portcullis/login?provider=corp&rd=/kv'));
    assert.equal(final.status, 200, final.text);
    const callback = chain.find((u) => u.includes('/_portcullis/oidc/callback'));
    const again = await browser.get(callback, { headers: NAVIGATION_HEADERS });
    assert.equal(again.status, 400);
    await waitForEvent(gw, (l) => l.code === 'state_replayed');
    assert.equal((await browser.get(site('/kv'), { headers: NAVIGATION_HEADERS })).status, 200);
  });
});
