// Peers run as child processes, for settings that are process-wide (an IdP on a wrong
// clock), and a look at the memory of the workerd process behind a `wrangler dev`.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './gateway.mjs';

const OP_CLI = path.join(REPO_ROOT, 'tests', 'e2e', 'peers', 'op.mjs');

/**
 * Starts tests/e2e/peers/op.mjs in its own process with CLI `args` (e.g. ['--clock-skew',
 * '300', '--client-id', …]); resolves with { issuer, close }.
 */
export async function startOpProcess(args) {
  const child = spawn(process.execPath, [OP_CLI, '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.unref();
  const stop = () => { try { child.kill('SIGKILL'); } catch { /* gone */ } };
  process.once('exit', stop);
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const issuer = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`OP process did not start: ${err}`)), 20_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^(http:\/\/\S+)\n/m);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => reject(new Error(`OP process exited (${code}): ${err}`)));
  });
  return {
    issuer,
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      stop();
    },
  };
}

function children(pid) {
  const out = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch { /* exited meanwhile */ }
  }
  return out;
}

/** Pid of the workerd process started by a gateway's `wrangler dev` (null if not found). */
export function workerdPid(gw) {
  const queue = [gw.child.pid];
  while (queue.length) {
    const pid = queue.shift();
    for (const c of children(pid)) {
      try {
        const exe = fs.readlinkSync(`/proc/${c}/exe`);
        const comm = fs.readFileSync(`/proc/${c}/comm`, 'utf8').trim();
        if (comm === 'workerd' || path.basename(exe) === 'workerd') return c;
      } catch { /* exited meanwhile */ }
      queue.push(c);
    }
  }
  return null;
}

/** Resident set size of a process in MiB (VmRSS), or null. */
export function rssMiB(pid) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}
