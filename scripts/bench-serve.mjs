// The built worker served by plain `workerd serve` (no wrangler, no dev proxy), measured on
// loopback. Reported in BENCHMARKS.md. Not part of `make test`.
//
//   node scripts/bench-serve.mjs [latency|cold|memory|all]   (default: all)
//
// Build first: `bash scripts/build.sh` (serves build/; PORTCULLIS_BENCH_BUILD=build-bench
// serves the bench build instead).
//
// What runs:
//  - workerd: node_modules/workerd's binary with a generated config.capnp (temporary
//    directory): the worker's modules from the build, PORTCULLIS_CONFIG and the secrets as
//    text bindings, PORTCULLIS_KV bound to an in-memory KV service (below), and outbound
//    fetch allowed to loopback addresses;
//  - a peer process (this file with --peer): a constant-response origin (200, 2 bytes) and
//    the KV service, speaking the protocol workerd's KV binding uses (GET/PUT/DELETE /key,
//    GET / to list), kept outside workerd so that workerd's memory is the gateway's alone;
//  - in this process: the OIDC provider of the end-to-end tests (one real sign-in makes the
//    session record the others are copied from) and the load generator (node:http,
//    keep-alive connections).
//
// Modes:
//  - latency: requests/s, p50, p99 for the origin directly, through the gateway with a valid
//    (cached) session, and unauthenticated (302 to the login page), beside a JavaScript
//    worker in the same workerd doing the same without the gateway; 16 connections as fast
//    as they go, 16 connections paced at a fixed rate, then one connection (sequential);
//    workerd's CPU per request from /proc/PID/stat (the whole process: HTTP, JS glue, wasm,
//    the fetch to the origin); with the bench build, first the core's own time per request;
//  - cold: a fresh workerd process each time: spawn -> listening, the first request's
//    latency (isolate's first request: configuration loaded and validated), and a second
//    request for comparison; 10 times, medians;
//  - memory: 100,000 requests against one workerd (valid sessions from a pool of 25,000
//    distinct sessions, one hot session, invalid cookies, no cookie), workerd's VmRSS, the
//    JS heap and (bench build) the wasm memory every 10,000 requests; then a control run
//    through a JavaScript worker;
//  - profile: a V8 CPU profile of the request path, self time per function.
//
// Knobs (environment): BENCH_REQUESTS (latency rows, profile), BENCH_RATE (the paced rows,
// default 1000 req/s), BENCH_COLD_RUNS, BENCH_MEMORY_REQUESTS, BENCH_MEMORY_SESSIONS,
// BENCH_SESSION_CACHE_SIZE, BENCH_MEMORY_CONTROL=0, BENCH_PROFILE_PATH=redirect,
// BENCH_PROFILE_COLD=1, BENCH_ECHO=1 (workerd's output), BENCH_V8_FLAGS (below),
// BENCH_COLD_PROBE=handler|environment|json|deserialise|load (bench build: the first request
// stops after that stage of the configuration's load; see src/shell.rs, bench_probe).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..');
const PREFIX = '/_portcullis';
const TENANT = 'bench';

// ---------------------------------------------------------------------------------------
// Peer process: origin + KV service
// ---------------------------------------------------------------------------------------

