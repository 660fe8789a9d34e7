#!/usr/bin/env node
// Load through the gateway in workerd: a mix of requests with valid sessions (forwarded to
// the origin), forged or tampered session cookies (refused with 401) and sign-in starts
// (302, each writing pre-login state to KV). Reports throughput, statuses, 5xx answers and
// the resident memory of the workerd process before and after; with --ttl-check it then
// waits past the pre-login state TTL (60 s) and counts the state entries left in KV.
//
//   node scripts/load.mjs [--requests 20000] [--concurrency 32] [--ttl-check]
//
// Needs the worker built (bash scripts/build.sh). The pieces are exported for the e2e test
// tests/e2e/load.test.mjs.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client, loginViaOp } from '../tests/e2e/lib/client.mjs';
import { REPO_ROOT, freePort, startGateway } from '../tests/e2e/lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider } from '../tests/e2e/lib/fixtures.mjs';
import { rssMiB, workerdPid } from '../tests/e2e/lib/processes.mjs';
import { startOp } from '../tests/e2e/peers/op.mjs';
import { startOrigin } from '../tests/e2e/peers/origin.mjs';

const SESSION = '__Host-portcullis_session';

/** Starts an origin, an OP and the gateway; signs `sessions` users in. */
export async function startStack({ sessions = 5, loginStateTtl = 60 } = {}) {
  const port = await freePort();
  const site = (p) => `http://localhost:${port}${p}`;
  const origin = await startOrigin();
  const op = await startOp({ clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [site('/_portcullis/oidc/callback')] }] });
  const gw = await startGateway({
    port,
    config: {
      gateway: gatewaySection({ login_state_ttl: loginStateTtl, login_rate_limit: { burst: 1, per_minute: 0 } }),
      tenants: [{ id: 'acme', name: 'Acme', hosts: ['localhost'], origin: origin.url, providers: [oidcProvider('corp', op, 'gw')] }],
    },
    secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret' }),
  });
  const cookies = [];
  for (let i = 0; i < sessions; i += 1) {
    const client = new Client();
    const { final } = await loginViaOp(client, site('/_portcullis/login?provider=corp&rd=/'), { login: `load${i}` });
    if (final.status !== 200) throw new Error(`sign-in for the load run failed: ${final.status}`);
    cookies.push(client.cookies('localhost')[SESSION]);
  }
  return {
    gw, op, origin, site, cookies,
    async stop() {
      await gw.stop();
      await op.close();
      await origin.close();
    },
  };
}

function forgedCookie(valid, i) {
  switch (i % 3) {
    case 0: return crypto.randomBytes(48).toString('base64url');
    case 1: { // a real cookie with one character changed
      const last = valid.at(-1) === 'A' ? 'B' : 'A';
      return valid.slice(0, -1) + last;
    }
    default: return `${valid.split('.')[0]}.${crypto.randomBytes(32).toString('base64url')}`;
  }
}

/**
 * Sends `total` requests with `concurrency` in flight: 50% valid sessions, 30% forged
 * cookies, 20% sign-in starts. Resolves with counts by kind and status.
 */
export async function runLoad({ site, cookies, total = 10_000, concurrency = 32 }) {
  const byStatus = {};
  const unexpected = [];
  let errors = 0;
  let next = 0;
  const expected = { session: 200, forged: 401, login: 302 };
  const one = async (i) => {
    const r = i % 10;
    const kind = r < 5 ? 'session' : r < 8 ? 'forged' : 'login';
    const valid = cookies[i % cookies.length];
    const headers = { accept: 'application/json' };
    let url = site(`/load/${i}`);
    if (kind === 'session') headers.cookie = `${SESSION}=${valid}`;
    if (kind === 'forged') headers.cookie = `${SESSION}=${forgedCookie(valid, i)}`;
    if (kind === 'login') url = site(`/_portcullis/login?provider=corp&rd=/load/${i}`);
    try {
      const res = await fetch(url, { headers, redirect: 'manual', signal: AbortSignal.timeout(30_000) });
      await res.arrayBuffer();
      const key = `${kind} ${res.status}`;
      byStatus[key] = (byStatus[key] ?? 0) + 1;
      if (res.status !== expected[kind] && unexpected.length < 10) unexpected.push({ kind, status: res.status });
    } catch (e) {
      errors += 1;
      if (unexpected.length < 10) unexpected.push({ kind, error: String(e.cause?.code ?? e.message) });
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next;
      next += 1;
      await one(i);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  const fivexx = Object.entries(byStatus).filter(([k]) => / 5\d\d$/.test(k)).reduce((a, [, n]) => a + n, 0);
  return { requests: total, concurrency, seconds: Number(seconds.toFixed(2)), rps: Math.round(total / seconds), byStatus, fivexx, errors, unexpected };
}

/** Pre-login state keys in the gateway's local KV (wrangler's local persistence). */
export function stateKeyCount(gw) {
  const bin = path.join(REPO_ROOT, 'node_modules', '.bin', 'wrangler');
  const r = spawnSync(bin, ['kv', 'key', 'list', '--binding', 'PORTCULLIS_KV', '--local', '--persist-to', gw.stateDir, '--prefix', 'state:'], {
    cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' }, maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`wrangler kv key list failed: ${r.stderr}`);
  return JSON.parse(r.stdout.slice(r.stdout.indexOf('['))).length;
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  const total = opt('--requests', 20_000);
  const concurrency = opt('--concurrency', 32);
  const stack = await startStack();
  try {
    const pid = workerdPid(stack.gw);
    const rssBefore = rssMiB(pid);
    const result = await runLoad({ site: stack.site, cookies: stack.cookies, total, concurrency });
    const rssAfter = rssMiB(pid);
    const report = { ...result, workerd_pid: pid, rss_mib_before: rssBefore, rss_mib_after: rssAfter };
    if (args.includes('--ttl-check')) {
      report.state_keys_after_run = stateKeyCount(stack.gw);
      await new Promise((r) => setTimeout(r, 75_000));
      report.state_keys_75s_later = stateKeyCount(stack.gw);
      report.rss_mib_75s_later = rssMiB(pid);
    }
    console.log(JSON.stringify(report, null, 2));
    if (result.fivexx || result.errors) process.exitCode = 1;
  } finally {
    await stack.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
