// Passkeys in a real browser: headless Chromium with a virtual authenticator (DevTools
// WebAuthn domain: CTAP2, internal transport, resident keys, user verification) against
// the gateway in workerd, oidc-provider and the echo origin. The gateway's page script
// runs navigator.credentials.create/get under the gateway's CSP; the gateway verifies.
// Covered: registration at the first sign-in, sign-in with the passkey, a counter that
// went backwards, an assertion made on another origin, a removed passkey (coming back to
// registration after the fresh sign-in), new backup codes confirmed with a passkey, and a
// browser without WebAuthn.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { freePort, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider } from './lib/fixtures.mjs';
import { echoJson, headingText, launchBrowser, newPage, shot } from './lib/browser.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

const AUTHENTICATOR = {
  protocol: 'ctap2',
  transport: 'internal',
  hasResidentKey: true,
  hasUserVerification: true,
  isUserVerified: true,
  automaticPresenceSimulation: true,
};

/** A page in a fresh context with a virtual authenticator attached to it. */
async function withAuthenticator(t, fn) {
  const ctx = await newPage(browser);
  const cdp = await ctx.context.newCDPSession(ctx.page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR });
  try {
    return await fn({ ...ctx, cdp, authenticatorId });
  } catch (e) {
    await shot(ctx.page, `failed-${t.name.slice(0, 40)}`).catch(() => {});
    throw e;
  } finally {
    await ctx.context.close();
  }
}

function pathOf(page) {
  const u = new URL(page.url());
  return `${u.pathname}${u.search}`;
}

