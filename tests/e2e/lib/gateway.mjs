// Starts the Portcullis worker under `wrangler dev` (real workerd) for
// end-to-end tests.
//
//   const gw = await startGateway({ config, secrets: { PORTCULLIS_SESSION_KEY: '…' } });
//   await fetch(`${gw.url}/_portcullis/health`);
//   await gw.stop();
//
// The configuration document and the secrets are handed to the worker through
// an env file (`wrangler dev --env-file`), which wrangler exposes to the worker
// as plain `env.NAME` string bindings. When --env-file is given, wrangler does
// not read a local `.dev.vars`/`.env`, so a developer's own files never leak
// into a test run.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const WRANGLER_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'wrangler');
const DEFAULT_READY_TIMEOUT_MS = 60_000;

const running = new Set();

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    try { child.kill(signal); } catch { /* already gone */ }
  }
}

function killAllSync() {
  for (const g of running) {
    killGroup(g.child, 'SIGKILL');
    g.cleanupSync();
  }
  running.clear();
}

process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killAllSync();
    process.exit(128 + os.constants.signals[sig]);
  });
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Quote a value for the env file so that wrangler's dotenv + dotenv-expand
 * parsing returns it byte for byte:
 *  - single quotes (or backticks) keep the text literal, including `#`, `=`, `"`,
 *    backslashes and newlines; the chosen quote must not occur in the value;
 *  - dotenv-expand still expands `$NAME` / `${NAME}` inside quotes, and turns
 *    `\$` into `$`, so every `$` is written as `\$`.
 */
export function envFileQuote(value) {
  const v = String(value);
  if (v.includes('\r')) throw new Error('env file values cannot contain a carriage return');
  const escaped = v.replace(/\$/g, '\\$');
  for (const q of ["'", '`']) {
    if (!v.includes(q) && !escaped.endsWith('\\')) return `${q}${escaped}${q}`;
  }
  throw new Error(`value cannot be written to an env file safely: ${JSON.stringify(v.slice(0, 80))}`);
}

