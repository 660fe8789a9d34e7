// Policy for requests end to end: deny rules, a country rule driven by the request's edge
// context, machine-only paths, and the admin route that explains a decision. Local workerd
// fills no `request.cf`; with the test switch (PORTCULLIS_TEST_FAULTS=1) the gateway reads a
// JSON `X-Portcullis-Test-Cf` header instead, and a second gateway without the switch shows
// that the header is then ignored.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const ADMIN_TOKEN = 'e2e-admin-token-0123456789-0123456789-abc';
const CF = 'x-portcullis-test-cf';

describe('policy rules on requests: deny, country, principal kind, explain', () => {
  let op;
  let origin;
  let gw;
  let plain;
  let port;
  let plainPort;

  const tenant = (p) => ({
    id: 'acme',
    hosts: ['localhost'],
    origin: origin.url,
    providers: [oidcProvider('corp', op, 'gw')],
    groups: { map: { engineering: ['eng'] } },
    policy: [
      { name: 'embargo', path: '/', match: 'prefix', effect: 'deny', countries: ['KP'] },
      { name: 'machines-only', path: '/api', match: 'prefix', principal: 'machine' },
      { name: 'eng-only', path: '/eng', match: 'prefix', allow_groups: ['eng'] },
      { name: 'home', path: '/home', match: 'exact' },
    ],
    policy_default: p,
  });

  before(async () => {
    [port, plainPort] = [await freePort(), await freePort()];
    origin = await startOrigin();
    op = await startOp({
      clients: [{
        client_id: 'gw', client_secret: 'gw-secret',
        redirect_uris: [port, plainPort].map((p) => `http://localhost:${p}/_portcullis/oidc/callback`),
      }],
    });
    gw = await startGateway({
      port,
      config: { gateway: gatewaySection({ admin_token: 'ADMIN_TOKEN' }), tenants: [tenant('allow')] },
      secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret', ADMIN_TOKEN, PORTCULLIS_TEST_FAULTS: '1' }),
    });
    plain = await startGateway({
      port: plainPort,
      config: { gateway: gatewaySection(), tenants: [tenant('deny')] },
      secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret' }),
    });
  });

  after(async () => {
    await gw?.stop();
    await plain?.stop();
    await op?.close();
    await origin?.close();
  });

  async function signIn(p, login = 'alice') {
    const client = new Client();
    const { final } = await loginViaOp(client, `http://localhost:${p}/_portcullis/login?provider=corp&rd=/home`, { login });
    assert.equal(final.status, 200);
    return client.cookieHeaderFor(`http://localhost:${p}/`);
  }

  test('a deny rule on the request\'s country refuses, naming its rule; other countries pass', async () => {
    const cookie = await signIn(port);
    const get = (path, country) => fetch(`http://localhost:${port}${path}`, {
      headers: { cookie, accept: 'application/json', ...(country ? { [CF]: JSON.stringify({ country }) } : {}) },
    });
    let r = await get('/reports', 'FR');
    assert.equal(r.status, 200);
    const seen = await r.json();
    assert.equal(seen.headers[CF], undefined, 'the test header never reaches the origin');
    r = await get('/reports', 'KP');
    assert.equal(r.status, 403);
    const body = await r.json();
    assert.equal(body.error, 'forbidden');
    assert.match(body.message, /"embargo"/);
    r = await get('/eng/wiki', 'FR');
    assert.equal(r.status, 200, 'alice is in engineering');
    r = await get('/api/x', 'FR');
    assert.equal(r.status, 403, 'a person on a machines-only path');
    assert.match((await r.json()).message, /"machines-only"/);
  });

  test('without the test switch the header is ignored, and policy_default deny refuses unruled paths', async () => {
    const cookie = await signIn(plainPort, 'bob');
    const get = (path, headers = {}) => fetch(`http://localhost:${plainPort}${path}`, {
      headers: { cookie, accept: 'application/json', ...headers },
    });
    // The embargo does not fire: without the switch the header is ignored, and the
    // country the runtime itself reports is not KP.
    let r = await get('/eng/x', { [CF]: JSON.stringify({ country: 'KP' }) });
    assert.equal(r.status, 403);
    assert.match((await r.json()).message, /"eng-only"/, 'bob is refused by eng-only, not by the embargo');
    r = await get('/elsewhere');
    assert.equal(r.status, 403, 'no rule decides: the tenant default denies');
  });

  test('the admin check route explains a decision for any identity and edge context', async () => {
    const ask = async (q) => {
      const r = await fetch(`http://localhost:${port}/_portcullis/admin/policy/check`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: 'application/json', 'content-type': 'application/json' },
        body: JSON.stringify(q),
      });
      assert.equal(r.status, 200, await r.clone().text());
      return r.json();
    };
    const fr = { country: 'FR' };
    let a = await ask({ path: '/eng/x', groups: ['engineering'], edge: fr });
    assert.deepEqual([a.allowed, a.rule, a.name], [true, 2, 'eng-only']);
    a = await ask({ path: '/eng/x', groups: ['engineering'], edge: { country: 'KP' } });
    assert.deepEqual([a.allowed, a.name, a.effect], [false, 'embargo', 'deny']);
    a = await ask({ path: '/api/v1', principal: 'machine', edge: fr });
    assert.deepEqual([a.allowed, a.name], [true, 'machines-only']);
    a = await ask({ path: '/nothing', edge: fr });
    assert.deepEqual([a.allowed, a.rule], [true, null]);
  });
});
