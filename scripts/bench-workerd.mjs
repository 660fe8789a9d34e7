// Benchmarks in the real runtime (workerd, via wrangler dev), reported in BENCHMARKS.md:
//  1. core operations inside the isolate: the bench build's POST /_portcullis/bench runs an
//     operation N times; time(N) - time(0), divided by N, is the cost per operation;
//  2. the same ID-token and cookie checks in a small JavaScript Worker using `jose`;
//  3. end to end on loopback: the origin directly, through the gateway with a session,
//     and unauthenticated requests being redirected (requests/s, p50, p99).
// Run: node scripts/bench-workerd.mjs  (after `bash scripts/build.sh -d build-bench --features bench`)
// Optional comparisons that are not dependencies of this repository: SAMLIFY_DIR (samlify)
// and BENCH_PYTHON (python3-saml); BENCH_ONLY=ops|saml|saml_parts|load runs one section.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { SAML } from '@node-saml/node-saml';
// Installed with @node-saml/node-saml (its XML-DSig layer), not a direct dependency.
import { SignedXml } from 'xml-crypto';
import { DOMParser } from '@xmldom/xmldom';
import { Client, loginViaOp } from '../tests/e2e/lib/client.mjs';
import { REPO_ROOT, freePort, startGateway } from '../tests/e2e/lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider } from '../tests/e2e/lib/fixtures.mjs';
import { startOp } from '../tests/e2e/peers/op.mjs';
import { startOrigin } from '../tests/e2e/peers/origin.mjs';

const N = Number(process.env.BENCH_N || 200);
// BENCH_ONLY=ops|saml|saml_parts|load runs one section (default: all).
const only = (section) => !process.env.BENCH_ONLY || process.env.BENCH_ONLY === section;
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function request(url, { method = 'GET', headers = {}, body, keepAlive = true } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: keepAlive ? agent : false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

async function timeOp(url, op, n, input) {
  const body = JSON.stringify({ op, n, input });
  const t0 = process.hrtime.bigint();
  // A fresh connection each time (its setup cost cancels out in time(N) - time(0)): an
  // idle keep-alive connection may have been closed by the server in between.
  const r = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', host: 'localhost' }, body, keepAlive: false });
  const t1 = process.hrtime.bigint();
  if (r.status !== 200) throw new Error(`${op}: ${r.status} ${r.body}`);
  return Number(t1 - t0) / 1e6;
}

/** Per-operation cost in µs: median over rounds of (time(N) - time(0)) / N. */
async function perOp(url, op, input) {
  await timeOp(url, op, 20, input);
  const samples = [];
  for (let round = 0; round < 5; round += 1) {
    const empty = await timeOp(url, op, 0, input);
    const full = await timeOp(url, op, N, input);
    samples.push(((full - empty) * 1000) / N);
  }
  samples.sort((a, b) => a - b);
  return samples[2];
}

async function load(url, headers, { total = 4000, concurrency = 16 } = {}) {
  const latencies = [];
  let next = 0;
  const statuses = new Map();
  const t0 = process.hrtime.bigint();
  async function worker() {
    while (next < total) {
      next += 1;
      const s = process.hrtime.bigint();
      const r = await request(url, { headers });
      latencies.push(Number(process.hrtime.bigint() - s) / 1e6);
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  latencies.sort((a, b) => a - b);
  const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  return { rps: total / seconds, p50: q(0.5), p99: q(0.99), statuses: Object.fromEntries(statuses) };
}

/** The same Response validated by @node-saml/node-saml in this process (median of 5 x N). */
async function nodeSaml(input) {
  const saml = new SAML({
    idpCert: input.cert, issuer: input.sp, audience: input.sp, callbackUrl: input.acs,
    wantAssertionsSigned: true, wantAuthnResponseSigned: false, acceptedClockSkewMs: 60_000,
  });
  const body = { SAMLResponse: input.response };
  const { profile } = await saml.validatePostResponseAsync(body);
  if (profile?.nameID !== 'alice@example.com') throw new Error('node-saml did not validate the response');
  const samples = [];
  for (let round = 0; round < 5; round += 1) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i += 1) await saml.validatePostResponseAsync(body);
    samples.push(Number(process.hrtime.bigint() - t0) / 1000 / N);
  }
  samples.sort((a, b) => a - b);
  return samples[2];
}

/**
 * samlify, when it can be loaded: it is not a dependency of this repository; install it
 * anywhere (`npm install --prefix /tmp/samlify samlify@2.13.1`) and pass SAMLIFY_DIR=/tmp/samlify.
 * XML schema validation is switched off (samlify asks for a validator module), so this is
 * less work than samlify does in use.
 */
async function loadSamlify() {
  try {
    if (process.env.SAMLIFY_DIR) {
      const { createRequire } = await import('node:module');
      return createRequire(path.join(process.env.SAMLIFY_DIR, 'node_modules', 'x.js'))('samlify');
    }
    return await import('samlify');
  } catch {
    return null;
  }
}

async function samlifyTime(samlify, input) {
  samlify.setSchemaValidator({ validate: async () => 'skipped' });
  const { redirect, post } = samlify.Constants.namespace.binding;
  const idp = samlify.IdentityProvider({
    entityID: input.idp, signingCert: input.cert, singleSignOnService: [{ Binding: redirect, Location: 'https://idp.example.com/sso' }],
  });
  const sp = samlify.ServiceProvider({
    entityID: input.sp, wantAssertionsSigned: true, assertionConsumerService: [{ Binding: post, Location: input.acs }],
  });
  const body = { SAMLResponse: input.response };
  const { extract } = await sp.parseLoginResponse(idp, 'post', { body });
  if (extract?.nameID !== 'alice@example.com') throw new Error('samlify did not validate the response');
  const samples = [];
  for (let round = 0; round < 5; round += 1) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i += 1) await sp.parseLoginResponse(idp, 'post', { body });
    samples.push(Number(process.hrtime.bigint() - t0) / 1000 / N);
  }
  samples.sort((a, b) => a - b);
  return samples[2];
}

