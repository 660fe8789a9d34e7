// An identity provider whose discovery document and JWKS come from an HTTP/1.0 server that
// closes every connection after its answer without saying so (no `Connection: close`).
// The runtime may then reuse a connection the server has already closed, and that fetch
// fails with "Network connection lost"; the gateway tries such an idempotent GET once more
// on a new connection, so sign-in succeeds every time.
//
// Each sign-in uses another provider of the same IdP (each has its own cache), so every
// one fetches discovery and then the JWKS from the HTTP/1.0 server, back to back.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { Client, NAVIGATION_HEADERS } from './lib/client.mjs';
import { freePort, startGateway } from './lib/gateway.mjs';
import { events, gatewaySecrets, gatewaySection } from './lib/fixtures.mjs';
import { startOrigin } from './peers/origin.mjs';

const LOGINS = 12;
const CLIENT_ID = 'gw-http10';
const CLOSE_AFTER_MS = 50;

/** A raw HTTP/1.0 server: one request per connection, answered, then the socket ends. */
async function startHttp10(answer) {
  let requests = 0;
  const server = net.createServer((socket) => {
    let buf = '';
    let answered = false;
    socket.on('data', (chunk) => {
      // One request per connection, as HTTP/1.0 has it: anything sent after the first
      // request is never read.
      if (answered) return;
      buf += chunk.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      answered = true;
      requests += 1;
      const path = buf.split(' ')[1] ?? '/';
      const body = Buffer.from(JSON.stringify(answer(path)));
      socket.write(Buffer.concat([
        Buffer.from(`HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`),
        body,
      ]));
      // The connection ends a moment after the answer, not with it.
      setTimeout(() => socket.destroy(), CLOSE_AFTER_MS);
    });
    socket.on('error', () => {});
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests: () => requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe('an IdP answering HTTP/1.0 without keep-alive', () => {
  let origin;
  let gw;
  let port;
  let docs;
  let endpoints;
  const site = (p) => `http://localhost:${port}${p}`;

  before(async () => {
    port = await freePort();
    origin = await startOrigin();
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const codes = new Map();
    let issuer;
    // Authorization (signs in at once) and token endpoints: an ordinary HTTP/1.1 server.
    const front = http.createServer(async (req, res) => {
      const u = new URL(req.url, 'http://x');
      if (u.pathname === '/authorize') {
        const code = crypto.randomBytes(16).toString('hex');
        codes.set(code, u.searchParams.get('nonce'));
        const back = new URL(u.searchParams.get('redirect_uri'));
        back.searchParams.set('code', code);
        back.searchParams.set('state', u.searchParams.get('state'));
        res.writeHead(302, { location: back.href }).end();
        return;
      }
      if (u.pathname === '/token' && req.method === 'POST') {
        let body = '';
        for await (const c of req) body += c;
        const code = new URLSearchParams(body).get('code');
        const nonce = codes.get(code);
        codes.delete(code);
        const idToken = await new SignJWT({ nonce, email: 'alice@example.com', name: 'Alice' })
          .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
          .setIssuer(issuer).setAudience(CLIENT_ID).setSubject('alice')
          .setIssuedAt().setExpirationTime('5m')
          .sign(privateKey);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: 'at', token_type: 'Bearer', expires_in: 300, id_token: idToken }));
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise((resolve) => front.listen(0, '127.0.0.1', resolve));
    endpoints = { url: `http://127.0.0.1:${front.address().port}`, close: () => new Promise((r) => front.close(r)) };
    // Discovery and JWKS: the HTTP/1.0 server, which is the issuer.
    docs = await startHttp10((path) => (path === '/jwks'
      ? { keys: [jwk] }
      : {
        issuer,
        authorization_endpoint: `${endpoints.url}/authorize`,
        token_endpoint: `${endpoints.url}/token`,
        jwks_uri: `${issuer}/jwks`,
        id_token_signing_alg_values_supported: ['RS256'],
        response_types_supported: ['code'],
      }));
    issuer = docs.url;
    const providers = Array.from({ length: LOGINS }, (_, i) => ({
      type: 'oidc',
      name: `p${i}`,
      label: `Provider ${i}`,
      issuer,
      client_id: CLIENT_ID,
      client_secret: 'CLIENT_SECRET',
      scopes: ['openid', 'email', 'profile'],
    }));
    gw = await startGateway({
      port,
      config: {
        gateway: gatewaySection({ fetch_timeout_ms: 5000 }),
        tenants: [{ id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url, providers }],
      },
      secrets: gatewaySecrets({ CLIENT_SECRET: 'client-secret' }),
    });
  });

  after(async () => {
    await gw?.stop();
    await docs?.close();
    await endpoints?.close();
    await origin?.close();
  });

  test(`${LOGINS} sign-ins in a row, each fetching discovery and JWKS, all succeed`, async () => {
    const outcomes = [];
    for (let i = 0; i < LOGINS; i += 1) {
      const client = new Client();
      const { final } = await client.navigate(site(`/_portcullis/login?provider=p${i}&rd=/in`), { headers: NAVIGATION_HEADERS });
      outcomes.push(`p${i}: ${final.status} ${new URL(final.url).pathname}`);
    }
    assert.deepEqual(outcomes, Array.from({ length: LOGINS }, (_, i) => `p${i}: 200 /in`));
    // Every provider fetched its own discovery document and keys from the HTTP/1.0 server.
    assert.ok(docs.requests() >= 2 * LOGINS, `${docs.requests()} requests`);
    const retries = events(gw, (e) => e.event === 'idp_fetch_retry').length;
    console.log(`# ${docs.requests()} requests to the HTTP/1.0 server, ${retries} retried after a lost connection`);
  });
});
