// Configuration that reaches production: a file bundled at build time (no 5 KB limit), the
// PORTCULLIS_CONFIG variable as a [vars] table, the refusal of both at once, and the
// packaging dry run of each wrangler environment.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { REPO_ROOT, startGateway } from './lib/gateway.mjs';
import { gatewaySecrets, gatewaySection } from './lib/fixtures.mjs';

const run = promisify(execFile);
const WRANGLER = path.join(REPO_ROOT, 'node_modules', '.bin', 'wrangler');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-deploy-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A configuration with `n` tenants (one provider each); `n = 40` is about 16 KB. */
function bigConfig(n) {
  const tenants = [];
  for (let i = 0; i < n; i += 1) {
    tenants.push({
      id: `t${i}`, name: `Tenant ${i}`, hosts: [i === 0 ? 'localhost' : `app${i}.example.com`],
      origin: 'https://origin.example.com',
      public_paths: [{ path: '/healthz', match: 'exact' }, { path: '/static/', match: 'prefix' }],
      groups: { map: { engineering: ['eng'] }, roles: { superuser: ['admins'] } },
      providers: [{
        type: 'oidc', name: 'corp', label: `Corp SSO ${i}`, issuer: 'https://idp.example.com',
        client_id: `client-${i}`, client_secret: 'CLIENT_SECRET',
      }],
    });
  }
  return { $schema: '../docs/config.schema.json', gateway: gatewaySection(), tenants };
}

/** A wrangler.toml in `dir` whose entry imports `configModule` and the built worker. */
function workerDir(name, configModule, extraToml = '') {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.mjs'), configModule);
  const shim = path.join(REPO_ROOT, 'build', 'worker', 'shim.mjs');
  // The repository's entry, with this directory's configuration module.
  const entry = fs.readFileSync(path.join(REPO_ROOT, 'src', 'entry.mjs'), 'utf8')
    .replace("'../build/config.mjs'", "'./config.mjs'")
    .replaceAll("'../build/worker/shim.mjs'", JSON.stringify(shim));
  fs.writeFileSync(path.join(dir, 'entry.mjs'), entry);
  fs.writeFileSync(path.join(dir, 'wrangler.toml'), `name = "portcullis-${name}"
main = "entry.mjs"
compatibility_date = "2025-09-01"
[[kv_namespaces]]
binding = "PORTCULLIS_KV"
id = "00000000000000000000000000000000"
${extraToml}`);
  return path.join(dir, 'wrangler.toml');
}

/** A value as a TOML inline value (tables as inline tables). */
function toml(v) {
  if (Array.isArray(v)) return `[${v.map(toml).join(', ')}]`;
  if (v && typeof v === 'object') return `{ ${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)} = ${toml(x)}`).join(', ')} }`;
  return JSON.stringify(v);
}

describe('where the configuration comes from', () => {
  const secrets = gatewaySecrets({ CLIENT_SECRET: 'client-secret' });

  test('a bundled file far above the 5 KB variable limit is served', async () => {
    const text = JSON.stringify(bigConfig(40));
    assert.ok(text.length > 5 * 1024 * 3, `${text.length} bytes`);
    const wranglerConfig = workerDir('bundled', `export default ${JSON.stringify(text)};\n`);
    const gw = await startGateway({ config: null, secrets, wranglerConfig, cwd: path.dirname(wranglerConfig) });
    try {
      const health = await fetch(`${gw.url}/_portcullis/health`);
      assert.equal(health.status, 200, await health.text());
      const login = await fetch(`http://localhost:${gw.port}/_portcullis/login`, { headers: { accept: 'text/html' } });
      assert.match(await login.text(), /Corp SSO 0/);
    } finally {
      await gw.stop();
    }
  });

  test('a bundled file and the variable at once: refused with a sentence', async () => {
    const wranglerConfig = workerDir('both', `export default ${JSON.stringify(JSON.stringify(bigConfig(1)))};\n`);
    const gw = await startGateway({ config: bigConfig(1), secrets, wranglerConfig, cwd: path.dirname(wranglerConfig) });
    try {
      const health = await fetch(`${gw.url}/_portcullis/health`);
      assert.equal(health.status, 503);
      await gw.waitForLog(/config_invalid/);
      await gw.waitForLog(/PORTCULLIS_CONFIG: is set, but a configuration file is also bundled/);
    } finally {
      await gw.stop();
    }
  });

  test('a [vars] table in wrangler.toml is the configuration', async () => {
    const wranglerConfig = workerDir('vars-table', 'export default null;\n', `[vars]\nPORTCULLIS_CONFIG = ${toml(bigConfig(2))}\n`);
    const gw = await startGateway({ config: null, secrets, wranglerConfig, cwd: path.dirname(wranglerConfig) });
    try {
      const health = await fetch(`${gw.url}/_portcullis/health`);
      assert.equal(health.status, 200, `${await health.text()}\n${gw.logs.join('\n')}`);
    } finally {
      await gw.stop();
    }
  });

  test('a [vars] entry of another type: refused with a sentence', async () => {
    const wranglerConfig = workerDir('vars-number', 'export default null;\n', '[vars]\nPORTCULLIS_CONFIG = 42\n');
    const gw = await startGateway({ config: null, secrets, wranglerConfig, cwd: path.dirname(wranglerConfig) });
    try {
      assert.equal((await fetch(`${gw.url}/_portcullis/health`)).status, 503);
      await gw.waitForLog(/PORTCULLIS_CONFIG: is a number/);
    } finally {
      await gw.stop();
    }
  });
});

