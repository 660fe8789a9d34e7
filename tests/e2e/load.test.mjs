// Load through the gateway in workerd (scripts/load.mjs): 10 000 requests mixing valid
// sessions, forged cookies and sign-in starts. No answer may be a 5xx, and workerd's memory
// is reported before and after. The same gateway (the test build) runs without
// PORTCULLIS_TEST_FAULTS, so the fault switch is off and its route is an ordinary path; the
// deployed build has no switch at all (build.test.mjs).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { rssMiB, workerdPid } from './lib/processes.mjs';
import { runLoad, startStack } from '../../scripts/load.mjs';

describe('load', () => {
  let stack;

  before(async () => {
    stack = await startStack();
  });

  after(async () => {
    await stack?.stop();
  });

  test('without PORTCULLIS_TEST_FAULTS the fault switch is an ordinary 404', async () => {
    for (const method of ['GET', 'POST']) {
      const r = await fetch(stack.site('/_portcullis/_test/faults'), {
        method, headers: { accept: 'application/json' }, body: method === 'POST' ? '{"kv":{"get":"fail"}}' : undefined,
      });
      assert.equal(r.status, 404);
      assert.equal((await r.json()).error, 'not_found');
    }
    assert.ok(!stack.gw.logs.some((l) => /test_faults_enabled/.test(l)));
  });

  test('10 000 mixed requests: no 5xx, every answer the expected one', async (t) => {
    const pid = workerdPid(stack.gw);
    assert.ok(pid, 'found the workerd process');
    const before = rssMiB(pid);
    const r = await runLoad({ site: stack.site, cookies: stack.cookies, total: 10_000, concurrency: 32 });
    const afterRss = rssMiB(pid);
    t.diagnostic(JSON.stringify({ ...r, rss_mib_before: before, rss_mib_after: afterRss }));
    assert.equal(r.fivexx, 0, JSON.stringify(r.byStatus));
    assert.equal(r.errors, 0, JSON.stringify(r.unexpected));
    assert.deepEqual(r.unexpected, []);
    assert.equal(r.byStatus['session 200'], 5000);
    assert.equal(r.byStatus['forged 401'], 3000);
    assert.equal(r.byStatus['login 302'], 2000);
    assert.ok(r.seconds < 100, `took ${r.seconds} s`);
  });
});
