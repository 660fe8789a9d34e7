// The admin API and back-channel logout end to end: an admin signs in through
// oidc-provider (group mapped to `superuser`), manages another user's sessions, refreshes
// the provider's keys after the OP rotated them, and the OP's back-channel logout ends a
// session; the audit listing shows every act with its actor.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp, logoutViaOp, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider, waitForEvent } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const ADMIN_TOKEN = 'e2e-admin-token-0123456789-0123456789-abc';

describe('admin API and back-channel logout', () => {
  let op;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;
  const json = { accept: 'application/json', 'content-type': 'application/json' };

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    op = await startOp({
      clients: [{
        client_id: 'gw', client_secret: 'gw-secret',
        redirect_uris: [site('/_portcullis/oidc/callback')],
        post_logout_redirect_uris: [site('/_portcullis/logged-out')],
        backchannel_logout_uri: site('/_portcullis/oidc/backchannel-logout'),
        backchannel_logout_session_required: true,
      }],
    });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ admin_token: 'ADMIN_TOKEN', session_cache_ttl: 1, audit_kv: true }),
        tenants: [{
          id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
          groups: { roles: { superuser: ['admins'] } },
          providers: [oidcProvider('corp', op, 'gw', { refresh: false, rp_logout: false })],
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

  async function signIn(login) {
    const client = new Client();
    const { final } = await loginViaOp(client, site('/_portcullis/login?provider=corp&rd=/home'), { login });
    assert.equal(final.status, 200, final.text);
    return client;
  }

  const bob = () => encodeURIComponent(`${op.issuer}/bob`);
  let admin;
  let csrf;
  let bob1;
  let bob2;

  test('an admin lists a user\'s two sessions and revokes one', async () => {
    admin = await signIn('alice');
    csrf = (await admin.get(site('/_portcullis/me'), { headers: json })).json().csrf;
    bob1 = await signIn('bob');
    bob2 = await signIn('bob');
    const list = await admin.get(site(`/_portcullis/admin/sessions?user_id=${bob()}`), { headers: json });
    assert.equal(list.status, 200, list.text);
    const sessions = list.json().sessions;
    assert.equal(sessions.length, 2);
    // A cookie-authenticated write without the CSRF token is refused.
    const noCsrf = await admin.post(site('/_portcullis/admin/sessions/revoke'), { session: sessions[0].session }, { headers: json });
    assert.equal(noCsrf.status, 403);
    const revoked = await admin.post(site('/_portcullis/admin/sessions/revoke'), { session: sessions[0].session }, { headers: { ...json, 'x-csrf-token': csrf } });
    assert.equal(revoked.status, 200, revoked.text);
    await new Promise((r) => setTimeout(r, 1100));
    const results = [await bob1.get(site('/home'), { headers: json }), await bob2.get(site('/home'), { headers: json })].map((r) => r.status).sort();
    assert.deepEqual(results, [200, 401], 'one browser refused, the other still works');
  });

  test('a non-admin and a wrong token are refused', async () => {
    const stillIn = (await bob1.get(site('/home'), { headers: json })).status === 200 ? bob1 : bob2;
    assert.equal((await stillIn.get(site(`/_portcullis/admin/sessions?user_id=${bob()}`), { headers: json })).status, 403);
    assert.equal((await new Client().get(site(`/_portcullis/admin/sessions?user_id=${bob()}`), { headers: { ...json, authorization: 'Bearer wrong' } })).status, 401);
    const ok = await new Client().get(site(`/_portcullis/admin/sessions?user_id=${bob()}`), { headers: { ...json, authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(ok.status, 200);
    assert.equal(ok.json().sessions.length, 1);
    const bad = await new Client().post(site('/_portcullis/admin/sessions/revoke'), { nope: 1 }, { headers: { ...json, authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json().message, 'field session (string) is required');
  });

  test('refreshing the JWKS after the OP rotated its keys', async () => {
    const { RS256: kid } = await op.rotateKeys();
    const r = await admin.post(site('/_portcullis/admin/providers/refresh'), { provider: 'corp' }, { headers: { ...json, 'x-csrf-token': csrf } });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json().kids.includes(kid));
    await signIn('carol');
  });

  test('the OP\'s back-channel logout ends the user\'s session', async () => {
    const stillIn = (await bob1.get(site('/home'), { headers: json })).status === 200 ? bob1 : bob2;
    const before = op.backchannel.length;
    await logoutViaOp(stillIn, `${op.issuer}/session/end`);
    const deadline = Date.now() + 5000;
    while (op.backchannel.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(op.backchannel.slice(before).some((d) => d.ok), JSON.stringify(op.backchannel.slice(before)));
    await waitForEvent(gw, (l) => l.event === 'backchannel_logout' && l.outcome === 'ok' && l.revoked >= 1);
    await new Promise((r) => setTimeout(r, 1100));
    const r = await stillIn.get(site('/home'), { headers: NAVIGATION_HEADERS });
    assert.equal(r.status, 302);
  });

  test('the audit listing shows every act with its actor', async () => {
    const day = new Date().toISOString().slice(0, 10);
    const r = await new Client().get(site(`/_portcullis/admin/audit?date=${day}`), { headers: { ...json, authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(r.status, 200, r.text);
    const events = r.json().events;
    const has = (pred) => events.some(pred);
    assert.ok(has((e) => e.event === 'login_success' && e.user === `${op.issuer}/alice`));
    assert.ok(has((e) => e.event === 'session_revoked' && e.actor === `${op.issuer}/alice`), 'revoked by the admin, named');
    assert.ok(has((e) => e.event === 'session_revoked' && e.actor === 'idp:corp'), 'revoked by back-channel logout');
    assert.ok(has((e) => e.event === 'admin_call' && e.actor === 'api-token'));
    assert.ok(has((e) => e.event === 'admin_refused'));
    assert.ok(has((e) => e.event === 'backchannel_logout'));
  });
});