function runPeer() {
  const kv = new Map(); // key -> { value: Buffer, expiration: seconds | undefined }
  const origin = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
      res.end('ok');
    });
  });
  const kvServer = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://kv.invalid');
      const raw = url.pathname.slice(1);
      const key = url.searchParams.get('urlencoded') === 'true' ? decodeURIComponent(raw) : raw;
      const now = Date.now() / 1000;
      const live = (k) => {
        const e = kv.get(k);
        if (e && e.expiration !== undefined && e.expiration <= now) {
          kv.delete(k);
          return undefined;
        }
        return e;
      };
      if (req.method === 'GET' && url.pathname === '/') {
        const prefix = url.searchParams.get('prefix') ?? '';
        const limit = Number(url.searchParams.get('limit') ?? 1000);
        const keys = [...kv.keys()].filter((k) => k.startsWith(prefix) && live(k)).sort().slice(0, limit);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keys: keys.map((name) => ({ name })), list_complete: true, cacheStatus: null }));
      } else if (req.method === 'GET') {
        const e = live(key);
        if (!e) {
          res.writeHead(404).end('Not Found');
        } else {
          res.writeHead(200).end(e.value);
        }
      } else if (req.method === 'PUT') {
        const ttl = url.searchParams.get('expiration_ttl');
        const exp = url.searchParams.get('expiration');
        const expiration = ttl ? now + Number(ttl) : exp ? Number(exp) : undefined;
        kv.set(key, { value: Buffer.concat(chunks), expiration });
        res.writeHead(200).end();
      } else if (req.method === 'DELETE') {
        kv.delete(key);
        res.writeHead(200).end();
      } else {
        res.writeHead(405).end();
      }
    });
  });
  origin.keepAliveTimeout = 60_000;
  kvServer.keepAliveTimeout = 60_000;
  origin.listen(0, '127.0.0.1', () => {
    kvServer.listen(0, '127.0.0.1', () => {
      process.stdout.write(`${JSON.stringify({ origin: origin.address().port, kv: kvServer.address().port })}\n`);
    });
  });
}


// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function workerdBinary() {
  const candidates = [
    path.join(REPO_ROOT, 'node_modules/@cloudflare/workerd-linux-64/bin/workerd'),
    path.join(REPO_ROOT, 'node_modules/workerd/bin/workerd'),
  ];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error('workerd binary not found in node_modules (run bash scripts/setup.sh)');
  return found;
}

/** The worker's modules as workerd config entries; files are copied into `dir`. */
function workerModules(buildDir, dir) {
  // worker-build's output: index.js (the main module, importing ./index_bg.wasm) and the
  // wasm; build/worker/shim.mjs only re-exports index.js.
  if (!fs.existsSync(path.join(buildDir, 'index.js'))) {
    throw new Error(`${buildDir}/index.js is missing: build first (bash scripts/build.sh)`);
  }
  const files = fs.readdirSync(buildDir).filter((f) => /\.(m?js|wasm)$/.test(f))
    .sort((a, b) => (a === 'index.js' ? -1 : b === 'index.js' ? 1 : a.localeCompare(b)));
  return files.map((f) => {
    fs.copyFileSync(path.join(buildDir, f), path.join(dir, f));
    return `(name = "${f}", ${f.endsWith('.wasm') ? 'wasm' : 'esModule'} = embed "${f}")`;
  });
}

const capnpString = (s) => JSON.stringify(s); // capnp text strings use C-style escapes, as JSON does

// The same runtime work without the gateway: a JavaScript worker that proxies every
// request to the origin unchanged, or answers with a fixed redirect (?redirect).
const BASELINE_WORKER = `export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.searchParams.has('redirect')) {
      return new Response(null, { status: 302, headers: { location: '/_portcullis/login?rd=%2F', 'cache-control': 'no-store' } });
    }
    return fetch(new Request(env.ORIGIN + url.pathname + url.search, request));
  },
};
`;

// BENCH_V8_FLAGS="--flag --other": V8 flags for workerd's isolates (for diagnosis only, e.g.
// --no-wasm-lazy-compilation to see how much of a first request is compiling wasm).
function v8Flags() {
  const flags = (process.env.BENCH_V8_FLAGS ?? '').split(/\s+/).filter(Boolean);
  return flags.length ? `\n  v8Flags = [${flags.map(capnpString).join(', ')}],` : '';
}

