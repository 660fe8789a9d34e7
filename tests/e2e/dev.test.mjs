// The README's "your own IdP and origin" path: `make dev PORTCULLIS_CONFIG_FILE=…
// PORTCULLIS_SECRETS_FILE=…` keeps serving until stopped, and a person signs in through it
// against their own IdP (here oidc-provider) to their own origin.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, loginViaOp } from './lib/client.mjs';
import { freePort, REPO_ROOT } from './lib/gateway.mjs';
import { startOp } from './peers/op.mjs';
import { startOrigin } from './peers/origin.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('make dev with an own configuration', () => {
  let op;
  let origin;
  let dev;
  let port;
  let tmp;
  let output = '';
  let exited = null;

  before(async () => {
    port = await freePort();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-dev-'));
    origin = await startOrigin();
    const clientSecret = crypto.randomBytes(16).toString('hex');
    op = await startOp({
      clients: [{
        client_id: 'my-gateway',
        client_secret: clientSecret,
        redirect_uris: [`http://localhost:${port}/_portcullis/oidc/callback`],
      }],
    });
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    // What an operator writes: a configuration file and a dotenv file with its secrets.
    const config = {
      gateway: {
        issuer: `http://localhost:${port}`,
        cookie_keys: [{ id: 'k1', secret: 'MY_COOKIE_KEY' }],
        assertion_keys: [{ id: 'a1', secret: 'MY_ASSERTION_KEY' }],
      },
      tenants: [{
        id: 'mine', name: 'Mine', hosts: ['localhost'], origin: origin.url,
        providers: [{
          type: 'oidc', name: 'my-idp', label: 'My IdP', issuer: op.issuer,
          client_id: 'my-gateway', client_secret: 'MY_CLIENT_SECRET',
        }],
      }],
    };
    fs.writeFileSync(path.join(tmp, 'my-config.json'), JSON.stringify(config, null, 2));
    fs.writeFileSync(path.join(tmp, 'my-secrets.env'), [
      `MY_COOKIE_KEY=${crypto.randomBytes(48).toString('base64')}`,
      `MY_ASSERTION_KEY=${privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64')}`,
      `MY_CLIENT_SECRET=${clientSecret}`,
      '',
    ].join('\n'));

    const env = { ...process.env, PORTCULLIS_PORT: String(port), PORTCULLIS_STATE_DIR: path.join(tmp, 'state'), PORTCULLIS_SKIP_BUILD: '1' };
    delete env.NODE_TEST_CONTEXT;
    // The README's command, from the repository's root, in its own process group.
    dev = spawn('make', ['dev', `PORTCULLIS_CONFIG_FILE=${tmp}/my-config.json`, `PORTCULLIS_SECRETS_FILE=${tmp}/my-secrets.env`], {
      cwd: REPO_ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    });
    dev.on('exit', (code, signal) => { exited = { code, signal }; });
    for (const s of [dev.stdout, dev.stderr]) s.on('data', (d) => { output += d; });
    const deadline = Date.now() + 240_000;
    while (!output.includes('Portcullis is running') && exited === null && Date.now() < deadline) await sleep(200);
    assert.ok(output.includes('Portcullis is running'), `make dev did not start:\n${output}`);
  });

  after(async () => {
    if (dev && exited === null) {
      try { process.kill(-dev.pid, 'SIGINT'); } catch { /* gone */ }
      for (let i = 0; i < 50 && exited === null; i += 1) await sleep(100);
      try { process.kill(-dev.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await op?.close();
    await origin?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('keeps serving after printing that it runs, and a person signs in through it', async () => {
    await sleep(3000);
    assert.equal(exited, null, `make dev exited:\n${output}`);
    const health = await fetch(`http://127.0.0.1:${port}/_portcullis/health`);
    assert.equal(health.status, 200);
    const client = new Client();
    const { final } = await loginViaOp(client, `http://localhost:${port}/_portcullis/login?provider=my-idp&rd=/hello`);
    assert.equal(final.status, 200, final.text);
    const seen = final.json();
    assert.equal(seen.path, '/hello');
    assert.equal(seen.headers['x-portcullis-user'], `${op.issuer}/alice`);
  });

  test('prints its steps with their durations', () => {
    assert.match(output, /setup: \d+\.\d s/);
    assert.match(output, /build: \d+\.\d s/);
  });

  test('stops with Ctrl-C (SIGINT to its process group)', async () => {
    process.kill(-dev.pid, 'SIGINT');
    for (let i = 0; i < 100 && exited === null; i += 1) await sleep(100);
    assert.notEqual(exited, null, 'still running after SIGINT');
    const down = await fetch(`http://127.0.0.1:${port}/_portcullis/health`).then(() => 'up', () => 'down');
    assert.equal(down, 'down');
  });
});
