// OpenID Provider used as the identity provider in end-to-end tests and in the
// local demo. It wraps the `oidc-provider` package behind a plain Node HTTP
// server so tests can count requests per endpoint and inject faults.
//
// Library use:
//   const op = await startOp({ clients: [{ client_id, client_secret, redirect_uris }] });
//   op.issuer            // http://127.0.0.1:PORT
//   op.setFault('jwks', '500');
//   await op.rotateKeys();
//   await op.close();
//
// CLI use (prints the issuer URL on stdout):
//   node tests/e2e/peers/op.mjs --port 9000 --client-id demo --client-secret demo-secret \
//     --redirect-uri http://127.0.0.1:8787/_portcullis/oidc/callback
//
// `--clock-skew SECONDS` runs the whole OP process on a shifted clock (every timestamp it
// issues: iat, exp, auth_time, code and cookie lifetimes), as an IdP whose clock is wrong;
// it is a process-wide setting, so tests start such an OP as a child process.

import http from 'node:http';
import crypto from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { generateKeyPair, exportJWK } from 'jose';
// The in-memory adapter shipped with oidc-provider keeps a module-wide store
// by default. Each OP instance gets its own store (shared by the Provider
// instances it creates on key rotation) so that several OPs in one process
// never see each other's codes, tokens or sessions.
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

// oidc-provider warns on import when the Node.js release line is not the one it
// targets; that notice is irrelevant for a local test peer.
const { default: Provider, errors } = await (async () => {
  const warn = console.warn;
  console.warn = () => {};
  try {
    return await import('oidc-provider');
  } finally {
    console.warn = warn;
  }
})();

export const ENDPOINTS = ['discovery', 'jwks', 'token', 'userinfo', 'authorize', 'end_session', 'revocation'];
export const FAULT_MODES = ['ok', '500', 'hang', 'garbage', 'huge'];

const HUGE_BODY_BYTES = 5 * 1024 * 1024;

// Group membership per login name; any other login gets the default below.
export const GROUPS = {
  alice: ['engineering', 'admins'],
  bob: ['marketing'],
  carol: [],
  mallory: ['unmapped-group'],
};
export const DEFAULT_GROUPS = ['engineering'];

const CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  groups: ['groups'],
};
const SCOPES = ['openid', 'offline_access', 'email', 'profile', 'groups'];

const CLIENT_DEFAULTS = {
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  id_token_signed_response_alg: 'RS256',
};

function capitalize(s) {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}

/** Claims the OP asserts for a login name (every login name is a valid account). */
export function accountClaims(login) {
  const given = capitalize(login);
  const family = 'Example';
  return {
    sub: login,
    email: `${login}@example.com`,
    email_verified: true,
    name: `${given} ${family}`,
    given_name: given,
    family_name: family,
    preferred_username: login,
    groups: [...(Object.hasOwn(GROUPS, login) ? GROUPS[login] : DEFAULT_GROUPS)],
  };
}

async function generateSigningKeys() {
  const suffix = crypto.randomBytes(6).toString('hex');
  const rsa = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
  const ec = await generateKeyPair('ES256', { extractable: true });
  const rsaJwk = { ...(await exportJWK(rsa.privateKey)), kid: `rsa-${suffix}`, alg: 'RS256', use: 'sig' };
  const ecJwk = { ...(await exportJWK(ec.privateKey)), kid: `ec-${suffix}`, alg: 'ES256', use: 'sig' };
  return { keys: [rsaJwk, ecJwk] };
}

// Expiring key/value store with the interface MemoryAdapter expects
// (get, set(key, value, { maxAge }), delete). Unbounded, unlike the default LRU.
class ExpiringStore {
  #map = new Map();

