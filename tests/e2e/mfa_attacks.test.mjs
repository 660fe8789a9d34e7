// The second factor against an attacker who knows a user's IdP password but not their
// authenticator, in workerd with oidc-provider: with the coordination Durable Object (the
// default) and with KV alone.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp, parseForms, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { base32Decode, events, gatewaySecrets, gatewaySection, nextStep, oidcProvider, totp } from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

for (const mode of ['object', 'kv']) {
  describe(`second-factor attacks (${mode === 'object' ? 'coordination object' : 'KV alone'})`, () => {
    let op;
    let origin;
    let gw;
    let port;
    const site = (p) => `http://localhost:${port}${p}`;
    let secret;

    before(async () => {
      port = await freePort();
      origin = await startOrigin();
      op = await startOp({ clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [site('/_portcullis/oidc/callback')] }] });
      const extra = mode === 'kv' ? { coordination: 'kv' } : {};
      gw = await startGateway({
        port,
        config: {
          gateway: gatewaySection({ session_cache_ttl: 1, ...extra }),
          tenants: [{
            id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
            mfa: { required: true },
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

    async function signIn(login = 'alice') {
      const client = new Client();
      const { final } = await loginViaOp(client, site('/_portcullis/login?provider=corp&rd=%2Fhome'), { login });
      return { client, page: final };
    }

    function formWith(page, field) {
      const form = parseForms(page.text).find((f) => field in f.fields);
      assert.ok(form, `no form with ${field} on ${page.url}: ${page.status}`);
      return form;
    }

    async function post(client, path, fields) {
      return client.post(site(path), new URLSearchParams(fields), { headers: NAVIGATION_HEADERS });
    }

    const keyOf = (page) => page.text.match(/id="totp-secret">([A-Z2-7 ]+)</)?.[1];

    test('the user enrols at the first sign-in', async () => {
      const { client, page } = await signIn();
      assert.equal(page.url, site('/_portcullis/mfa/enroll?rd=%2Fhome'));
      secret = base32Decode(keyOf(page));
      const csrf = formWith(page, 'code').fields.csrf;
      const done = await post(client, '/_portcullis/mfa/enroll', { csrf, rd: '/home', code: totp(secret) });
      assert.equal(done.status, 200, done.text);
    });

    test('a session waiting for its second factor cannot mint backup codes, however many codes it tries', async () => {
      await nextStep();
      const { client, page } = await signIn();
      assert.equal(page.url, site('/_portcullis/mfa?rd=%2Fhome'));
      const csrf = formWith(page, 'code').fields.csrf;
      for (let i = 0; i < 12; i += 1) {
        const r = await post(client, '/_portcullis/mfa/backup-codes', { csrf, code: String(100000 + i) });
        assert.notEqual(r.status, 200);
      }
      const right = await post(client, '/_portcullis/mfa/backup-codes', { csrf, code: totp(secret) });
      assert.notEqual(right.status, 200, right.text);
      assert.doesNotMatch(right.text, /<li><code>/);
      assert.equal(events(gw, (l) => l.event === 'backup_codes_regenerated').length, 0);
      // The attacker's session still waits; the origin never sees it.
      assert.equal((await client.get(site('/home'), { headers: NAVIGATION_HEADERS })).status, 302);
      assert.ok(!origin.requests.some((r) => r.path === '/home' && r.headers['x-portcullis-user']));
    });

    // KV alone bounds this per isolate (one here); with the object, everywhere.
    test('concurrent wrong codes from many connections: no more than five are checked before the lock', async (t) => {
      const { client, page } = await signIn();
      const csrf = formWith(page, 'code').fields.csrf;
      const before = events(gw, (l) => l.event === 'mfa_failed' && l.outcome === 'wrong code').length;
      const cookie = client.cookieHeaderFor(site('/'));
      const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => {
        const c = new Client();
        return c.post(site('/_portcullis/mfa'), new URLSearchParams({ csrf, rd: '/home', code: String(200000 + i) }), {
          headers: { ...NAVIGATION_HEADERS, cookie },
        });
      }));
      const statuses = burst.map((r) => r.status);
      assert.ok(statuses.every((s) => s === 401 || s === 429), statuses.join(','));
      assert.ok(statuses.includes(429), 'the burst ends in the lock');
      await new Promise((r) => setTimeout(r, 300));
      const checked = events(gw, (l) => l.event === 'mfa_failed' && l.outcome === 'wrong code').length - before;
      t.diagnostic(`${mode}: ${checked} of 20 concurrent codes checked`);
      assert.ok(checked <= 5, `${checked} codes checked before the lock`);
      // A right code while locked is refused, on every route.
      const right = await post(client, '/_portcullis/mfa', { csrf, rd: '/home', code: totp(secret) });
      assert.equal(right.status, 429, right.text);
      assert.equal((await client.get(site('/home'), { headers: NAVIGATION_HEADERS })).status, 302);
    });

    test('an enrolment secret is shown to, and confirmable by, only the session that created it', async () => {
      const a = await signIn('carol');
      const b = await signIn('carol');
      assert.equal(a.page.url, site('/_portcullis/mfa/enroll?rd=%2Fhome'));
      const keyA = keyOf(a.page);
      const keyB = keyOf(b.page);
      assert.ok(keyA && keyB);
      assert.notEqual(keyA, keyB, 'each session has its own secret');
      const codeA = totp(base32Decode(keyA));
      const csrfB = formWith(b.page, 'code').fields.csrf;
      const planted = await post(b.client, '/_portcullis/mfa/enroll', { csrf: csrfB, rd: '/home', code: codeA });
      assert.equal(planted.status, 401);
      const csrfA = formWith(a.page, 'code').fields.csrf;
      const ok = await post(a.client, '/_portcullis/mfa/enroll', { csrf: csrfA, rd: '/home', code: codeA });
      assert.equal(ok.status, 200, ok.text);
      assert.equal((await b.client.get(site('/home'), { headers: NAVIGATION_HEADERS })).status, 302, 'B still waits');
    });
  });
}