function writeConfig(dir, { buildDir, port, baselinePort, kvPort, originPort, vars }) {
  const modules = workerModules(buildDir, dir);
  fs.writeFileSync(path.join(dir, 'baseline.mjs'), BASELINE_WORKER);
  const bindings = Object.entries(vars).map(([name, value]) => `(name = ${capnpString(name)}, text = ${capnpString(value)})`);
  bindings.push('(name = "PORTCULLIS_KV", kvNamespace = "kv")');
  const config = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (${v8Flags()}
  services = [
    (name = "main", worker = .gateway),
    (name = "baseline", worker = (
      modules = [ (name = "baseline.mjs", esModule = embed "baseline.mjs") ],
      compatibilityDate = "2025-09-01",
      bindings = [ (name = "ORIGIN", text = "http://127.0.0.1:${originPort}") ],
      globalOutbound = "internet",
    )),
    (name = "kv", external = (address = "127.0.0.1:${kvPort}", http = ())),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:${port}", http = (), service = "main"),
    (name = "baseline", address = "127.0.0.1:${baselinePort}", http = (), service = "baseline"),
  ],
);
const gateway :Workerd.Worker = (
  modules = [
    ${modules.join(',\n    ')}
  ],
  compatibilityDate = "2025-09-01",
  bindings = [
    ${bindings.join(',\n    ')}
  ],
  globalOutbound = "internet",
);
`;
  const file = path.join(dir, 'config.capnp');
  fs.writeFileSync(file, config, { mode: 0o600 });
  return file;
}

function startWorkerd(configFile, { echo = process.env.BENCH_ECHO === '1', inspectorPort } = {}) {
  const extra = inspectorPort ? [`--inspector-addr=127.0.0.1:${inspectorPort}`] : [];
  const child = spawn(workerdBinary(), ['serve', configFile, '--experimental', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  for (const s of [child.stdout, child.stderr]) {
    s.setEncoding('utf8');
    s.on('data', (d) => {
      logs.push(d);
      if (logs.length > 200) logs.shift();
      if (echo) process.stderr.write(`[workerd] ${d}`);
    });
  }
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    pid: child.pid,
    logs,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/** Resolves once something accepts connections on the port (polling every 2 ms). */
async function waitListening(port, deadlineMs = 20_000, exited) {
  const end = Date.now() + deadlineMs;
  let dead = false;
  exited?.then(() => { dead = true; });
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (dead) throw new Error('workerd exited before listening');
    if (Date.now() > end) throw new Error(`nothing listening on ${port}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A Chrome DevTools Protocol session with the worker's isolate (workerd --inspector-addr). */
async function inspect(inspectorPort, service = 'main') {
  const { default: WebSocket } = await import('ws');
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const target = targets.find((t) => t.id === service || t.title === service) ?? targets[0];
  if (process.env.BENCH_ECHO === '1') console.error(JSON.stringify(targets));
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  let seq = 0;
  const pending = new Map();
  ws.on('message', (m) => {
    const msg = JSON.parse(m);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  });
  return {
    send: (method, params = {}) => new Promise((resolve) => {
      seq += 1;
      pending.set(seq, resolve);
      ws.send(JSON.stringify({ id: seq, method, params }));
    }),
    close: () => ws.close(),
  };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function request(port, pathName, headers = {}, { useAgent = agent, method = 'GET', body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathName, method, headers, agent: useAgent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function cpuSeconds(pid) {
  // /proc/PID/stat: utime and stime are fields 14 and 15, in clock ticks (100 per second).
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssKiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) : NaN;
}

/** `total` requests over `concurrency` keep-alive connections; `pick(i)` gives [path, headers]. */
async function load(port, pick, { total, concurrency, pid, expect, onProgress, rate }) {
  const latencies = new Float64Array(total);
  const statuses = new Map();
  const useAgent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const t0 = process.hrtime.bigint();
  async function worker() {
    while (next < total) {
      const i = next;
      next += 1;
      if (rate) {
        // Paced (open loop): request i starts at i / rate seconds, not as soon as a
        // connection is free, so the latency is measured below saturation.
        const due = t0 + BigInt(Math.round((i * 1e9) / rate));
        const wait = Number(due - process.hrtime.bigint()) / 1e6;
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const [p, h] = pick(i);
      const s = process.hrtime.bigint();
      const r = await request(port, p, h, { useAgent });
      latencies[i] = Number(process.hrtime.bigint() - s) / 1e6;
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (expect && !expect(r, i)) throw new Error(`unexpected answer to request ${i} (${p}): ${r.status} ${r.body.slice(0, 200)}`);
      if (onProgress) await onProgress(i + 1);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN;
  useAgent.destroy();
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  return {
    rps: total / seconds, p50: q(0.5), p99: q(0.99), statuses: Object.fromEntries(statuses),
    cpuPerRequestMs: (cpu * 1000) / total,
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// Session cookies made the way src/session.rs makes them, for copies of a real session.
function hmacParts(key, parts) {
  const mac = crypto.createHmac('sha256', key);
  for (const p of parts) {
    const b = Buffer.from(p);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(b.length));
    mac.update(len);
    mac.update(b);
  }
  return mac.digest();
}

function sessionCookie(cookieKeyId, cookieKeySecret, tenant, id) {
  const derived = hmacParts(Buffer.from(cookieKeySecret), ['portcullis-kdf', 'cookie']);
  const mac = hmacParts(derived, ['session', tenant, id]).toString('base64url');
  return `v1.${cookieKeyId}.${id}.${mac}`;
}

const sessionKvKey = (tenant, id) => `sess:${tenant}:${crypto.createHash('sha256').update(id).digest('hex')}`;

// ---------------------------------------------------------------------------------------
// Setup shared by the modes
// ---------------------------------------------------------------------------------------

async function startPeer() {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--peer'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ports = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) resolve(JSON.parse(buf.slice(0, i)));
    });
    child.once('exit', (code) => reject(new Error(`peer exited (${code})`)));
  });
  return { ...ports, stop: () => child.kill('SIGTERM') };
}

async function main() {
  const mode = process.argv[2] ?? 'all';
  if (!['latency', 'cold', 'memory', 'all', 'profile'].includes(mode)) {
    console.error('usage: node scripts/bench-serve.mjs [latency|cold|memory|all|profile]');
    process.exit(2);
  }
  const buildDir = path.resolve(REPO_ROOT, process.env.PORTCULLIS_BENCH_BUILD ?? 'build');
  const { startOp } = await import('../tests/e2e/peers/op.mjs');
  const { Client, loginViaOp } = await import('../tests/e2e/lib/client.mjs');
  const { gatewaySecrets, gatewaySection, oidcProvider } = await import('../tests/e2e/lib/fixtures.mjs');

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-serve-'));
  const stops = [];
  try {
    const peer = await startPeer();
    stops.push(async () => peer.stop());
    const port = await freePort();
    const host = `localhost:${port}`;
    const op = await startOp({ clients: [{ client_id: 'bench', client_secret: 'bench-secret', redirect_uris: [`http://${host}${PREFIX}/oidc/callback`] }] });
    stops.push(() => op.close());
    const secrets = gatewaySecrets({ SECRET_CORP: 'bench-secret' });
    const config = {
      gateway: gatewaySection(),
      tenants: [{ id: TENANT, hosts: ['localhost'], origin: `http://127.0.0.1:${peer.origin}`, providers: [oidcProvider('corp', op, 'bench', { refresh: false })] }],
    };
    const vars = { PORTCULLIS_CONFIG: JSON.stringify(config), ...secrets };
    const baselinePort = await freePort();
    const configFile = writeConfig(tmp, { buildDir, port, baselinePort, kvPort: peer.kv, originPort: peer.origin, vars });
    const start = () => startWorkerd(configFile);
    // The memory run may use another session cache bound (BENCH_SESSION_CACHE_SIZE).
    const cacheSize = Number(process.env.BENCH_SESSION_CACHE_SIZE || 0);
    const memoryConfig = cacheSize
      ? { ...config, gateway: { ...config.gateway, session_cache_size: cacheSize } }
      : config;
    const memoryDir = path.join(tmp, 'memory');
    fs.mkdirSync(memoryDir);
    const memoryConfigFile = writeConfig(memoryDir, {
      buildDir, port, baselinePort, kvPort: peer.kv, originPort: peer.origin,
      vars: { ...vars, PORTCULLIS_CONFIG: JSON.stringify(memoryConfig) },
    });

    console.log(`workerd ${workerdBinary().replace(REPO_ROOT + '/', '')}, worker from ${path.relative(REPO_ROOT, buildDir)}/, ${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

    // One real sign-in, through the OP, on a workerd that is then kept for the latency run.
    let wd = start();
    stops.push(() => wd.stop());
    await waitListening(port, 20_000, wd.exited);
    const client = new Client();
    const { final } = await loginViaOp(client, `http://${host}${PREFIX}/login?provider=corp&rd=/`);
    if (final.status !== 200) throw new Error(`sign-in failed: ${final.status} ${final.text?.slice(0, 300)}\n${wd.logs.join('')}`);
    const cookie = client.cookieHeaderFor(`http://${host}/`);
    const id = cookie.match(/__Host-portcullis_session=v1\.[^.]+\.([^.;]+)\./)?.[1];
    if (!id) throw new Error(`no session cookie after sign-in: ${cookie}`);
    const record = await request(peer.kv, `/${encodeURIComponent(sessionKvKey(TENANT, id))}?urlencoded=true`);
    if (record.status !== 200) throw new Error(`session record not found in KV (${record.status})`);
    if (sessionCookie('c1', secrets.COOKIE_KEY, TENANT, id) !== cookie.split('=')[1]) {
      throw new Error('cookie made here differs from the gateway\'s: src/session.rs changed?');
    }
    const sessionHeaders = { host, cookie };
    const navigation = { host, accept: 'text/html', 'sec-fetch-mode': 'navigate' };
    const isOrigin = (r) => r.status === 200 && r.body === 'ok';
    const isRedirect = (r) => r.status === 302 && r.headers.location?.startsWith(`${PREFIX}/login`);

    // With the bench build (PORTCULLIS_BENCH_BUILD=build-bench): the core's own time per
    // proxied request inside the isolate, (time of N runs - time of 0 runs) / N.
    const benchOp = async (n) => {
      const body = JSON.stringify({
        op: 'request', n,
        input: { record: JSON.parse(record.body), kv_key: sessionKvKey(TENANT, id), url: `http://${host}/page`, host, cookie },
      });
      const t0 = process.hrtime.bigint();
      const r = await request(port, `${PREFIX}/bench`, { host, 'content-type': 'application/json' }, { method: 'POST', body, useAgent: false });
      return { status: r.status, ms: Number(process.hrtime.bigint() - t0) / 1e6, body: r.body };
    };
    if ((mode === 'latency' || mode === 'all') && (await benchOp(0)).status === 200) {
      await benchOp(200);
      const perOp = [];
      for (let round = 0; round < 5; round += 1) {
        const empty = await benchOp(0);
        const full = await benchOp(1000);
        if (full.status !== 200) throw new Error(`bench op: ${full.status} ${full.body}`);
        perOp.push(((full.ms - empty.ms) * 1000) / 1000);
      }
      console.log(`\nthe core's part of a proxied request with a cached session, in the isolate (bench route, N=1000, median of 5): ${median(perOp).toFixed(1)} µs`);
    }

    if (mode === 'latency' || mode === 'all') {
      const total = Number(process.env.BENCH_REQUESTS || 5000);
      console.log(`\nlatency on loopback, workerd serve (${total} requests per row after 500 of warm-up; workerd CPU = its utime+stime / requests)`);
      const rows = [];
      const rate = Number(process.env.BENCH_RATE || 1000);
      for (const [concurrency, n, paced] of [[16, total], [16, total, rate], [1, Math.round(total / 2)]]) {
        const label = concurrency === 1 ? 'sequential' : paced ? `16 connections, paced at ${paced} req/s` : `${concurrency} concurrent`;
        for (const [name, p, pick, expect] of [
          ['origin directly', peer.origin, () => ['/page', {}], isOrigin],
          ['JS proxy worker in the same workerd (baseline)', baselinePort, () => ['/page', {}], isOrigin],
          ['through the gateway, valid session', port, () => ['/page', sessionHeaders], isOrigin],
          ['JS worker answering 302 (baseline)', baselinePort, () => ['/page?redirect', {}], isRedirect],
          ['unauthenticated, 302 to login', port, () => ['/page', navigation], isRedirect],
        ]) {
          await load(p, pick, { total: 500, concurrency, expect });
          const r = await load(p, pick, { total: n, concurrency, pid: p === peer.origin ? undefined : wd.pid, expect, rate: paced });
          rows.push({ name, label, ...r });
          const cpu = Number.isNaN(r.cpuPerRequestMs) ? '' : `  workerd CPU ${(r.cpuPerRequestMs * 1000).toFixed(0)} µs/request`;
          console.log(`${`${name}, ${label}`.padEnd(88)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms${cpu}`);
        }
        const direct = rows.find((r) => r.label === label && r.name === 'origin directly');
        const through = rows.find((r) => r.label === label && r.name.startsWith('through'));
        const proxy = rows.find((r) => r.label === label && r.name.startsWith('JS proxy'));
        console.log(`added by the gateway (${label}): p50 ${(through.p50 - direct.p50).toFixed(3)} ms, p99 ${(through.p99 - direct.p99).toFixed(3)} ms; by a JS proxy worker: p50 ${(proxy.p50 - direct.p50).toFixed(3)} ms`);
      }
    }

    if (mode === 'profile') {
      // V8's sampling profiler through workerd's inspector, over sequential requests with a
      // valid session; self time per function (wasm functions keep their Rust names).
      await wd.stop();
      const inspectorPort = await freePort();
      wd = startWorkerd(configFile, { inspectorPort });
      await waitListening(port, 20_000, wd.exited);
      await waitListening(inspectorPort, 20_000, wd.exited);
      const pathName = process.env.BENCH_PROFILE_PATH === 'redirect' ? ['/page', navigation] : ['/page', sessionHeaders];
      const cold = process.env.BENCH_PROFILE_COLD === '1';
      if (!cold) await load(port, () => pathName, { total: 500, concurrency: 1 });
      const cdp = await inspect(inspectorPort);
      const { send } = cdp;
      await send('Profiler.enable');
      await send('Profiler.setSamplingInterval', { interval: 50 });
      await send('Profiler.start');
      // BENCH_PROFILE_COLD=1: the isolate's first request alone.
      const n = cold ? 1 : Number(process.env.BENCH_REQUESTS || 5000);
      const r = await load(port, () => pathName, { total: n, concurrency: 1, pid: wd.pid });
      const { result } = await send('Profiler.stop');
      cdp.close();
      const { nodes, samples, timeDeltas } = result.profile;
      const byId = new Map(nodes.map((node) => [node.id, node]));
      const self = new Map();
      for (let i = 0; i < samples.length; i += 1) {
        const node = byId.get(samples[i]);
        const name = `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url ? `(${path.basename(node.callFrame.url)})` : ''}`.trim();
        self.set(name, (self.get(name) ?? 0) + (timeDeltas[i] ?? 0));
      }
      const totalUs = [...self.values()].reduce((a, b) => a + b, 0);
      const groups = new Map();
      for (const [name, us] of self) {
        const g = /\.wasm/.test(name) ? 'wasm (Rust: core, shell, worker crate)'
          : /\(index\.js\)/.test(name) ? 'wasm-bindgen JS glue (index.js)'
            : /^\((idle|program|garbage collector)\)/.test(name) ? name.replace(/ .*/, '')
              : 'runtime built-ins (Request, Response, fetch, streams, ...)';
        groups.set(g, (groups.get(g) ?? 0) + us);
      }
      console.log(`\nprofile of ${n} sequential requests (${process.env.BENCH_PROFILE_PATH === 'redirect' ? 'unauthenticated' : 'valid session'}); workerd CPU ${(r.cpuPerRequestMs * 1000).toFixed(0)} µs/request; self time per request:`);
      for (const [name, us] of [...groups.entries()].sort((a, b) => b[1] - a[1])) {
        console.log(`${(us / n).toFixed(1).padStart(8)} µs  ${((100 * us) / totalUs).toFixed(1).padStart(5)} %  ${name}`);
      }
      // Inclusive time (a function and everything it called), which shows where a cold
      // request's time goes better than self time: the first run of each wasm function pays
      // for its compilation in the function itself.
      const parentOf = new Map();
      for (const node of nodes) for (const c of node.children ?? []) parentOf.set(c, node.id);
      const inclusive = new Map();
      for (let i = 0; i < samples.length; i += 1) {
        const seen = new Set();
        for (let id = samples[i]; id !== undefined; id = parentOf.get(id)) {
          const name = byId.get(id).callFrame.functionName || '(anonymous)';
          if (!seen.has(name)) {
            seen.add(name);
            inclusive.set(name, (inclusive.get(name) ?? 0) + (timeDeltas[i] ?? 0));
          }
        }
      }
      console.log('inclusive time, heaviest 40:');
      for (const [name, us] of [...inclusive.entries()].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
        console.log(`${(us / n).toFixed(1).padStart(8)} µs  ${name.slice(0, 140)}`);
      }
      console.log('top functions:');
      for (const [name, us] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
        console.log(`${(us / n).toFixed(1).padStart(8)} µs  ${((100 * us) / totalUs).toFixed(1).padStart(5)} %  ${name.slice(0, 140)}`);
      }
    }

    if (mode === 'memory' || mode === 'all') {
      await wd.stop();
      const total = Number(process.env.BENCH_MEMORY_REQUESTS || 100_000);
      const pool = Number(process.env.BENCH_MEMORY_SESSIONS || 25_000);
      // Copies of the real session under new ids: each is a KV record and a signed cookie.
      const cookies = [];
      for (let i = 0; i < pool; i += 1) {
        const sid = crypto.randomBytes(32).toString('base64url');
        const put = await request(peer.kv, `/${encodeURIComponent(sessionKvKey(TENANT, sid))}?urlencoded=true`, {}, { method: 'PUT', body: record.body });
        if (put.status !== 200) throw new Error(`KV put failed: ${put.status}`);
        cookies.push(`__Host-portcullis_session=${sessionCookie('c1', secrets.COOKIE_KEY, TENANT, sid)}`);
      }
      const forged = `__Host-portcullis_session=${sessionCookie('c1', 'not-the-key', TENANT, crypto.randomBytes(32).toString('base64url'))}`;
      // 40 % distinct sessions (spread over the pool), 20 % one hot session, 15 % a forged
      // cookie, 5 % a malformed one, 20 % no cookie (API style: 401).
      const pick = (i) => {
        const r = i % 20;
        if (r < 8) return ['/page', { host, cookie: cookies[(i * 7919) % pool] }];
        if (r < 12) return ['/page', sessionHeaders];
        if (r < 15) return ['/page', { host, cookie: forged }];
        if (r < 16) return ['/page', { host, cookie: '__Host-portcullis_session=garbage' }];
        return ['/api/x', { host, accept: 'application/json' }];
      };
      const expect = (r, i) => (i % 20 < 12 ? isOrigin(r) : r.status === 401);
      // The control: the same number of requests, the same share proxied (60 %) and answered
      // in the worker (40 %), through the JavaScript baseline worker of a fresh workerd.
      const controlPick = (i) => (i % 20 < 12 ? ['/page', {}] : ['/page?redirect', {}]);
      const controlExpect = (r, i) => (i % 20 < 12 ? isOrigin(r) : isRedirect(r));

      const memoryRun = async (title, targetPort, inspectTarget, pickFn, expectFn) => {
        const inspectorPort = await freePort();
        wd = startWorkerd(memoryConfigFile, { inspectorPort });
        await waitListening(port, 20_000, wd.exited);
        await waitListening(inspectorPort, 20_000, wd.exited);
        const cdp = await inspect(inspectorPort, inspectTarget);
        const heap = async () => {
          const { result } = await cdp.send('Runtime.getHeapUsage');
          const js = result ? `JS heap ${(result.usedSize / 1048576).toFixed(1)} used / ${(result.totalSize / 1048576).toFixed(1)} MiB` : '';
          // With the bench build: the wasm instance's linear memory (where the caches live).
          if (targetPort !== port) return js;
          const r = await request(port, `${PREFIX}/bench`, { host, 'content-type': 'application/json' }, { method: 'POST', body: '{"op":"memory","n":0}', useAgent: false });
          const bytes = r.status === 200 ? JSON.parse(r.body).wasm_memory_bytes : undefined;
          return bytes ? `${js}, wasm memory ${(bytes / 1048576).toFixed(1)} MiB` : js;
        };
        console.log(`\n${title}; workerd VmRSS:`);
        const samples = [[0, rssKiB(wd.pid)]];
        console.log(`${String(0).padStart(7)} requests  ${(samples[0][1] / 1024).toFixed(1).padStart(6)} MiB  ${await heap()}`);
        const t0 = Date.now();
        const r = await load(targetPort, pickFn, {
          total, concurrency: 16, pid: wd.pid, expect: expectFn,
          onProgress: async (done) => {
            if (done % 10_000 === 0) {
              const kib = rssKiB(wd.pid);
              samples.push([done, kib]);
              console.log(`${String(done).padStart(7)} requests  ${(kib / 1024).toFixed(1).padStart(6)} MiB  ${await heap()}  (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
            }
          },
        });
        cdp.close();
        console.log(`statuses ${JSON.stringify(r.statuses)}, ${r.rps.toFixed(0)} req/s, workerd CPU ${(r.cpuPerRequestMs * 1000).toFixed(0)} µs/request`);
        const after = samples.filter(([n]) => n >= total / 2).map(([, k]) => k);
        console.log(`VmRSS over the second half (${total / 2000}k-${total / 1000}k requests): min ${(Math.min(...after) / 1024).toFixed(1)} MiB, max ${(Math.max(...after) / 1024).toFixed(1)} MiB`);
        await wd.stop();
      };
      await memoryRun(
        `memory: ${total} requests through the gateway, 16 concurrent, ${pool} distinct sessions (session_cache_size ${memoryConfig.gateway.session_cache_size ?? 10000})`,
        port, 'main', pick, expect,
      );
      if (process.env.BENCH_MEMORY_CONTROL !== '0') {
        await memoryRun(`control: ${total} requests through the JS baseline worker (60 % proxied, 40 % 302)`, baselinePort, 'baseline', controlPick, controlExpect);
      }
    }

    if (mode === 'cold' || mode === 'all') {
      await wd.stop();
      const runs = Number(process.env.BENCH_COLD_RUNS || 10);
      const ready = [];
      const first = [];
      const second = [];
      const total = [];
      const baselineFirst = [];
      for (let i = 0; i < runs; i += 1) {
        const t0 = process.hrtime.bigint();
        wd = start();
        await waitListening(port, 20_000, wd.exited);
        const t1 = process.hrtime.bigint();
        // BENCH_COLD_PROBE=STAGE (bench build): the first request stops after one stage of
        // the configuration's load (src/shell.rs, bench_probe) and answers the same redirect.
        const probe = process.env.BENCH_COLD_PROBE ? { 'x-portcullis-bench-probe': process.env.BENCH_COLD_PROBE } : {};
        const r1 = await request(port, '/page', { ...navigation, ...probe }, { useAgent: false });
        const t2 = process.hrtime.bigint();
        const r2 = await request(port, '/page', navigation, { useAgent: false });
        const t3 = process.hrtime.bigint();
        if (!isRedirect(r1) || !isRedirect(r2)) throw new Error(`cold start: unexpected ${r1.status}/${r2.status}`);
        // The JavaScript baseline worker's first request (its own isolate, also new).
        const t4 = process.hrtime.bigint();
        const r3 = await request(baselinePort, '/page?redirect', {}, { useAgent: false });
        baselineFirst.push(Number(process.hrtime.bigint() - t4) / 1e6);
        if (!isRedirect(r3)) throw new Error(`cold start: baseline answered ${r3.status}`);
        ready.push(Number(t1 - t0) / 1e6);
        first.push(Number(t2 - t1) / 1e6);
        second.push(Number(t3 - t2) / 1e6);
        total.push(Number(t2 - t0) / 1e6);
        await wd.stop();
      }
      console.log(`\ncold start, a fresh workerd process each time (${runs} runs, medians; min-max)`);
      const show = (name, xs) => console.log(`${name.padEnd(52)} ${median(xs).toFixed(1).padStart(7)} ms  (${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)})`);
      show('process start to listening (wasm compiled)', ready);
      show('first request (new isolate: config load, 302)', first);
      show('second request, same isolate, new connection', second);
      show('for comparison: a JS worker\'s first request (302)', baselineFirst);
      show('process start to first answered request', total);
      const wasm = fs.readdirSync(buildDir).find((f) => f.endsWith('.wasm'));
      if (wasm) {
        const bytes = fs.readFileSync(path.join(buildDir, wasm));
        const zlib = await import('node:zlib');
        const gz = zlib.gzipSync(bytes, { level: 9 }).length;
        console.log(`wasm ${wasm}: ${bytes.length} bytes raw, ${gz} bytes gzip -9 (${(gz / 1024 / 1024).toFixed(2)} MiB; limits: free 3 MiB, paid 10 MiB compressed)`);
      }
    }
  } finally {
    for (const stop of stops.reverse()) await Promise.resolve().then(stop).catch(() => {});
    agent.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--peer') {
  runPeer();
} else {
  await main();
}
