// The sign-in flows in a real browser: headless Chromium (Debian's `chromium`, driven by
// playwright-core) against the gateway in workerd, oidc-provider's own login, consent and
// logout pages, the SAML IdP's auto-posting form, and the echo origin. The browser runs
// every redirect, form, script and cookie rule itself, including the gateway's CSP and
// the SameSite attributes of its cookies. Each page passed through is saved as a
// screenshot under test-artifacts/screenshots/.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { freePort, startGateway } from './lib/gateway.mjs';
import { base32Decode, gatewaySecrets, gatewaySection, nextStep, oidcProvider, totp } from './lib/fixtures.mjs';
import { echoJson, headingText, launchBrowser, newPage, shot } from './lib/browser.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';
import { startSamlIdp } from './peers/saml_idp.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** Runs `fn` with a page in a fresh browser context, closed afterwards. */
async function withPage(t, fn, opts) {
  const ctx = await newPage(browser, opts);
  try {
    return await fn(ctx);
  } catch (e) {
    // The page the test stopped on, for the artefacts.
    await shot(ctx.page, `failed-${t.name.slice(0, 40)}`).catch(() => {});
    throw e;
  } finally {
    await ctx.context.close();
  }
}

/** Path and query of the page's current URL. */
function pathOf(page) {
  const u = new URL(page.url());
  return `${u.pathname}${u.search}`;
}

/**
 * On oidc-provider's login page: fill in the user name and a password and submit, then
 * confirm the consent page when it is shown. Ends on whatever the OP redirects to.
 */