describe('wrangler deploy --dry-run, each environment', () => {
  const dryRun = async (env) => {
    const outdir = path.join(tmp, `dry-run-${env || 'top'}`);
    const { stdout, stderr } = await run(WRANGLER, ['deploy', '--dry-run', ...(env ? ['--env', env] : []), '--outdir', outdir], {
      cwd: REPO_ROOT,
      env: { ...process.env, PORTCULLIS_SKIP_BUILD: '1', WRANGLER_SEND_METRICS: 'false', CI: 'true', NODE_TEST_CONTEXT: '' },
      maxBuffer: 16 * 1024 * 1024,
    });
    const bundle = fs.readdirSync(outdir).filter((f) => f.endsWith('.js') || f.endsWith('.mjs'))
      .map((f) => fs.readFileSync(path.join(outdir, f), 'utf8')).join('\n');
    return { out: stdout + stderr, bundle };
  };

  // The top level last: it bundles no file, as `make dev` and the tests need.
  for (const env of ['staging', 'production', '']) {
    test(`${env || 'top level'}: builds, checks and packages${env ? ` config/${env}.json` : ' without a file'}`, async () => {
      const { out, bundle } = await dryRun(env);
      assert.match(out, /--dry-run: exiting now/);
      assert.match(out, /PORTCULLIS_KV/);
      assert.match(out, /PORTCULLIS_COORDINATOR/);
      if (env) {
        const issuer = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'config', `${env}.json`), 'utf8')).gateway.issuer;
        assert.ok(bundle.includes(issuer.replaceAll('/', '\\/')) || bundle.includes(issuer), `the ${env} bundle lacks ${issuer}`);
        assert.match(out, new RegExp(`config/${env}.json: ok`));
      } else {
        assert.doesNotMatch(bundle, /acme\.example/);
      }
    });
  }

  test('a configuration with errors stops the build with each error and its path', async () => {
    const bad = path.join(tmp, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ gateway: { prefix: 'x' }, tenants: [] }));
    const r = await run('bash', ['scripts/build.sh', '--config', bad], {
      cwd: REPO_ROOT, env: { ...process.env, PORTCULLIS_SKIP_BUILD: '1' },
    }).then(() => ({ code: 0 }), (e) => e);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /gateway\.prefix: must start with '\/'/);
    assert.match(r.stderr, /tenants: at least one tenant is required/);
    assert.equal(fs.readFileSync(path.join(REPO_ROOT, 'build', 'config.mjs'), 'utf8'), 'export default null;\n');
  });
});