/** The compact JSON text of the configuration, safe for envFileQuote. */
export function configText(config) {
  if (typeof config === 'string') return config;
  let text = JSON.stringify(config);
  // A quote character can only occur inside JSON strings, where \u0027 is an
  // equivalent spelling; used only when both quote styles appear.
  if (text.includes("'") && text.includes('`')) text = text.replace(/'/g, '\\u0027');
  return text;
}

export function buildEnvFile(vars) {
  const lines = [];
  for (const [name, value] of Object.entries(vars)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`invalid variable name ${name}`);
    if (value === undefined || value === null) continue;
    lines.push(`${name}=${envFileQuote(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

// Lines wrangler prints because the sandbox has no route to the internet
// (the Request.cf metadata download). Fetching is disabled through
// CLOUDFLARE_CF_FETCH_ENABLED=false; the filter stays as a safety net.
function makeNoiseFilter() {
  let inTrace = false;
  return (line) => {
    if (/Unable to fetch the `Request\.cf` object/.test(line)) {
      inTrace = true;
      return false;
    }
    if (inTrace) {
      if (/getaddrinfo ENOTFOUND|^\s+at\s|^\s*$/.test(line)) return false;
      inTrace = false;
    }
    return true;
  };
}

function parseJsonInLine(line) {
  const start = line.indexOf('{');
  const end = line.lastIndexOf('}');
  if (start < 0 || end <= start) return undefined;
  try {
    const v = JSON.parse(line.slice(start, end + 1));
    return v && typeof v === 'object' && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;

/**
 * Start the worker in `wrangler dev`.
 *
 * @param {object} opts
 * @param {object|string|null} opts.config  configuration document (PORTCULLIS_CONFIG);
 *   serialised as compact JSON unless already a string; null: the variable is not set
 * @param {Record<string,string>} [opts.secrets]  further env bindings (secrets)
 * @param {number} [opts.port=0]  0 picks a free port
 * @param {string} [opts.persistDir]  wrangler state (KV) directory; pass the same
 *   directory to a later startGateway to keep KV contents across restarts;
 *   default: a fresh temporary directory
 * @param {string} [opts.cwd]  directory wrangler runs in (default: repository root)
 * @param {string} [opts.wranglerConfig]  alternative wrangler config file (-c)
 * @param {string[]} [opts.extraArgs]  additional `wrangler dev` arguments
 * @param {string} [opts.logLevel='log']  wrangler --log-level; 'log' is the
 *   lowest level that still shows the worker's console.log output ('info'
 *   drops console.log but keeps console.info/warn/error)
 * @param {number} [opts.readyTimeoutMs=60000]
 * @param {boolean} [opts.echo]  mirror the worker output to this process's stderr
 *   (default: when PORTCULLIS_E2E_ECHO=1)
 */
export async function startGateway(opts = {}) {
  // A port picked as free can be taken by another process before workerd binds
  // it; retry with a new port in that case (only when the caller chose none).
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startOnce(opts);
    } catch (e) {
      if (opts.port || attempt >= 3 || !/Address already in use/.test(e.message)) throw e;
    }
  }
}

async function startOnce({
  config,
  secrets = {},
  port = 0,
  persistDir,
  cwd = REPO_ROOT,
  wranglerConfig,
  extraArgs = [],
  logLevel = 'log',
  readyTimeoutMs = DEFAULT_READY_TIMEOUT_MS,
  echo = process.env.PORTCULLIS_E2E_ECHO === '1',
} = {}) {
  if (config === undefined) throw new Error('startGateway: config is required');
  if (!wranglerConfig && cwd === REPO_ROOT && !fs.existsSync(path.join(REPO_ROOT, 'build', 'worker', 'shim.mjs'))) {
    throw new Error('build/worker/shim.mjs is missing: build the worker first (bash scripts/build.sh)');
  }

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-e2e-'));
  const envFile = path.join(tmp, 'gateway.env');
  // config === null: no PORTCULLIS_CONFIG at all (a bundled file or [vars] provides it).
  const document = config === null ? null : configText(config);
  fs.writeFileSync(envFile, buildEnvFile({ PORTCULLIS_CONFIG: document, ...secrets }), { mode: 0o600 });
  const stateDir = persistDir ?? path.join(tmp, 'state');
  // miniflare keeps scratch files in the temporary directory and cannot remove
  // them when killed; keep them inside our own directory.
  const childTmp = path.join(tmp, 'tmp');
  fs.mkdirSync(childTmp);

  const listenPort = port || await freePort();
  const inspectorPort = await freePort();
  const args = [
    'dev',
    ...(wranglerConfig ? ['-c', wranglerConfig] : []),
    '--ip', '127.0.0.1',
    '--port', String(listenPort),
    '--inspector-port', String(inspectorPort),
    '--env-file', envFile,
    '--persist-to', stateDir,
    '--show-interactive-dev-session=false',
    '--log-level', logLevel,
    ...extraArgs,
  ];

  const env = {
    ...process.env,
    PORTCULLIS_SKIP_BUILD: '1',
    WRANGLER_SEND_METRICS: 'false',
    CI: 'true',
    CLOUDFLARE_CF_FETCH_ENABLED: 'false',
    CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: 'true',
    CLOUDFLARE_INCLUDE_PROCESS_ENV: 'false',
    NO_COLOR: '1',
    FORCE_COLOR: '0',
    TMPDIR: childTmp,
  };
  // Values in the test process's environment must not shadow the env file.
  delete env.PORTCULLIS_CONFIG;
  // Set by `node --test` for its own child processes; not meant for wrangler.
  delete env.NODE_TEST_CONTEXT;
  for (const name of Object.keys(secrets)) delete env[name];

  const child = spawn(WRANGLER_BIN, args, {
    cwd,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  // A gateway that a test forgot to stop must not keep the test process alive;
  // the 'exit' handler above then kills it.
  child.unref();
  child.stdout.unref?.();
  child.stderr.unref?.();

  const logs = [];
  const waiters = new Set();
  const keep = makeNoiseFilter();
  let exited = false;
  let exitInfo = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = true;
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });

  const onLine = (rawLine) => {
    const line = rawLine.replace(ANSI_RE, '');
    if (!keep(line) || line.trim() === '') return;
    logs.push(line);
    if (echo) process.stderr.write(`[gateway:${listenPort}] ${line}\n`);
    for (const w of waiters) w(line, logs.length - 1);
  };
  for (const stream of [child.stdout, child.stderr]) {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i).replace(/\r$/, ''));
        buf = buf.slice(i + 1);
      }
    });
    stream.on('end', () => {
      if (buf) onLine(buf);
      buf = '';
    });
  }

  const handle = {
    url: `http://127.0.0.1:${listenPort}`,
    port: listenPort,
    logs,
    envFile,
    stateDir,
    child,
    /** Index to pass as `fromIndex` to waitForLog/logLines to look only at later lines. */
    mark() {
      return logs.length;
    },
    /**
     * JSON objects found in log lines (the first `{` to the last `}` of each line),
     * optionally filtered by `predicate(obj, line)`.
     */
    logLines(predicate = () => true, { fromIndex = 0 } = {}) {
      const out = [];
      for (let i = fromIndex; i < logs.length; i += 1) {
        const obj = parseJsonInLine(logs[i]);
        if (obj !== undefined && predicate(obj, logs[i])) out.push(obj);
      }
      return out;
    },
    /**
     * Resolve with the first log line (at index >= fromIndex) matching `regex`,
     * waiting up to `timeoutMs` for it to appear.
     */
    waitForLog(regex, timeoutMs = 10_000, { fromIndex = 0 } = {}) {
      for (let i = fromIndex; i < logs.length; i += 1) {
        if (regex.test(logs[i])) return Promise.resolve(logs[i]);
      }
      return new Promise((resolve, reject) => {
        let timer;
        const waiter = (line, index) => {
          if (index >= fromIndex && regex.test(line)) {
            clearTimeout(timer);
            waiters.delete(waiter);
            resolve(line);
          }
        };
        timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for log ${regex}; last lines:\n${logs.slice(-20).join('\n')}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    /** Stop wrangler and workerd (the whole process group) and wait for exit. */
    async stop() {
      running.delete(handle);
      if (!exited) {
        killGroup(child, 'SIGTERM');
        const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5_000);
        await exitPromise;
        clearTimeout(timer);
        // workerd may outlive the wrangler process for a moment.
        killGroup(child, 'SIGKILL');
      }
      handle.cleanupSync();
    },
    /**
     * Remove the temporary directory (env file, and the state directory unless
     * the caller supplied persistDir, which lives elsewhere and is kept).
     */
    cleanupSync() {
      // workerd may still be writing its state for a moment after SIGKILL.
      for (let i = 0; i < 20 && fs.existsSync(tmp); i += 1) {
        try {
          fs.rmSync(tmp, { recursive: true, force: true });
        } catch {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        }
      }
    },
  };
  running.add(handle);

  // Wait for wrangler to report the address it listens on (it may differ from
  // the requested port when that port was taken), then for the health
  // endpoint to answer (any HTTP status).
  const deadline = Date.now() + readyTimeoutMs;
  const fail = async (why) => {
    await handle.stop();
    throw new Error(`gateway did not start: ${why}\n${logs.slice(-40).join('\n')}`);
  };
  let readyLine;
  try {
    readyLine = await Promise.race([
      handle.waitForLog(/Ready on https?:\/\/[^\s]+/, readyTimeoutMs),
      exitPromise.then((info) => { throw new Error(`wrangler dev exited early (${JSON.stringify(info)})`); }),
    ]);
  } catch (e) {
    return fail(e.message.split('\n')[0]);
  }
  const readyUrl = new URL(readyLine.match(/Ready on (https?:\/\/[^\s]+)/)[1]);
  if (readyUrl.port && Number(readyUrl.port) !== listenPort) {
    handle.port = Number(readyUrl.port);
    handle.url = `http://127.0.0.1:${handle.port}`;
  }
  let lastError;
  while (Date.now() < deadline) {
    if (exited) return fail(`wrangler dev exited early (${JSON.stringify(exitInfo)})`);
    try {
      await fetch(`${handle.url}/_portcullis/health`, { signal: AbortSignal.timeout(2_000), redirect: 'manual' })
        .then((r) => r.arrayBuffer());
      return handle;
    } catch (e) {
      lastError = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return fail(`not ready within ${readyTimeoutMs} ms (${lastError?.cause?.code ?? lastError?.message})`);
}
