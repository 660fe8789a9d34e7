// `make dev` on a system it cannot set up stops with a sentence saying what to install,
// before doing anything else (scripts/setup.sh's checks, with a PATH that lacks the tool).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { REPO_ROOT } from './lib/gateway.mjs';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-setup-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A bin directory with `dirname` and the given fake tools (name -> shell body). */
function system(name, fakes) {
  const bin = path.join(tmp, name, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync('/usr/bin/dirname', path.join(bin, 'dirname'));
  for (const [tool, body] of Object.entries(fakes)) {
    fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }
  return { PATH: bin, HOME: path.join(tmp, name) };
}

function setup(env) {
  return spawnSync('/bin/bash', [path.join(REPO_ROOT, 'scripts', 'setup.sh'), '--dev'], { env, encoding: 'utf8' });
}

test('without rustup: says to install Rust with rustup', () => {
  const r = setup(system('no-rustup', {}));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot continue:.*rustup is not installed\. Install Rust with rustup/);
});

test('without Node.js: says to install Node.js 20 or later', () => {
  const r = setup(system('no-node', { rustup: 'exit 0', cargo: 'exit 0' }));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Node\.js is not installed\. Install Node\.js 20 or later with npm/);
});

test('with an old Node.js: says it is too old', () => {
  const r = setup(system('old-node', { rustup: 'exit 0', cargo: 'exit 0', node: 'case "$1" in -p) echo 18;; *) echo v18.19.0;; esac' }));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Node\.js v18\.19\.0 is too old/);
});

test('without npm: says to install npm', () => {
  const r = setup(system('no-npm', { rustup: 'exit 0', cargo: 'exit 0', node: 'echo 20' }));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /npm is not installed/);
});
