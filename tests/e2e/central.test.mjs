// One sign-in for a group of sites, in workerd with three hosts routed by the Host header
// (`auth.localhost`, the sign-in host; `app.localhost` and `wiki.localhost`, its sites) and
// a fourth tenant that is not a member (`other.localhost`). The browser flow runs in
// headless Chromium (which resolves `*.localhost` to loopback and treats it as a secure
// context, so the `__Host-` cookies work over http); the refusals are sent from here with
// the Host header set by hand.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { freePort, startGateway } from './lib/gateway.mjs';
import { events, gatewaySecrets, gatewaySection, oidcProvider, waitForEvent } from './lib/fixtures.mjs';
import { echoJson, headingText, launchBrowser, newPage, shot } from './lib/browser.mjs';
import { NAVIGATION_HEADERS, rawRequest } from './lib/client.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const SESSION = '__Host-portcullis_session';
const PENDING = '__Host-portcullis_pending';

describe('a sign-in host and its sites', { timeout: 240_000 }, () => {
  let browser;
  let op;
  let origin;
  let gw;
  let port;
  const url = (host, p) => `http://${host}.localhost:${port}${p}`;

  /** A request to `host` (auth, app, wiki, other) through 127.0.0.1 with the Host header. */
  async function send(host, path, cookies = {}, headers = NAVIGATION_HEADERS) {
    const h = new Headers({ ...headers, host: `${host}.localhost:${port}` });
    const cookie = Object.entries(cookies).map(([k, v]) => `${k}=${v}`).join('; ');
    if (cookie) h.set('cookie', cookie);
    const r = await rawRequest(`http://127.0.0.1:${port}${path}`, { headers: h });
    const set = {};
    for (const c of r.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      if (pair.slice(i + 1)) set[pair.slice(0, i)] = pair.slice(i + 1);
    }
    return { status: r.status, location: r.headers.get('location'), set, text: r.body.toString() };
  }

  /** A hand-off up to the code: returns the site's pending cookie and the callback path. */
  async function codeFor(site, central) {
    const start = await send(site, '/_portcullis/login?rd=%2Fafter');
    assert.equal(start.status, 302, start.text);
    const authorize = new URL(start.location);
    assert.equal(authorize.host, `auth.localhost:${port}`);
    const issued = await send('auth', `${authorize.pathname}${authorize.search}`, { [SESSION]: central });
    assert.equal(issued.status, 302, issued.text);
    const callback = new URL(issued.location);
    assert.equal(callback.host, `${site}.localhost:${port}`);
    return { pending: start.set[PENDING], path: `${callback.pathname}${callback.search}` };
  }

  async function cookiesOf(context, host) {
    const list = await context.cookies(url(host, '/'));
    return Object.fromEntries(list.map((c) => [c.name, c]));
  }

  let context;
  let page;
  let early;
  let earlyAt;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    op = await startOp({
      clients: [{
        client_id: 'gw', client_secret: 'gw-secret',
        redirect_uris: [url('auth', '/_portcullis/oidc/callback'), url('other', '/_portcullis/oidc/callback')],
        // The OP reaches the sign-in host by its loopback address (its second host name).
        backchannel_logout_uri: `http://127.0.0.1:${port}/_portcullis/oidc/backchannel-logout`,
        backchannel_logout_session_required: true,
      }],
    });
    const corp = oidcProvider('corp', op, 'gw', { refresh: false, rp_logout: false });
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ session_cache_ttl: 1, admin_token: 'ADMIN_TOKEN' }),
        tenants: [
          {
            id: 'login', name: 'Acme sign-in', hosts: ['auth.localhost', '127.0.0.1'], sites: ['app', 'wiki'],
            auto_redirect: true, groups: { map: { engineering: ['eng'] } }, providers: [corp],
          },
          { id: 'app', name: 'App', hosts: ['app.localhost'], origin: origin.url },
          {
            id: 'wiki', name: 'Wiki', hosts: ['wiki.localhost'], origin: origin.url, policy_default: 'deny',
            policy: [{ path: '/', match: 'prefix', allow_groups: ['eng'] }],
          },
          { id: 'other', name: 'Other', hosts: ['other.localhost'], origin: origin.url, providers: [corp] },
        ],
      },
      secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret', ADMIN_TOKEN: 'admin-token-0123456789-0123456789-abcdef' }),
    });
    browser = await launchBrowser();
    ({ context, page } = await newPage(browser));
  });

  after(async () => {
    await context?.close();
    await browser?.close();
    await gw?.stop();
    await op?.close();
    await origin?.close();
  });

  test('signing in at one site in Chromium, then the second site without the IdP', async () => {
    const visited = [];
    page.on('request', (r) => { if (r.isNavigationRequest()) visited.push(r.url()); });
    await page.goto(url('app', '/reports?q=1'));
    await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/interaction/`));
    await page.fill('input[name="login"]', 'alice');
    await page.fill('input[name="password"]', 'any password');
    await page.click('button:has-text("Sign-in")');
    await page.waitForLoadState('load');
    if (page.url().startsWith(`${op.issuer}/interaction/`)) await page.click('button:has-text("Continue")');
    await page.waitForURL(url('app', '/reports?q=1'));
    await shot(page, 'central-app-after-sign-in');
    const seen = await echoJson(page);
    assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/alice`);
    assert.ok(seen.headers['x-portcullis-assertion']);
    assert.equal(seen.headers.cookie, undefined);
    // Through the sign-in host: its authorize step, then the app's callback.
    assert.ok(visited.some((v) => v.startsWith(url('auth', '/_portcullis/sso/authorize?'))), visited.join('\n'));
    assert.ok(visited.some((v) => v.startsWith(url('app', '/_portcullis/sso/callback?'))), visited.join('\n'));

    // The wiki: one hop through the sign-in host, no IdP.
    visited.length = 0;
    await page.goto(url('wiki', '/start'));
    await page.waitForURL(url('wiki', '/start'));
    assert.equal((await echoJson(page)).path, '/start');
    assert.ok(!visited.some((v) => v.startsWith(op.issuer)), `the IdP was not visited again:\n${visited.join('\n')}`);

    // Three host-only sessions, each its own.
    const jars = await Promise.all(['auth', 'app', 'wiki'].map((h) => cookiesOf(context, h)));
    const sessions = jars.map((j) => j[SESSION]);
    for (const [i, c] of sessions.entries()) {
      assert.ok(c, `a session on host ${i}`);
      assert.ok(!c.domain.startsWith('.'), `host-only: ${c.domain}`);
      assert.equal(c.secure, true);
      assert.equal(c.httpOnly, true);
    }
    assert.equal(new Set(sessions.map((c) => c.value)).size, 3);
    assert.deepEqual(sessions.map((c) => c.domain), ['auth.localhost', 'app.localhost', 'wiki.localhost']);
    // A cookie of one host is nothing at another.
    const cross = await send('wiki', '/start', { [SESSION]: sessions[1].value });
    assert.equal(cross.status, 302);
    assert.match(cross.location, /^\/_portcullis\/login/);

    // A code obtained now is redeemed at the end of the run, well after it expired.
    early = await codeFor('app', sessions[0].value);
    earlyAt = Date.now();

    // The sign-in host's own page lists the sites.
    await page.goto(url('auth', '/'));
    assert.equal(await headingText(page), 'Your sites');
    await page.getByRole('link', { name: 'Wiki' }).waitFor();
    await shot(page, 'central-sign-in-host-sites');
  });

  test('a hand-off code works once, only at its site, only in the browser that asked', async () => {
    const central = (await cookiesOf(context, 'auth'))[SESSION].value;
    const { pending, path } = await codeFor('app', central);
    // Without the pending cookie of that sign-in: refused, and the code is not spent.
    const stranger = await send('app', path);
    assert.equal(stranger.status, 400);
    assert.match(stranger.text, /not started in this browser/);
    const ok = await send('app', path, { [PENDING]: pending });
    assert.equal(ok.status, 302, ok.text);
    assert.equal(ok.location, '/after');
    assert.ok(ok.set[SESSION]);
    const replay = await send('app', path, { [PENDING]: pending });
    assert.equal(replay.status, 400);
    assert.match(replay.text, /already used/);
    await waitForEvent(gw, (l) => l.code === 'state_replayed' || l.code === 'handoff_replayed');
    // A code for the app, brought to the wiki within a wiki sign-in of the same browser.
    const forApp = await codeFor('app', central);
    const wikiStart = await send('wiki', '/_portcullis/login?rd=%2F');
    const state = new URL(wikiStart.location).searchParams.get('state');
    const code = new URLSearchParams(forApp.path.split('?')[1]).get('code');
    const moved = await send('wiki', `/_portcullis/sso/callback?code=${code}&state=${state}`, { [PENDING]: wikiStart.set[PENDING] });
    assert.equal(moved.status, 400);
    await waitForEvent(gw, (l) => l.code === 'handoff_mismatch');
  });

  test('the sign-in host refuses a site that is not in its group', async () => {
    const central = (await cookiesOf(context, 'auth'))[SESSION].value;
    for (const [site, host] of [['other', `other.localhost:${port}`], ['app', `other.localhost:${port}`], ['app', 'evil.example'], ['app', `app.localhost:${port + 1}`]]) {
      const r = await send('auth', `/_portcullis/sso/authorize?site=${site}&host=${encodeURIComponent(host)}&state=s1`, { [SESSION]: central });
      assert.equal(r.status, 403, `${site} ${host}: ${r.text}`);
      assert.equal(r.location, null);
      assert.match(r.text, /does not sign people in to that site/);
    }
    // The non-member signs people in itself, with its own provider.
    const own = await send('other', '/_portcullis/login?provider=corp&rd=%2F');
    assert.equal(own.status, 302);
    assert.ok(own.location.startsWith(`${op.issuer}/`), own.location);
    assert.equal((await send('other', '/_portcullis/sso/authorize?site=app&host=x&state=s')).status, 404);
  });

  test('the admin API lists the central session with its sites', async () => {
    const r = await send('auth', `/_portcullis/admin/sessions?user_id=${encodeURIComponent(`${op.issuer}/alice`)}`, {}, {
      accept: 'application/json', authorization: 'Bearer admin-token-0123456789-0123456789-abcdef',
    });
    assert.equal(r.status, 200, r.text);
    const [s] = JSON.parse(r.text).sessions;
    const tenants = s.sites.map((x) => x.tenant);
    assert.ok(tenants.includes('app') && tenants.includes('wiki'), JSON.stringify(s.sites));
  });

  test('signing out at the wiki ends the sign-in host and the app too', async () => {
    const before = Object.fromEntries(await Promise.all(['auth', 'app', 'wiki'].map(async (h) => [h, (await cookiesOf(context, h))[SESSION].value])));
    await page.goto(url('wiki', '/_portcullis/logout'));
    await Promise.all([
      page.waitForURL(url('wiki', '/_portcullis/logged-out')),
      page.getByRole('button', { name: 'Sign out' }).click(),
    ]);
    assert.equal(await headingText(page), 'Signed out');
    await new Promise((r) => setTimeout(r, 1100));
    for (const host of ['auth', 'app', 'wiki']) {
      const r = await send(host, '/reports', { [SESSION]: before[host] }, { accept: 'application/json' });
      assert.equal(r.status, 401, `${host}: ${r.status} ${r.text}`);
    }
  });

  test('the IdP\'s back-channel logout at the sign-in host ends every site', async () => {
    // Sign in again in a fresh context (the OP asks again: its session is per browser).
    const fresh = await newPage(browser);
    try {
      await fresh.page.goto(url('app', '/again'));
      await fresh.page.waitForURL((u) => u.href.startsWith(`${op.issuer}/interaction/`));
      await fresh.page.fill('input[name="login"]', 'bob');
      await fresh.page.fill('input[name="password"]', 'any password');
      await fresh.page.click('button:has-text("Sign-in")');
      await fresh.page.waitForLoadState('load');
      if (fresh.page.url().startsWith(`${op.issuer}/interaction/`)) await fresh.page.click('button:has-text("Continue")');
      await fresh.page.waitForURL(url('app', '/again'));
      const app = (await cookiesOf(fresh.context, 'app'))[SESSION].value;
      assert.equal((await send('app', '/again', { [SESSION]: app }, { accept: 'application/json' })).status, 200);
      // The OP's own sign-out page, confirmed: it notifies the sign-in host.
      const delivered = op.backchannel.length;
      await fresh.page.goto(`${op.issuer}/session/end`);
      await fresh.page.getByRole('button', { name: 'Yes, sign me out' }).click();
      const deadline = Date.now() + 5000;
      while (op.backchannel.length === delivered && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(op.backchannel.slice(delivered).some((d) => d.ok), JSON.stringify(op.backchannel.slice(delivered)));
      await waitForEvent(gw, (l) => l.event === 'backchannel_logout' && l.outcome === 'ok' && l.revoked >= 1);
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await send('app', '/again', { [SESSION]: app }, { accept: 'application/json' })).status, 401);
      assert.ok(events(gw, (l) => l.event === 'session_revoked' && l.tenant === 'app' && l.actor === 'idp:corp').length >= 1);
    } finally {
      await fresh.context.close();
    }
  });

  test('a code redeemed after its minute is refused', async () => {
    const wait = earlyAt + 61_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const late = await send('app', early.path, { [PENDING]: early.pending });
    assert.equal(late.status, 400, late.text);
    assert.match(late.text, /no longer valid|Sign-in expired/);
    await waitForEvent(gw, (l) => l.code === 'handoff_expired');
  });
});
