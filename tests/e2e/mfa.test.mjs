// The TOTP second factor in workerd with oidc-provider: the test reads the secret from the
// enrolment page and computes the codes itself.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp, parseForms, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import {
  base32Decode, gatewaySecrets, gatewaySection, nextStep, oidcProvider, pageReference, totp, waitForEvent,
} from './lib/fixtures.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const ADMIN_TOKEN = 'e2e-admin-token-0123456789-0123456789-xyz';

describe('TOTP second factor', () => {
  let op;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;
  let secret;
  let backupCodes;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    op = await startOp({ clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [site('/_portcullis/oidc/callback')] }] });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ admin_token: 'ADMIN_TOKEN', session_cache_ttl: 1 }),
        tenants: [{
          id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
          mfa: { required: true, step_up: [{ path: '/admin', match: 'prefix', max_age: 30 }] },
          providers: [oidcProvider('corp', op, 'gw', { refresh: false })],
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

  /** IdP sign-in; stops at the gateway's MFA page. */
  async function signIn(rd = '/home') {
    const client = new Client();
    const { final } = await loginViaOp(client, site(`/_portcullis/login?provider=corp&rd=${encodeURIComponent(rd)}`));
    return { client, page: final };
  }

  async function submit(client, page, values) {
    const form = parseForms(page.text).find((f) => Object.keys(values).every((k) => k in f.fields));
    assert.ok(form, `no form with ${Object.keys(values)} on ${page.url}`);
    const body = new URLSearchParams({ ...form.fields, ...values });
    return client.post(new URL(form.action, page.url).href, body, { headers: NAVIGATION_HEADERS });
  }

  test('forced enrolment: the QR page, a wrong code, then the right one and 10 backup codes', async () => {
    const { client, page } = await signIn('/home');
    assert.equal(page.url, site('/_portcullis/mfa/enroll?rd=%2Fhome'));
    assert.match(page.text, /<svg[^>]*role="img"/);
    const key = page.text.match(/id="totp-secret">([A-Z2-7 ]+)</)[1];
    assert.equal(key.split(' ').length, 8);
    secret = base32Decode(key);
    assert.match(page.text, /otpauth:\/\/totp\/Acme:alice@example.com\?secret=/);
    // The origin never sees the pending session.
    const blocked = await client.get(site('/home'), { headers: NAVIGATION_HEADERS });
    assert.equal(blocked.status, 302);
    assert.ok(!origin.requests.some((r) => r.path === '/home'));
    const wrong = await submit(client, page, { code: '000000' });
    assert.equal(wrong.status, 401);
    const done = await submit(client, page, { code: totp(secret) });
    assert.equal(done.status, 200, done.text);
    backupCodes = [...done.text.matchAll(/<li><code>([a-z2-9-]+)<\/code><\/li>/g)].map((m) => m[1]);
    assert.equal(backupCodes.length, 10);
    const { final } = await client.navigate(site('/home'));
    assert.equal(final.status, 200);
    assert.equal(final.json().headers['x-portcullis-amr'], 'mfa,otp');
    await waitForEvent(gw, (l) => l.event === 'mfa_enrolled');
  });

  test('sign-in with a code; a replayed code and a code from two steps ago are refused', async () => {
    await nextStep();
    const used = totp(secret);
    const a = await signIn('/home');
    assert.equal(a.page.url, site('/_portcullis/mfa?rd=%2Fhome'));
    const ok = await submit(a.client, a.page, { code: used });
    assert.equal(ok.status, 302);
    assert.equal(ok.headers.get('location'), '/home');
    const b = await signIn('/home');
    const replay = await submit(b.client, b.page, { code: used });
    assert.equal(replay.status, 401);
    assert.match(replay.text, /already used/);
    const old = await submit(b.client, b.page, { code: totp(secret, Date.now() / 1000 - 60) });
    assert.equal(old.status, 401);
    assert.match(old.text, /not correct/);
  });

  test('a backup code works once', async () => {
    const a = await signIn('/home');
    assert.equal((await submit(a.client, a.page, { backup_code: backupCodes[0] })).status, 302);
    const b = await signIn('/home');
    const again = await submit(b.client, b.page, { backup_code: backupCodes[0] });
    assert.equal(again.status, 401);
    assert.match(again.text, /not valid/);
    await waitForEvent(gw, (l) => l.event === 'backup_code_used');
  });

  test('step-up on a protected path sends the user through the prompt and back', async () => {
    await nextStep();
    const a = await signIn('/home');
    assert.equal((await submit(a.client, a.page, { code: totp(secret) })).status, 302);
    assert.equal((await a.client.get(site('/admin/panel'))).status, 200, 'fresh MFA: no step-up yet');
    await new Promise((r) => setTimeout(r, 31_000));
    const step = await a.client.get(site('/admin/panel'), { headers: NAVIGATION_HEADERS });
    assert.equal(step.status, 302);
    assert.equal(step.headers.get('location'), '/_portcullis/mfa?rd=%2Fadmin%2Fpanel&reason=step_up');
    const post = await a.client.post(site('/admin/panel'), 'x=1', { headers: { ...NAVIGATION_HEADERS, 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(post.status, 403);
    assert.match(post.text, /repeat the action/);
    const { final: prompt } = await a.client.navigate(site('/admin/panel'));
    assert.match(prompt.text, /recent confirmation/);
    const back = await submit(a.client, prompt, { code: totp(secret) });
    assert.equal(back.headers.get('location'), '/admin/panel');
    assert.equal((await a.client.get(site('/admin/panel'))).status, 200);
  });

  test('five wrong codes lock the second factor, with an audit line', async () => {
    const a = await signIn('/home');
    let page = a.page;
    for (let i = 0; i < 4; i += 1) {
      const r = await submit(a.client, page, { code: '999999' });
      assert.equal(r.status, 401);
      page = { ...r, url: site('/_portcullis/mfa') };
    }
    const locked = await submit(a.client, page, { code: '999999' });
    assert.equal(locked.status, 429);
    assert.match(locked.text, /Too many wrong codes/);
    await waitForEvent(gw, (l) => l.event === 'mfa_locked' && l.user === `${op.issuer}/alice`);
    const stillLocked = await signIn('/home');
    assert.equal(stillLocked.page.status, 429);
    assert.ok(pageReference(stillLocked.page.text));
  });

  test('admin reset: refused without the token, then the user enrols again', async () => {
    const api = new Client();
    const user = encodeURIComponent(`${op.issuer}/alice`);
    assert.equal((await api.get(site(`/_portcullis/admin/mfa?user_id=${user}`), { headers: { accept: 'application/json' } })).status, 401);
    assert.equal((await api.get(site(`/_portcullis/admin/mfa?user_id=${user}`), { headers: { authorization: 'Bearer nope' } })).status, 401);
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
    const status = await api.get(site(`/_portcullis/admin/mfa?user_id=${user}`), { headers: auth });
    assert.equal(status.json().enrolled, true);
    assert.ok(status.json().locked_until > Date.now() / 1000);
    const reset = await api.post(site('/_portcullis/admin/mfa/reset'), { user_id: `${op.issuer}/alice` }, { headers: auth });
    assert.equal(reset.status, 200, reset.text);
    const line = await waitForEvent(gw, (l) => l.event === 'mfa_reset');
    assert.equal(line.actor, 'api-token');
    assert.equal(line.user, `${op.issuer}/alice`);
    const again = await signIn('/home');
    assert.equal(again.page.url, site('/_portcullis/mfa/enroll?rd=%2Fhome'), 'the user must enrol again');
  });
});