async function signInAtOp(page, op, name, login = 'alice') {
  await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/interaction/`));
  assert.equal(await headingText(page), 'Sign-in');
  await shot(page, `${name}-op-login`);
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any password');
  const loginUrl = page.url();
  await Promise.all([page.waitForURL((u) => u.href !== loginUrl), page.click('button:has-text("Sign-in")')]);
  await page.waitForLoadState('load');
  if (page.url().startsWith(`${op.issuer}/interaction/`)) {
    assert.equal(await headingText(page), 'Authorize');
    await shot(page, `${name}-op-consent`);
    await Promise.all([
      page.waitForURL((u) => !u.href.startsWith(`${op.issuer}/`)),
      page.click('button:has-text("Continue")'),
    ]);
    await page.waitForLoadState('load');
  }
}

describe('OIDC in the browser', { timeout: 120_000 }, () => {
  let op;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    op = await startOp({
      clients: [{
        client_id: 'gw',
        client_secret: 'gw-secret',
        redirect_uris: [site('/_portcullis/oidc/callback')],
        post_logout_redirect_uris: [site('/_portcullis/logged-out')],
      }],
    });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1 }),
        tenants: [{
          id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
          providers: [oidcProvider('corp', op, 'gw')],
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

  test('the login page has a CSP and fits a 320 px wide screen', async (t) => {
    await withPage(t, async ({ page, consoleErrors }) => {
      const response = await page.goto(site('/reports'));
      assert.equal(pathOf(page), '/_portcullis/login?rd=%2Freports');
      assert.equal(response.status(), 200);
      const csp = (await response.allHeaders())['content-security-policy'];
      assert.match(csp ?? '', /default-src 'none'/, 'the login page carries a Content-Security-Policy');
      await shot(page, 'login-page-320px');
      assert.equal(await headingText(page), 'Sign in');
      await page.getByRole('link', { name: 'Sign in with Sign in corp' }).waitFor();
      const { scrollWidth, clientWidth } = await page.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
      }));
      assert.equal(clientWidth, 320);
      assert.ok(scrollWidth <= 320, `the login page scrolls sideways at 320 px (scrollWidth ${scrollWidth})`);
      assert.deepEqual(consoleErrors, []);
    }, { viewport: { width: 320, height: 640 } });
  });

  test('sign-in through the OP login and consent pages reaches the origin', async (t) => {
    await withPage(t, async ({ page }) => {
      await page.goto(site('/app/page?x=1'));
      assert.equal(pathOf(page), '/_portcullis/login?rd=%2Fapp%2Fpage%3Fx%3D1');
      await shot(page, 'oidc-login-page');
      await page.getByRole('link', { name: /Sign in corp/ }).click();
      await signInAtOp(page, op, 'oidc');
      assert.equal(page.url(), site('/app/page?x=1'));
      await shot(page, 'oidc-origin');
      const seen = await echoJson(page);
      assert.equal(seen.path, '/app/page');
      assert.deepEqual(seen.query, { x: '1' });
      assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/alice`);
      assert.equal(seen.headers['x-portcullis-email'], 'alice@example.com');
      assert.ok(seen.headers['x-portcullis-assertion']);
      assert.equal(seen.headers.cookie, undefined, 'the gateway cookies stay at the gateway');
    });
  });

  test('sign-out: confirm page, RP-initiated logout at the OP, then "Signed out"', async (t) => {
    await withPage(t, async ({ page }) => {
      await page.goto(site('/_portcullis/login?provider=corp&rd=%2F'));
      await signInAtOp(page, op, 'logout');
      assert.equal(page.url(), site('/'));
      await shot(page, 'logout-origin');

      await page.goto(site('/_portcullis/logout'));
      assert.equal(await headingText(page), 'Sign out');
      await page.getByText('Do you want to sign out').waitFor();
      await shot(page, 'logout-confirm');
      const [answer] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/logout')),
        page.getByRole('button', { name: 'Sign out' }).click(),
      ]);
      assert.equal(answer.status(), 302, 'the sign-out form is accepted');
      assert.ok((await answer.headerValue('location')).startsWith(`${op.issuer}/`), 'RP-initiated logout at the OP');
      await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/`));
      assert.match(await headingText(page), /Do you want to sign-out/);
      await shot(page, 'logout-op-confirm');
      await Promise.all([
        page.waitForURL(site('/_portcullis/logged-out')),
        page.getByRole('button', { name: 'Yes, sign me out' }).click(),
      ]);
      assert.equal(await headingText(page), 'Signed out');
      await page.getByText('You have signed out').waitFor();
      await shot(page, 'logout-signed-out');

      // The session is gone: the site asks for a sign-in again.
      await page.goto(site('/after-logout'));
      assert.match(pathOf(page), /^\/_portcullis\/login\?/);
      await shot(page, 'logout-login-again');
    });
  });

  test('error page: the IdP answers access_denied (cancel on the OP login page)', async (t) => {
    await withPage(t, async ({ page, consoleErrors }) => {
      await page.goto(site('/_portcullis/login?provider=corp&rd=%2Fdocs'));
      await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/interaction/`));
      await shot(page, 'denied-op-login');
      consoleErrors.length = 0;
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.url().startsWith(site('/_portcullis/oidc/callback'))),
        page.getByRole('link', { name: '[ Cancel ]' }).click(),
      ]);
      await page.waitForLoadState('load');
      assert.equal(response.status(), 403);
      assert.ok(page.url().startsWith(site('/_portcullis/oidc/callback?')));
      await shot(page, 'denied-error-page');
      const text = await page.evaluate(() => document.body.innerText);
      assert.match(text, /did not sign you in \(access_denied/);
      assert.match(text, /Reference: [a-z0-9]+/);
      assert.ok(await headingText(page), 'the error page has a heading');
      const again = page.getByRole('link', { name: 'Sign in again' });
      assert.equal(await again.count(), 1);
      assert.deepEqual(consoleErrors, []);
      // The link starts over at the login page.
      await Promise.all([
        page.waitForURL((u) => !u.href.startsWith(site('/_portcullis/oidc/callback'))),
        again.click(),
      ]);
      await shot(page, 'denied-after-sign-in-again');
      assert.ok(
        page.url().startsWith(site('/_portcullis/login')) || page.url().startsWith(`${op.issuer}/interaction/`),
        `"Sign in again" leads to a sign-in, not ${page.url()}`,
      );
    });
  });

  test('error page: an unknown gateway route is a 404 page', async (t) => {
    await withPage(t, async ({ page, consoleErrors }) => {
      const response = await page.goto(site('/_portcullis/no-such-page'));
      assert.equal(response.status(), 404);
      await shot(page, 'not-found-page');
      assert.equal(await headingText(page), 'Page not found');
      const text = await page.evaluate(() => document.body.innerText);
      assert.match(text, /There is no such page/);
      assert.match(text, /Reference: [a-z0-9]+/);
      assert.deepEqual(consoleErrors, []);
    });
  });
});

