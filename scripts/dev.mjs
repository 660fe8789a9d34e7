// Runs the gateway for local use: the demo stack, or an operator's own configuration.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startGateway } from '../tests/e2e/lib/gateway.mjs';
import { startOp } from '../tests/e2e/peers/op.mjs';
import { startOrigin } from '../tests/e2e/peers/origin.mjs';

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: process.env.PORTCULLIS_CONFIG_FILE || '' },
    secrets: { type: 'string', default: process.env.PORTCULLIS_SECRETS_FILE || '' },
    port: { type: 'string', default: process.env.PORTCULLIS_PORT || '8787' },
    state: { type: 'string', default: process.env.PORTCULLIS_STATE_DIR || '.wrangler/state' },
  },
});
const port = Number(values.port);
const stateDir = path.resolve(values.state);
const stops = [];

function parseDotenv(text) {
  const out = {};
  for (const line of text.split(/\r?\n/)) {
    const m = line.match(/^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)\s*$/);
    if (!m) continue;
    let v = m[2];
    if ((v.startsWith("'") && v.endsWith("'")) || (v.startsWith('"') && v.endsWith('"'))) v = v.slice(1, -1);
    out[m[1]] = v;
  }
  return out;
}

/** Secrets of the demo, kept across runs so sessions survive a restart. */
function demoSecrets() {
  const file = path.join(stateDir, 'demo-secrets.json');
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const secrets = {
    DEMO_COOKIE_KEY: crypto.randomBytes(48).toString('base64'),
    DEMO_ASSERTION_KEY: privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
    DEMO_CLIENT_SECRET: crypto.randomBytes(24).toString('base64url'),
  };
  fs.mkdirSync(stateDir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  return secrets;
}

async function demo() {
  const secrets = demoSecrets();
  const origin = await startOrigin({ port: 9100 });
  stops.push(() => origin.close());
  const hosts = ['localhost', '127.0.0.1'];
  const op = await startOp({
    port: 9000,
    clients: [{
      client_id: 'portcullis-demo',
      client_secret: secrets.DEMO_CLIENT_SECRET,
      redirect_uris: hosts.map((h) => `http://${h}:${port}/_portcullis/oidc/callback`),
      post_logout_redirect_uris: hosts.map((h) => `http://${h}:${port}/_portcullis/logged-out`),
    }],
  });
  stops.push(() => op.close());
  const config = {
    gateway: {
      issuer: `http://localhost:${port}`,
      cookie_keys: [{ id: 'demo1', secret: 'DEMO_COOKIE_KEY' }],
      assertion_keys: [{ id: 'demo-a1', secret: 'DEMO_ASSERTION_KEY' }],
    },
    tenants: [{
      id: 'demo',
      name: 'Portcullis demo',
      hosts,
      origin: origin.url,
      public_paths: [{ path: '/healthz', match: 'exact' }],
      // The demo shows the whole flow: IdP sign-in, then TOTP enrolment or a code.
      mfa: { required: true, step_up: [{ path: '/admin', match: 'prefix', max_age: 300 }] },
      groups: { map: { admins: ['administrators'] }, roles: { superuser: ['admins'], staff: ['engineering'] } },
      providers: [{
        type: 'oidc',
        name: 'demo',
        label: 'Demo IdP',
        background: '#24292f',
        color: '#ffffff',
        issuer: op.issuer,
        client_id: 'portcullis-demo',
        client_secret: 'DEMO_CLIENT_SECRET',
        scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
      }],
    }],
  };
  return { config, secrets, banner: [
    `Demo IdP:     ${op.issuer}  (any user name and password; try alice = admin, bob = marketing)`,
    'Second factor: required; the first sign-in shows a QR code for any authenticator app',
    '               (or compute codes: oathtool --totp -b THE-KEY-SHOWN). /admin asks again after 5 min.',
    `Demo origin:  ${origin.url}  (shows the headers it receives)`,
  ] };
}

async function own() {
  const configPath = path.resolve(values.config);
  const config = fs.readFileSync(configPath, 'utf8');
  const secrets = values.secrets ? parseDotenv(fs.readFileSync(path.resolve(values.secrets), 'utf8')) : {};
  return { config, secrets, banner: [`Configuration: ${configPath}`] };
}

const { config, secrets, banner } = values.config ? await own() : await demo();
const gw = await startGateway({ config, secrets, port, persistDir: stateDir, echo: true });
stops.push(() => gw.stop());
console.log([
  '',
  '  Portcullis is running.',
  `  Gateway:      http://localhost:${port}/   (health: /_portcullis/health)`,
  ...banner.map((l) => `  ${l}`),
  '  Stop with Ctrl-C.',
  '',
].join('\n'));

let stopping = false;
async function shutdown(code = 0) {
  if (stopping) return;
  stopping = true;
  for (const stop of stops.reverse()) {
    try { await stop(); } catch { /* already gone */ }
  }
  process.exit(code);
}
process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));
// startGateway lets a test process exit with a gateway still running; here the gateway is
// the point: keep serving until Ctrl-C (with its own configuration nothing else, no demo
// IdP or origin, holds this process open), and stop when wrangler stops by itself.
gw.child.ref();
gw.child.once('exit', (code, signal) => {
  if (stopping) return;
  console.error(`wrangler dev stopped (${signal ?? `exit code ${code}`}); last lines:\n${gw.logs.slice(-20).join('\n')}`);
  shutdown(1);
});
