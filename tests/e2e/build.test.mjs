// The two builds of the Worker. The test build (`bash scripts/build.sh --test-faults`: what
// `make test` builds once and every end-to-end test runs) has the KV fault switch compiled
// in. The deployed build (`bash scripts/build.sh`: what `make dev`, wrangler and
// docs/deploying.md use) has none: no route, no variable read, no header read. Its wasm is
// compiled here by cargo alone, exactly as worker-build compiles it before wasm-bindgen and
// wasm-opt (which only take code away), so the suite needs no second bundle.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { REPO_ROOT } from './lib/gateway.mjs';

const run = promisify(execFile);
// What only the switch holds (src/faults/switch.rs): its variable, its route and its header.
const SWITCH = ['PORTCULLIS_TEST_FAULTS', '/_test/faults', 'x-portcullis-test-cf'];

/** The switch's strings found in a wasm file. */
function switchStrings(file) {
  const bytes = fs.readFileSync(file);
  return SWITCH.filter((s) => bytes.includes(Buffer.from(s)));
}

describe('the test build and the deployed build', () => {
  test('the build the suite runs is the test build, and its wasm holds the fault switch', () => {
    const variant = fs.readFileSync(path.join(REPO_ROOT, 'build', 'variant'), 'utf8').trim();
    assert.equal(variant, 'test-faults', 'build/ holds another build: run bash scripts/build.sh --test-faults');
    assert.deepEqual(switchStrings(path.join(REPO_ROOT, 'build', 'index_bg.wasm')), SWITCH);
  });

  test('the deployed build has no fault switch at all', async () => {
    // worker-build's own cargo invocation for `bash scripts/build.sh` (no features).
    const { stdout } = await run('cargo', [
      'build', '--release', '--target', 'wasm32-unknown-unknown', '--lib', '--locked', '--message-format=json',
    ], {
      cwd: REPO_ROOT,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, PATH: `${path.join(os.homedir(), '.cargo', 'bin')}:${process.env.PATH}` },
    });
    const wasm = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
      .filter((m) => m.reason === 'compiler-artifact' && m.target?.name === 'portcullis')
      .flatMap((m) => m.filenames).find((f) => f.endsWith('.wasm'));
    assert.ok(wasm, 'cargo named no portcullis .wasm');
    assert.deepEqual(switchStrings(wasm), []);
  });
});