  get(key) {
    const entry = this.#map.get(key);
    if (!entry) return undefined;
    if (entry.expiry !== undefined && entry.expiry <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, options) {
    const maxAge = options?.maxAge;
    this.#map.set(key, { value, expiry: typeof maxAge === 'number' ? Date.now() + maxAge : undefined });
  }

  delete(key) {
    this.#map.delete(key);
  }
}

function htmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${htmlEscape(title)}</title></head>
<body>
${body}
</body>
</html>`;
}

async function listen(server, port) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address().port;
}

/**
 * Start an OpenID Provider on 127.0.0.1.
 *
 * @param {object} [opts]
 * @param {number} [opts.port=0] listening port, 0 for a free one
 * @param {object[]} [opts.clients] oidc-provider client metadata; defaults are
 *   client_secret_basic, authorization_code + refresh_token, RS256 ID tokens
 * @param {number} [opts.accessTokenTtl=600] seconds
 * @param {number} [opts.idTokenTtl=3600] seconds
 * @param {number} [opts.refreshTokenTtl=86400] seconds
 * @param {number} [opts.sessionTtl=86400] OP login session lifetime, seconds
 * @param {boolean} [opts.strictOfflineAccess=false] when false, a refresh token is
 *   issued whenever the authorization request asked for `offline_access` (as most
 *   hosted IdPs do); when true, oidc-provider's own rule applies and
 *   `offline_access` is dropped unless the request also carries `prompt=consent`
 * @param {boolean} [opts.quiet=true] silence oidc-provider's development warnings
 * @param {object} [opts.resources] resource servers for client credentials with JWT
 *   access tokens (RFC 8707 resource indicators, RFC 9068 tokens typed `at+jwt`):
 *   `{ 'https://api.example': { scope: 'api read', ttl: 300, alg: 'RS256' } }`. A client
 *   with `grant_types: ['client_credentials']` then gets a token for
 *   `POST /token grant_type=client_credentials&resource=URL&scope=…`.
 */
export async function startOp(opts = {}) {
  const {
    port: wantedPort = 0,
    clients = [],
    accessTokenTtl = 600,
    idTokenTtl = 3600,
    refreshTokenTtl = 86400,
    sessionTtl = 86400,
    strictOfflineAccess = false,
    quiet = true,
    resources = {},
  } = opts;

  const store = new ExpiringStore();
  const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
  const counts = Object.fromEntries(ENDPOINTS.map((e) => [e, 0]));
  const faults = Object.fromEntries(ENDPOINTS.map((e) => [e, 'ok']));
  // Responses held open by the 'hang' fault, per endpoint.
  const hanging = Object.fromEntries(ENDPOINTS.map((e) => [e, new Set()]));
  // Outcome of every back-channel logout delivery attempted by the OP.
  const backchannel = [];
  // Unexpected exceptions inside oidc-provider (answered with 500 server_error).
  const serverErrors = [];
  // PKCE challenges of authorization requests that asked for offline_access.
  const offlineChallenges = new Set();
  let paths = {};
  let provider;
  let handler;
  let jwks;

  const normalizedClients = clients.map((c) => ({ ...CLIENT_DEFAULTS, ...c }));

  const server = http.createServer((req, res) => {
    let pathname;
    try {
      pathname = new URL(req.url, 'http://127.0.0.1').pathname;
    } catch {
      res.writeHead(400).end();
      return;
    }
    const endpoint = Object.keys(paths).find((e) => paths[e] === pathname);
    if (endpoint) {
      counts[endpoint] += 1;
      const mode = faults[endpoint];
      if (mode !== 'ok') {
        injectFault(req, res, mode, endpoint);
        return;
      }
      if (endpoint === 'authorize' && !strictOfflineAccess) rememberOfflineRequest(req);
    }
    handler(req, res);
  });

  function rememberOfflineRequest(req) {
    const params = new URL(req.url, 'http://127.0.0.1').searchParams;
    const scope = (params.get('scope') || '').split(' ');
    const challenge = params.get('code_challenge');
    if (challenge && scope.includes('offline_access')) offlineChallenges.add(challenge);
  }

  function injectFault(req, res, mode, endpoint) {
    // Drain the request body so the client is not left blocked on write.
    req.resume();
    switch (mode) {
      case '500':
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'server_error', error_description: 'injected fault' }));
        break;
      case 'hang':
        hanging[endpoint].add(res);
        res.on('close', () => hanging[endpoint].delete(res));
        break;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('<html><body>this is not JSON {{{</body></html>');
        break;
      case 'huge': {
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        const prefix = '{"padding":"';
        const suffix = '"}';
        const total = prefix.length + HUGE_BODY_BYTES + suffix.length;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(total) });
        res.write(prefix);
        let written = 0;
        const writeMore = () => {
          while (written < HUGE_BODY_BYTES) {
            const n = Math.min(chunk.length, HUGE_BODY_BYTES - written);
            written += n;
            if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
              res.once('drain', writeMore);
              return;
            }
          }
          res.end(suffix);
        };
        res.on('error', () => {});
        writeMore();
        break;
      }
      default:
        res.writeHead(500).end();
    }
  }

  const port = await listen(server, wantedPort);
  const issuer = `http://127.0.0.1:${port}`;