describe('SAML in the browser', { timeout: 90_000 }, () => {
  let idp;
  let origin;
  let gw;
  let port;
  const site = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    idp = await startSamlIdp({ key: 'rsa', sign: 'assertion' });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1 }),
        tenants: [{
          id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url,
          providers: [{ type: 'saml', name: 'corp', label: 'Corp SAML', idp_metadata: idp.metadata() }],
        }],
      },
      secrets: gatewaySecrets(),
    });
  });

  after(async () => {
    await gw?.stop();
    await idp?.close();
    await origin?.close();
  });

  test('sign-in through the IdP auto-posting form reaches the origin', async (t) => {
    await withPage(t, async ({ page, consoleErrors }) => {
      await page.goto(site('/docs?page=2'));
      assert.equal(pathOf(page), '/_portcullis/login?rd=%2Fdocs%3Fpage%3D2');
      await shot(page, 'saml-login-page');
      // The IdP page posts itself as soon as it is parsed. Its first post is stopped in
      // the browser (it never reaches the gateway) so the page can be photographed; a
      // reload then has the IdP answer again and the page's own script post it.
      let firstPost;
      const posted = new Promise((resolve) => { firstPost = resolve; });
      await page.route('**/_portcullis/saml/acs*', (route) => {
        firstPost(route.request());
        return route.abort('aborted');
      });
      const aborted = page.waitForEvent('requestfailed', (r) => r.url().includes('/_portcullis/saml/acs'));
      await page.getByRole('link', { name: /Corp SAML/ }).click();
      const request = await posted;
      await aborted;
      assert.equal(request.method(), 'POST');
      assert.equal(await request.headerValue('origin'), new URL(idp.ssoUrl).origin, 'posted by the IdP page');
      assert.ok(page.url().startsWith(`${idp.ssoUrl}?SAMLRequest=`), `the IdP page is shown (${page.url()})`);
      await page.waitForFunction(() => document.readyState === 'complete');
      assert.equal(await page.evaluate(() => document.title), 'Signing in');
      assert.equal(await page.locator('form input[name="SAMLResponse"]').count(), 1);
      await shot(page, 'saml-idp-autopost');
      await page.unroute('**/_portcullis/saml/acs*');
      await page.reload();
      await page.waitForURL(site('/docs?page=2'));
      await page.waitForLoadState('load');
      await shot(page, 'saml-origin');
      const seen = await echoJson(page);
      assert.equal(seen.path, '/docs');
      assert.deepEqual(seen.query, { page: '2' });
      assert.equal(seen.headers['x-portcullis-user'], `${idp.entityId}/alice@example.com`);
      assert.equal(seen.headers['x-portcullis-name'], 'Alice Example');
      assert.deepEqual(consoleErrors, []);
    });
  });
});