describe('passkeys in the browser', { timeout: 240_000 }, () => {
  let op;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    op = await startOp({ clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [site('/_portcullis/oidc/callback')] }] });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1 }),
        tenants: [{
          id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
          mfa: { required: true, passkey: { user_verification: 'required' } },
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

  /** OP login (and consent); ends where the gateway sends the browser. */
  async function signInAtOp(page, login) {
    await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/interaction/`));
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', 'any password');
    const loginUrl = page.url();
    await Promise.all([page.waitForURL((u) => u.href !== loginUrl), page.click('button:has-text("Sign-in")')]);
    await page.waitForLoadState('load');
    if (page.url().startsWith(`${op.issuer}/interaction/`)) {
      await Promise.all([
        page.waitForURL((u) => !u.href.startsWith(`${op.issuer}/`)),
        page.click('button:has-text("Continue")'),
      ]);
      await page.waitForLoadState('load');
    }
  }

  async function signIn(page, login, rd = '/home') {
    await page.context().clearCookies();
    await page.goto(site(`/_portcullis/login?provider=corp&rd=${encodeURIComponent(rd)}`));
    await signInAtOp(page, login);
  }

  /** The first sign-in: the enrolment page offers a passkey; create one; backup codes. */
  async function registerFirst(page, login, name) {
    await signIn(page, login);
    assert.equal(pathOf(page), '/_portcullis/mfa/enroll?rd=%2Fhome');
    await Promise.all([page.waitForURL((u) => u.pathname === '/_portcullis/mfa/passkeys/register'), page.click('#use-passkey')]);
    assert.equal(await headingText(page), 'Add a passkey');
    await shot(page, `${login}-register`);
    await page.getByLabel('Name for this passkey').fill(name);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/mfa/passkeys/register')),
      page.getByRole('button', { name: 'Create a passkey' }).click(),
    ]);
    assert.equal(answer.status(), 200, 'the registration is accepted');
    await page.locator('#backup-codes').waitFor();
    const codes = (await page.locator('#backup-codes li').allTextContents()).map((c) => c.trim());
    assert.equal(codes.length, 10);
    await page.getByLabel('I have saved these codes').check();
    await Promise.all([page.waitForURL(site('/home')), page.getByRole('button', { name: 'Continue' }).click()]);
    return codes;
  }

  /** On the prompt: "Use a passkey"; returns the gateway's answer to the post. */
  async function usePasskey(page) {
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/mfa/passkey')),
      page.getByRole('button', { name: 'Use a passkey' }).click(),
    ]);
    await page.waitForLoadState('load');
    return answer;
  }

  test('register at the first sign-in, then sign in with the passkey', async (t) => {
    await withAuthenticator(t, async ({ page, cdp, authenticatorId, consoleErrors }) => {
      await registerFirst(page, 'pk-alice', 'Laptop');
      const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
      assert.equal(credentials.length, 1);
      assert.equal(credentials[0].rpId, 'localhost');

      await signIn(page, 'pk-alice');
      assert.equal(pathOf(page), '/_portcullis/mfa?rd=%2Fhome');
      assert.equal(await page.locator('#passkey-form').count(), 1, 'the prompt offers the passkey');
      assert.equal(await page.locator('#code').count(), 0, 'no TOTP form: the user has none');
      await shot(page, 'pk-alice-prompt');
      const answer = await usePasskey(page);
      assert.equal(answer.status(), 302);
      await page.waitForURL(site('/home'));
      await page.waitForLoadState('load');
      const seen = await echoJson(page);
      const amr = seen.headers['x-portcullis-amr'].split(',');
      for (const v of ['hwk', 'user', 'pop']) assert.ok(amr.includes(v), `amr ${amr}`);

      await page.goto(site('/_portcullis/mfa/passkeys'));
      const row = page.locator('table.passkeys tbody tr');
      assert.equal(await row.count(), 1);
      assert.match(await row.first().textContent(), /Laptop\s*\d{4}-\d{2}-\d{2}\s*\d{4}-\d{2}-\d{2}/);
      await shot(page, 'pk-alice-list');
      // New backup codes, confirmed with the passkey: the user has no TOTP to give.
      assert.equal(await page.locator('#code').count(), 0, 'no TOTP field: the user has none');
      const [regenerated] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/mfa/backup-codes')),
        page.getByRole('button', { name: 'Use a passkey' }).click(),
      ]);
      assert.equal(regenerated.status(), 200);
      await page.locator('#backup-codes').waitFor();
      assert.equal(await page.locator('#backup-codes li').count(), 10);
      assert.deepEqual(consoleErrors, [], 'the page script runs under the CSP');
    });
  });

  test('a counter that went backwards is refused', async (t) => {
    await withAuthenticator(t, async ({ page, cdp, authenticatorId }) => {
      await registerFirst(page, 'pk-bob', 'Key');
      await signIn(page, 'pk-bob');
      assert.equal((await usePasskey(page)).status(), 302);
      await page.waitForURL(site('/home'));
      const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
      assert.ok(credentials[0].signCount >= 1, `signCount ${credentials[0].signCount}`);
      // A copy of the authenticator taken before the last use: its counter is behind.
      await cdp.send('WebAuthn.removeCredential', { authenticatorId, credentialId: credentials[0].credentialId });
      await cdp.send('WebAuthn.addCredential', { authenticatorId, credential: { ...credentials[0], signCount: 0 } });
      await signIn(page, 'pk-bob');
      const answer = await usePasskey(page);
      assert.equal(answer.status(), 401);
      await page.getByText('signature counter went backwards').waitFor();
      assert.equal(pathOf(page), '/_portcullis/mfa/passkey');
      await shot(page, 'pk-bob-counter');
      await page.goto(site('/home'));
      assert.match(pathOf(page), /^\/_portcullis\/mfa\?/, 'still waiting for the second factor');
    });
  });

  test('an assertion made on another origin is refused', async (t) => {
    await withAuthenticator(t, async ({ page, context, cdp, authenticatorId }) => {
      await registerFirst(page, 'pk-carol', 'Key');
      const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
      await signIn(page, 'pk-carol');
      const options = await page.locator('#passkey-form').getAttribute('data-options');
      // Another origin (the echo origin, another port of localhost: the same RP id) runs
      // the ceremony with the gateway's options, on an authenticator with the same key.
      const other = await context.newPage();
      const cdp2 = await context.newCDPSession(other);
      await cdp2.send('WebAuthn.enable', { enableUI: false });
      const { authenticatorId: id2 } = await cdp2.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR });
      await cdp2.send('WebAuthn.addCredential', { authenticatorId: id2, credential: { ...credentials[0], signCount: 50 } });
      await other.goto(`${origin.url.replace('127.0.0.1', 'localhost')}/elsewhere`);
      const credential = await other.evaluate(async (text) => {
        const enc = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
        const dec = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
        const o = JSON.parse(text);
        o.challenge = dec(o.challenge);
        o.allowCredentials = o.allowCredentials.map((c) => ({ ...c, id: dec(c.id) }));
        const c = await navigator.credentials.get({ publicKey: o });
        return JSON.stringify({
          id: c.id, rawId: enc(c.rawId), type: c.type,
          response: {
            clientDataJSON: enc(c.response.clientDataJSON),
            authenticatorData: enc(c.response.authenticatorData),
            signature: enc(c.response.signature),
          },
        });
      }, options);
      assert.match(JSON.parse(credential).response.clientDataJSON, /./);
      await other.close();
      // Posted to the gateway from its own page, as a phishing proxy would relay it.
      await page.evaluate((c) => { document.getElementById('passkey-credential').value = c; }, credential);
      const [answer] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/mfa/passkey')),
        page.evaluate(() => document.getElementById('passkey-form').submit()),
      ]);
      assert.equal(answer.status(), 401);
      await page.getByText('The passkey could not be verified').waitFor();
      await shot(page, 'pk-carol-wrong-origin');
      await page.goto(site('/home'));
      assert.match(pathOf(page), /^\/_portcullis\/mfa\?/);
    });
  });

  test('a removed passkey is refused', async (t) => {
    await withAuthenticator(t, async ({ page, cdp, authenticatorId }) => {
      const codes = await registerFirst(page, 'pk-dave', 'Laptop');
      const { credentials: [laptop] } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
      // Another passkey needs a fresh IdP sign-in and the second factor (a backup code here).
      await page.goto(site('/_portcullis/mfa/passkeys/register'));
      await signInAtOp(page, 'pk-dave');
      assert.match(pathOf(page), /^\/_portcullis\/mfa\?/);
      await page.getByText('Use a backup code instead').click();
      await page.fill('#backup_code', codes[0]);
      // The gateway comes back to adding the passkey by itself.
      await Promise.all([
        page.waitForURL((u) => u.pathname === '/_portcullis/mfa/passkeys/register'),
        page.getByRole('button', { name: 'Use backup code' }).click(),
      ]);
      // A second authenticator (the laptop's is set aside).
      await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
      const { authenticatorId: phone } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR });
      await page.getByLabel('Name for this passkey').fill('Phone');
      await Promise.all([
        page.waitForURL(site('/_portcullis/mfa/passkeys')),
        page.getByRole('button', { name: 'Create a passkey' }).click(),
      ]);
      assert.equal(await page.locator('table.passkeys tbody tr').count(), 2);
      await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/mfa/passkeys/remove')),
        page.getByRole('button', { name: 'Remove Laptop' }).click(),
      ]);
      await page.waitForURL(site('/_portcullis/mfa/passkeys'));
      await page.waitForLoadState('load');
      assert.equal(await page.locator('table.passkeys tbody tr').count(), 1);
      await shot(page, 'pk-dave-removed');
      // The laptop's authenticator again, with its credential: the gateway refuses it.
      await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: phone });
      const { authenticatorId: again } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR });
      await cdp.send('WebAuthn.addCredential', { authenticatorId: again, credential: { ...laptop, signCount: 100 } });
      await signIn(page, 'pk-dave');
      // The prompt lists only the phone's passkey; offer the laptop's as a stale page would.
      await page.evaluate((id) => {
        const f = document.getElementById('passkey-form');
        const o = JSON.parse(f.getAttribute('data-options'));
        o.allowCredentials = [{ type: 'public-key', id }];
        f.setAttribute('data-options', JSON.stringify(o));
      }, laptop.credentialId.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''));
      const answer = await usePasskey(page);
      assert.equal(answer.status(), 401);
      await page.getByText('not registered for your account').waitFor();
      await shot(page, 'pk-dave-refused');
    });
  });

  test('without WebAuthn the prompt says so and a backup code still signs in', async (t) => {
    let codes;
    await withAuthenticator(t, async ({ page }) => {
      codes = await registerFirst(page, 'pk-erin', 'Key');
    });
    const ctx = await newPage(browser);
    try {
      await ctx.page.addInitScript(() => { delete window.PublicKeyCredential; });
      await signIn(ctx.page, 'pk-erin');
      assert.equal(pathOf(ctx.page), '/_portcullis/mfa?rd=%2Fhome');
      const status = ctx.page.locator('#passkey-status');
      await status.waitFor({ state: 'visible' });
      assert.match(await status.textContent(), /This browser cannot use passkeys\. Use a backup code instead\./);
      assert.equal(await ctx.page.getByRole('button', { name: 'Use a passkey' }).isDisabled(), true);
      await shot(ctx.page, 'pk-erin-no-webauthn');
      await ctx.page.locator('summary', { hasText: 'Use a backup code instead' }).click();
      await ctx.page.fill('#backup_code', codes[0]);
      await Promise.all([ctx.page.waitForURL(site('/home')), ctx.page.getByRole('button', { name: 'Use backup code' }).click()]);
      assert.deepEqual(ctx.consoleErrors, []);
    } finally {
      await ctx.context.close();
    }
  });
});