/** xml-crypto alone (parse + XML-DSig check of the assertion's signature, no SAML checks). */
function xmlCrypto(input) {
  const xml = Buffer.from(input.response, 'base64').toString();
  const check = () => {
    const doc = new DOMParser().parseFromString(xml, 'text/xml');
    const sig = doc.getElementsByTagNameNS('http://www.w3.org/2000/09/xmldsig#', 'Signature')[0];
    const sx = new SignedXml({ publicCert: input.cert });
    sx.loadSignature(sig);
    return sx.checkSignature(xml);
  };
  if (!check()) throw new Error('xml-crypto did not verify the response');
  const samples = [];
  for (let round = 0; round < 5; round += 1) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i += 1) check();
    samples.push(Number(process.hrtime.bigint() - t0) / 1000 / N);
  }
  samples.sort((a, b) => a - b);
  return samples[2];
}

async function tokens() {
  const now = Math.floor(Date.now() / 1000);
  const out = {};
  for (const [alg, opts] of [['RS256', { modulusLength: 2048 }], ['ES256', {}], ['EdDSA', { crv: 'Ed25519' }]]) {
    const { publicKey, privateKey } = await generateKeyPair(alg, { ...opts, extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg };
    const token = await new SignJWT({ nonce: 'n-1', email: 'alice@example.com' })
      .setProtectedHeader({ alg, kid: 'k1' }).setIssuer('https://idp.test').setSubject('alice')
      .setAudience('client').setIssuedAt(now).setExpirationTime(now + 3600).sign(privateKey);
    out[alg] = { token, jwks: { keys: [jwk] }, issuer: 'https://idp.test', client_id: 'client', nonce: 'n-1', now };
  }
  return out;
}

function samlInput(file) {
  const dir = path.join(REPO_ROOT, 'tests/fixtures/saml');
  return {
    response: fs.readFileSync(path.join(dir, 'signed', file)).toString('base64'),
    cert: fs.readFileSync(path.join(dir, 'keys/idp-rsa.crt'), 'utf8'),
    idp: 'https://idp.example.com/metadata', sp: 'https://sp.example.com/saml/metadata',
    acs: 'https://sp.example.com/saml/acs', in_response_to: '_req-6c1e8f4a', now: 1_900_000_000,
  };
}

const results = [];
const report = (name, value, unit = 'µs/op') => {
  results.push({ name, value, unit });
  console.log(`${name.padEnd(64)} ${value.toFixed(1).padStart(10)} ${unit}`);
};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-bench-'));
const benchMain = path.join(REPO_ROOT, 'build-bench', 'index.js');
if (!fs.existsSync(benchMain)) throw new Error('build the bench worker first: bash scripts/build.sh -d build-bench --features bench');
const wranglerConfig = path.join(tmp, 'wrangler.toml');
fs.writeFileSync(wranglerConfig, `name = "portcullis-bench"\nmain = "${benchMain}"\ncompatibility_date = "2025-09-01"\n[[kv_namespaces]]\nbinding = "PORTCULLIS_KV"\nid = "00000000000000000000000000000000"\n`);

const stops = [];
try {
  const origin = await startOrigin();
  stops.push(() => origin.close());
  const port = await freePort();
  const op = await startOp({ clients: [{ client_id: 'bench', client_secret: 'bench-secret', redirect_uris: [`http://localhost:${port}/_portcullis/oidc/callback`] }] });
  stops.push(() => op.close());
  const gw = await startGateway({
    port, wranglerConfig,
    config: {
      gateway: gatewaySection(),
      tenants: [{ id: 'bench', hosts: ['localhost'], origin: origin.url, providers: [oidcProvider('corp', op, 'bench', { refresh: false })] }],
    },
    secrets: gatewaySecrets({ SECRET_CORP: 'bench-secret' }),
  });
  stops.push(() => gw.stop());
  const jose = await startGateway({ config: '{}', wranglerConfig: path.join(REPO_ROOT, 'bench/jose-worker/wrangler.toml') }).catch(() => null);
  if (jose) stops.push(() => jose.stop());

  const benchUrl = `http://localhost:${port}/_portcullis/bench`;
  console.log(`workerd, per operation inside the isolate (N=${N}, median of 5 rounds)`);
  const toks = await tokens();
  for (const alg of only('ops') ? ['RS256', 'ES256', 'EdDSA'] : []) {
    report(`Portcullis (wasm, pure Rust): ID token verify ${alg}`, await perOp(benchUrl, 'id_token', toks[alg]));
    report(`Portcullis (wasm + WebCrypto port, as deployed): ID token verify ${alg}`, await perOp(benchUrl, 'id_token_port', toks[alg]));
    if (jose) report(`jose (JS, WebCrypto): ID token verify ${alg}`, await perOp(`${jose.url}/bench`, 'id_token', toks[alg]));
  }
  if (only('ops')) {
    report('Portcullis (wasm): session cookie verify', await perOp(benchUrl, 'cookie', {}));
    if (jose) report('jose worker (WebCrypto HMAC): session cookie verify', await perOp(`${jose.url}/bench`, 'cookie', {}));
    report('Portcullis (wasm): TOTP verify', await perOp(benchUrl, 'totp', { now: Math.floor(Date.now() / 1000) }));
  }
  // BENCH_ONLY=saml_parts: what the 40 KB Response's parse+verify is made of, each part alone.
  if (only('saml_parts')) {
    const input = samlInput('bench-40k.xml');
    report('Portcullis (wasm): base64 + parse of the 40 KB Response', await perOp(benchUrl, 'saml_parse', input));
    report('Portcullis (wasm): Exclusive C14N of the whole 40 KB document', await perOp(benchUrl, 'saml_c14n', input));
    report('Portcullis (wasm): SHA-256 of that canonical form', await perOp(benchUrl, 'saml_digest', input));
  }
  const samlFiles = [['bench-4k.xml', '4 KB'], ['bench-8k.xml', '8 KB'], ['bench-40k.xml', '40 KB']];
  const samlify = only('saml') ? await loadSamlify() : null;
  if (only('saml') && !samlify) console.log('(samlify not found: set SAMLIFY_DIR to include it)');
  for (const [file, size] of only('saml') ? samlFiles : []) {
    const input = samlInput(file);
    report(`Portcullis (wasm, pure-Rust RSA): SAML Response parse+verify, ${size}`, await perOp(benchUrl, 'saml', input));
    report(`Portcullis (wasm + WebCrypto port, as deployed): same, ${size}`, await perOp(benchUrl, 'saml_port', input));
    report(`@node-saml/node-saml (Node ${process.versions.node}): same Response, ${size}`, await nodeSaml(input));
    report(`xml-crypto (Node): parse + signature check only, ${size}`, xmlCrypto(input));
    if (samlify) report(`samlify (Node, schema validation off): same Response, ${size}`, await samlifyTime(samlify, input));
  }

  // python3-saml, when BENCH_PYTHON names a Python that has it (see scripts/bench-python3-saml.py).
  if (only('saml') && process.env.BENCH_PYTHON) {
    const { spawnSync } = await import('node:child_process');
    const py = spawnSync(process.env.BENCH_PYTHON, [path.join(REPO_ROOT, 'scripts/bench-python3-saml.py')], {
      env: { ...process.env, BENCH_N: String(N) }, encoding: 'utf8',
    });
    if (py.status !== 0) throw new Error(`python3-saml benchmark failed: ${py.stderr}`);
    process.stdout.write(py.stdout);
  }

  // End to end on loopback (through wrangler dev; scripts/bench-serve.mjs serves the worker
  // with plain workerd).
  if (!only('load')) throw Object.assign(new Error('done'), { done: true });
  const client = new Client();
  const { final } = await loginViaOp(client, `http://localhost:${port}/_portcullis/login?provider=corp&rd=/`);
  if (final.status !== 200) throw new Error(`login failed: ${final.status}`);
  const cookie = client.cookieHeaderFor(`http://localhost:${port}/`);
  console.log('\nend to end on loopback (4000 requests, 16 concurrent)');
  const direct = await load(`${origin.url}/page`, {});
  const through = await load(`http://localhost:${port}/page`, { cookie, host: `localhost:${port}` });
  const redirect = await load(`http://localhost:${port}/page`, { accept: 'text/html', 'sec-fetch-mode': 'navigate', host: `localhost:${port}` });
  for (const [name, r] of [['origin directly', direct], ['through the gateway, valid session', through], ['unauthenticated, redirected to login', redirect]]) {
    console.log(`${name.padEnd(40)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  ${JSON.stringify(r.statuses)}`);
  }
  console.log(`gateway added latency (p50): ${(through.p50 - direct.p50).toFixed(2)} ms`);
} catch (e) {
  if (!e.done) throw e;
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
  agent.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
}