describe('TOTP second factor in the browser', { timeout: 180_000 }, () => {
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
          mfa: { required: true, step_up: [{ path: '/admin', match: 'prefix', max_age: 30 }] },
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

  /** IdP sign-in in a fresh page; ends on the gateway's second-factor page. */
  async function signIn(page, name, login, rd = '/home') {
    await page.goto(site(`/_portcullis/login?provider=corp&rd=${encodeURIComponent(rd)}`));
    await signInAtOp(page, op, name, login);
  }

  /** Enrolment page → secret → code → backup codes page. Returns { secret, codes }. */
  async function enrol(page, name) {
    assert.equal(pathOf(page), '/_portcullis/mfa/enroll?rd=%2Fhome');
    await shot(page, `${name}-enroll`);
    await page.locator('.qr svg').waitFor();
    const key = (await page.locator('#totp-secret').textContent()).trim();
    assert.match(key, /^([A-Z2-7]{4} ){7}[A-Z2-7]{4}$/);
    const secret = base32Decode(key);
    await page.fill('#code', totp(secret));
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === site('/_portcullis/mfa/enroll')),
      page.getByRole('button', { name: 'Turn on two-step verification' }).click(),
    ]);
    assert.equal(answer.status(), 200, 'the enrolment form is accepted');
    await page.locator('#backup-codes').waitFor();
    await shot(page, `${name}-backup-codes`);
    const codes = (await page.locator('#backup-codes li').allTextContents()).map((c) => c.trim());
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    // The browser does not submit the form until the box is ticked (a required checkbox).
    const form = page.locator('form', { has: page.getByLabel('I have saved these codes') });
    assert.equal(await form.evaluate((f) => f.checkValidity()), false);
    await page.getByLabel('I have saved these codes').check();
    assert.equal(await form.evaluate((f) => f.checkValidity()), true);
    await Promise.all([page.waitForURL(site('/home')), page.getByRole('button', { name: 'Continue' }).click()]);
    await page.waitForLoadState('load');
    return { secret, codes };
  }

  test('enrolment, then sign-in with a code, then with a backup code', async (t) => {
    let secret;
    let codes;
    await withPage(t, async ({ page }) => {
      await signIn(page, 'mfa-enrol', 'alice');
      ({ secret, codes } = await enrol(page, 'mfa-enrol'));
      await shot(page, 'mfa-enrol-origin');
      const seen = await echoJson(page);
      assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/alice`);
      assert.equal(seen.headers['x-portcullis-amr'], 'mfa,otp');
    });

    await nextStep();
    await withPage(t, async ({ page }) => {
      await signIn(page, 'mfa-code', 'alice');
      assert.equal(pathOf(page), '/_portcullis/mfa?rd=%2Fhome');
      assert.equal(await headingText(page), 'Two-step verification');
      await shot(page, 'mfa-code-prompt');
      await page.fill('#code', totp(secret));
      await Promise.all([page.waitForURL(site('/home')), page.getByRole('button', { name: 'Verify' }).click()]);
      await page.waitForLoadState('load');
      await shot(page, 'mfa-code-origin');
      assert.equal((await echoJson(page)).headers['x-portcullis-user'], `${op.issuer}/alice`);
    });

    await withPage(t, async ({ page }) => {
      await signIn(page, 'mfa-backup', 'alice');
      assert.equal(pathOf(page), '/_portcullis/mfa?rd=%2Fhome');
      assert.equal(await page.locator('#backup_code').isVisible(), false, 'the backup code form starts folded');
      await page.getByText('Use a backup code instead').click();
      await page.locator('#backup_code').waitFor({ state: 'visible' });
      await shot(page, 'mfa-backup-prompt');
      await page.fill('#backup_code', codes[0]);
      await Promise.all([page.waitForURL(site('/home')), page.getByRole('button', { name: 'Use backup code' }).click()]);
      await page.waitForLoadState('load');
      await shot(page, 'mfa-backup-origin');
      assert.equal((await echoJson(page)).headers['x-portcullis-user'], `${op.issuer}/alice`);
    });
  });

  test('step-up: after 30 s, /admin goes through the prompt and back', async (t) => {
    await withPage(t, async ({ page }) => {
      await signIn(page, 'stepup', 'bob');
      const { secret } = await enrol(page, 'stepup');
      // Enrolling is not a verification: the step-up rule asks for a code first.
      await page.goto(site('/admin/panel'));
      assert.equal(pathOf(page), '/_portcullis/mfa?rd=%2Fadmin%2Fpanel&reason=step_up');
      await nextStep();
      await page.fill('#code', totp(secret));
      await Promise.all([page.waitForURL(site('/admin/panel')), page.getByRole('button', { name: 'Verify' }).click()]);
      assert.equal(page.url(), site('/admin/panel'), 'a fresh second factor needs no step-up');
      await shot(page, 'stepup-admin-fresh');

      await new Promise((r) => setTimeout(r, 31_000));
      await page.goto(site('/admin/panel'));
      assert.equal(pathOf(page), '/_portcullis/mfa?rd=%2Fadmin%2Fpanel&reason=step_up');
      await page.getByText('recent confirmation').waitFor();
      await shot(page, 'stepup-prompt');
      await page.fill('#code', totp(secret));
      await Promise.all([page.waitForURL(site('/admin/panel')), page.getByRole('button', { name: 'Verify' }).click()]);
      await page.waitForLoadState('load');
      await shot(page, 'stepup-admin-again');
      const seen = await echoJson(page);
      assert.equal(seen.path, '/admin/panel');
      assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/bob`);
    });
  });
});
