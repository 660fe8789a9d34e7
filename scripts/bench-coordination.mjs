#!/usr/bin/env node
// The cost of the coordination Durable Object on the hot path, in workerd (wrangler dev).
//
//   node scripts/bench-coordination.mjs [REQUESTS=1500]
//
// Signs in once through a real OP, then sends REQUESTS sequential authenticated requests in
// three set-ups and prints p50/p99 for each:
//   kv-miss   gateway.coordination = kv,   session_cache_ttl = 0: every request reads KV
//   do-miss   the Durable Object bound,    session_cache_ttl = 0: KV read + object check
//   do-hit    the Durable Object bound,    session_cache_ttl = 10: cached, no I/O at all
// do-miss minus kv-miss is the object check; do-hit is what almost every request pays in
// production (a miss happens once per session per isolate per cache interval).
// Needs the worker built (bash scripts/build.sh). Not part of the test suite.
import { performance } from 'node:perf_hooks';
import { Client, loginViaOp } from '../tests/e2e/lib/client.mjs';
import { freePort, startGateway } from '../tests/e2e/lib/gateway.mjs';
import { gatewaySecrets, gatewaySection, oidcProvider } from '../tests/e2e/lib/fixtures.mjs';
import { startOp } from '../tests/e2e/peers/op.mjs';
import { startOrigin } from '../tests/e2e/peers/origin.mjs';

const N = Number(process.argv[2] ?? 1500);

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function run(name, { coordination, cacheTtl }) {
  const port = await freePort();
  const origin = await startOrigin();
  const op = await startOp({ clients: [{ client_id: 'gw', client_secret: 'gw-secret', redirect_uris: [`http://localhost:${port}/_portcullis/oidc/callback`] }] });
  const gw = await startGateway({
    port,
    config: {
      gateway: gatewaySection({ coordination, session_cache_ttl: cacheTtl }),
      tenants: [{ id: 'acme', hosts: ['localhost'], origin: origin.url, providers: [oidcProvider('corp', op, 'gw', { refresh: false })] }],
    },
    secrets: gatewaySecrets({ SECRET_CORP: 'gw-secret' }),
  });
  try {
    const client = new Client();
    const { final } = await loginViaOp(client, `http://localhost:${port}/_portcullis/login?provider=corp&rd=/x`);
    if (final.status !== 200) throw new Error(`sign-in failed: ${final.status}`);
    const url = `http://localhost:${port}/bench`;
    const headers = { accept: 'application/json' };
    for (let i = 0; i < 100; i += 1) await client.get(url, { headers });
    const times = [];
    for (let i = 0; i < N; i += 1) {
      const t = performance.now();
      const r = await client.get(url, { headers });
      times.push(performance.now() - t);
      if (r.status !== 200) throw new Error(`${name}: request ${i} answered ${r.status}`);
    }
    times.sort((a, b) => a - b);
    return { name, p50: pct(times, 50), p99: pct(times, 99) };
  } finally {
    await gw.stop();
    await op.close();
    await origin.close();
  }
}

const results = [];
results.push(await run('kv-miss', { coordination: 'kv', cacheTtl: 0 }));
results.push(await run('do-miss', { coordination: 'auto', cacheTtl: 0 }));
results.push(await run('do-hit', { coordination: 'auto', cacheTtl: 10 }));
console.log(`${N} sequential authenticated requests each, wrangler dev (workerd, local KV and Durable Object)`);
for (const r of results) console.log(`${r.name.padEnd(8)} p50 ${r.p50.toFixed(2)} ms   p99 ${r.p99.toFixed(2)} ms`);
const [kv, dm] = results;
console.log(`object check on a cache miss: +${(dm.p50 - kv.p50).toFixed(2)} ms p50, +${(dm.p99 - kv.p99).toFixed(2)} ms p99`);