  function buildProvider() {
    const configuration = {
      clients: normalizedClients,
      jwks,
      adapter: (model) => new MemoryAdapter(model, store),
      findAccount: async (ctx, id) => ({
        accountId: id,
        async claims() {
          return accountClaims(id);
        },
      }),
      claims: CLAIMS,
      scopes: SCOPES,
      conformIdTokenClaims: false,
      pkce: { required: () => true },
      cookies: { keys: cookieKeys },
      features: {
        devInteractions: { enabled: true },
        rpInitiatedLogout: {
          enabled: true,
          logoutSource: async (ctx, form) => {
            ctx.body = page('Logout Request', `<h1>Do you want to sign-out from ${htmlEscape(ctx.host)}?</h1>
${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
          },
          postLogoutSuccessSource: async (ctx) => {
            ctx.body = page('Sign-out Success', '<h1>Sign-out Success</h1>');
          },
        },
        backchannelLogout: { enabled: true },
        revocation: { enabled: true },
        clientCredentials: { enabled: Object.keys(resources).length > 0 },
        resourceIndicators: {
          enabled: Object.keys(resources).length > 0,
          // A client-credentials request names its resource; an unknown one is refused.
          defaultResource: () => undefined,
          useGrantedResource: () => true,
          getResourceServerInfo: (ctx, resource) => {
            const r = resources[resource];
            if (!r) throw new errors.InvalidTarget();
            return {
              scope: r.scope,
              audience: resource,
              accessTokenTTL: r.ttl ?? 300,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: r.alg ?? 'RS256' } },
            };
          },
        },
      },
      issueRefreshToken: async (ctx, client, code) => {
        if (!client.grantTypeAllowed('refresh_token')) return false;
        if (code.scopes.has('offline_access')) return true;
        return code.kind === 'AuthorizationCode' && !!code.codeChallenge
          && offlineChallenges.has(code.codeChallenge);
      },
      rotateRefreshToken: true,
      // oidc-provider refuses outgoing requests (back-channel logout) to
      // special-use addresses such as 127.0.0.0/8; every peer here is on
      // loopback, so use a plain fetch without that dispatcher.
      // eslint-disable-next-line no-unused-vars
      fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
      ttl: {
        AccessToken: accessTokenTtl,
        AuthorizationCode: 60,
        IdToken: idTokenTtl,
        RefreshToken: refreshTokenTtl,
        ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
        Interaction: 3600,
        Session: sessionTtl,
        Grant: Math.max(sessionTtl, refreshTokenTtl),
      },
      renderError: async (ctx, out) => {
        ctx.type = 'html';
        ctx.body = page('oops! something went wrong', `<h1>oops! something went wrong</h1>
<pre id="error">${htmlEscape(out.error)}</pre>
<pre id="error_description">${htmlEscape(out.error_description ?? '')}</pre>`);
      },
    };
    const p = new Provider(issuer, configuration);
    p.on('server_error', (ctx, err) => {
      serverErrors.push(err);
      if (!quiet) console.error('op server_error', err);
    });
    p.on('backchannel.success', (ctx, client, accountId, sid) => {
      backchannel.push({ ok: true, clientId: client.clientId, accountId, sid });
    });
    p.on('backchannel.error', (ctx, err, client, accountId, sid) => {
      backchannel.push({
        ok: false, clientId: client.clientId, accountId, sid, error: String(err?.message ?? err),
      });
      if (!quiet) console.error('op backchannel logout failed', err);
    });
    return p;
  }

  const origWarn = console.warn;
  function construct() {
    // oidc-provider prints development-only warnings at construction time.
    if (quiet) console.warn = () => {};
    try {
      return buildProvider();
    } finally {
      console.warn = origWarn;
    }
  }

  jwks = await generateSigningKeys();
  provider = construct();
  handler = provider.callback();

  // Learn the endpoint paths from the provider's own discovery document.
  const discoveryPath = '/.well-known/openid-configuration';
  const discovery = await new Promise((resolve, reject) => {
    http.get(`${issuer}${discoveryPath}`, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        try { resolve(JSON.parse(body)); } catch (e) { reject(e); }
      });
    }).on('error', reject);
  });
  const pathOf = (u) => (u ? new URL(u).pathname : undefined);
  paths = {
    discovery: discoveryPath,
    jwks: pathOf(discovery.jwks_uri),
    token: pathOf(discovery.token_endpoint),
    userinfo: pathOf(discovery.userinfo_endpoint),
    authorize: pathOf(discovery.authorization_endpoint),
    end_session: pathOf(discovery.end_session_endpoint),
    revocation: pathOf(discovery.revocation_endpoint),
  };
  for (const e of ENDPOINTS) counts[e] = 0;

  let closed = false;
  const kids = () => Object.fromEntries(jwks.keys.map((k) => [k.alg, k.kid]));

  return {
    issuer,
    port,
    counts,
    /** Back-channel logout deliveries: { ok, clientId, accountId, sid, error? } */
    backchannel,
    serverErrors,
    /** Pathname of each endpoint, as advertised by discovery. */
    paths: { ...paths },
    discovery,
    get provider() {
      return provider;
    },
    /** Public JWKS currently served. */
    publicJwks() {
      return {
        keys: jwks.keys.map(({ kty, kid, alg, use, n, e, crv, x, y }) => Object.fromEntries(
          Object.entries({ kty, kid, alg, use, n, e, crv, x, y }).filter(([, v]) => v !== undefined),
        )),
      };
    },
    /** Current signing key ids, e.g. { RS256: 'rsa-…', ES256: 'ec-…' }. */
    kids,
    /**
     * Replace both signing keys with fresh ones (new kids). Sessions, grants and
     * tokens issued so far stay valid at the OP; new ID tokens use the new keys.
     */
    async rotateKeys() {
      jwks = await generateSigningKeys();
      provider = construct();
      handler = provider.callback();
      return kids();
    },
    /**
     * @param {'discovery'|'jwks'|'token'|'userinfo'|'authorize'|'end_session'|'revocation'} endpoint
     * @param {'ok'|'500'|'hang'|'garbage'|'huge'} mode
     */
    setFault(endpoint, mode) {
      if (!ENDPOINTS.includes(endpoint)) throw new Error(`unknown endpoint ${endpoint}`);
      if (!FAULT_MODES.includes(mode)) throw new Error(`unknown fault mode ${mode}`);
      faults[endpoint] = mode;
      // Requests held by an earlier 'hang' on this endpoint are dropped.
      if (mode !== 'hang') {
        for (const res of hanging[endpoint]) res.destroy();
      }
    },
    resetCounts() {
      for (const e of ENDPOINTS) counts[e] = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const set of Object.values(hanging)) {
        for (const res of set) res.destroy();
      }
      await new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** Shifts this process's clock (Date.now and new Date()) by `seconds`. */
export function shiftClock(seconds) {
  const RealDate = globalThis.Date;
  const offset = seconds * 1000;
  class SkewedDate extends RealDate {
    constructor(...args) {
      super(...(args.length ? args : [RealDate.now() + offset]));
    }

    static now() {
      return RealDate.now() + offset;
    }
  }
  globalThis.Date = SkewedDate;
}

function parseArgs(argv) {
  const out = { redirectUris: [], postLogoutRedirectUris: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      const v = argv[i + 1];
      if (v === undefined) throw new Error(`missing value for ${arg}`);
      i += 1;
      return v;
    };
    switch (arg) {
      case '--port': out.port = Number(value()); break;
      case '--client-id': out.clientId = value(); break;
      case '--client-secret': out.clientSecret = value(); break;
      case '--redirect-uri': out.redirectUris.push(value()); break;
      case '--post-logout-redirect-uri': out.postLogoutRedirectUris.push(value()); break;
      case '--backchannel-logout-uri': out.backchannelLogoutUri = value(); break;
      case '--id-token-alg': out.idTokenAlg = value(); break;
      case '--access-token-ttl': out.accessTokenTtl = Number(value()); break;
      case '--id-token-ttl': out.idTokenTtl = Number(value()); break;
      case '--clock-skew': out.clockSkew = Number(value()); break;
      case '-h':
      case '--help':
        out.help = true;
        break;
      default:
        throw new Error(`unknown argument ${arg}`);
    }
  }
  return out;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(e.message);
    process.exit(2);
  }
  if (args.help) {
    console.log(`usage: node op.mjs [--port N] [--client-id ID --client-secret S --redirect-uri URI ...]
       [--post-logout-redirect-uri URI ...] [--backchannel-logout-uri URI]
       [--id-token-alg RS256|ES256] [--access-token-ttl SECONDS] [--id-token-ttl SECONDS]
       [--clock-skew SECONDS]`);
    return;
  }
  if (args.clockSkew) shiftClock(args.clockSkew);
  const clients = [];
  if (args.clientId) {
    if (!args.redirectUris.length) {
      console.error('--redirect-uri is required with --client-id');
      process.exit(2);
    }
    const client = {
      client_id: args.clientId,
      client_secret: args.clientSecret,
      redirect_uris: args.redirectUris,
    };
    if (!args.clientSecret) client.token_endpoint_auth_method = 'none';
    if (args.postLogoutRedirectUris.length) client.post_logout_redirect_uris = args.postLogoutRedirectUris;
    if (args.backchannelLogoutUri) client.backchannel_logout_uri = args.backchannelLogoutUri;
    if (args.idTokenAlg) client.id_token_signed_response_alg = args.idTokenAlg;
    clients.push(client);
  }
  const op = await startOp({
    port: args.port ?? 0,
    clients,
    ...(args.accessTokenTtl ? { accessTokenTtl: args.accessTokenTtl } : {}),
    ...(args.idTokenTtl ? { idTokenTtl: args.idTokenTtl } : {}),
  });
  console.log(op.issuer);
  const shutdown = () => {
    op.close().finally(() => process.exit(0));
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
