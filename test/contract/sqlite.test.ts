// The contract suite against the SQLite store (a real file per test in a temp dir), plus what only a durable,
// single-owner store promises: records and fencing tokens survive a reopen and a kill -9, the previous run's calls are
// settled at start, and the lock file keeps a second bus off the file.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { LeaseWaitTimeout, type StateStore, StoreUnavailable } from '../../src/store/contract.js';
import { createStore } from '../../src/store/index.js';
import type { SqliteStore } from '../../src/store/sqlite.js';
import { storeContract, uniqueScope } from './store-contract.js';

const dir = mkdtempSync(join(tmpdir(), 'toolbus-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const dbPath = () => join(dir, `${randomUUID()}`, 'state.db');
const open = (path: string, readonly = false) =>
  createStore({ kind: 'sqlite', path }, { replicaId: 'test', ...(readonly ? { readonly } : {}) });
const T = { timeout: 15_000 };

storeContract('sqlite', () => open(dbPath()));

function waitForLine(child: ChildProcess, text: string, timeoutMs: number): Promise<void> {
  return new Promise((res, rej) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => rej(new Error(`child did not print ${text}: ${out} ${err}`)), timeoutMs);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(text)) {
        clearTimeout(timer);
        res();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`child exited (${code}) before printing ${text}: ${out} ${err}`));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res();
    else child.once('exit', () => res());
  });
}

/**
 * Runs `body` in a child process with `store` open on the SQLite file at `path`, collecting its stdout. With
 * `fileSizeKiB` it runs under that (soft) file size limit, as on a disk that is full.
 */
function storeChild(path: string, body: string, opts: { fileSizeKiB?: number } = {}) {
  const script = join(dir, `child-${randomUUID()}.mts`);
  const storeModule = resolve(import.meta.dirname, '../../src/store/index.ts');
  writeFileSync(
    script,
    `import { createStore } from ${JSON.stringify(storeModule)};
const store = await createStore({ kind: 'sqlite', path: ${JSON.stringify(path)} }, { replicaId: 'child' });
${body}
setInterval(() => {}, 1000);
`,
  );
  const stdio: ['ignore', 'pipe', 'pipe'] = ['ignore', 'pipe', 'pipe'];
  const child =
    opts.fileSizeKiB === undefined
      ? spawn(process.execPath, ['--import', 'tsx', script], { stdio })
      : spawn(
          'bash',
          ['-c', `ulimit -S -f ${opts.fileSizeKiB} && exec "${process.execPath}" --import tsx "${script}"`],
          {
            stdio,
          },
        );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

describe('sqlite store: durability and ownership', () => {
  it('keeps records, held leases and the fencing counter across close and reopen', T, async () => {
    const path = dbPath();
    let store: StateStore = await open(path);
    const done = uniqueScope('done');
    await store.claimKey({ scope: done, fingerprint: 'fp', owner: 'a', claimTtlMs: 10_000, retryUnknown: false });
    await store.completeKey(done, 'a', 1, '{"value":42}', 60_000);
    const scope = uniqueScope('lease');
    let last = 0;
    for (let i = 0; i < 3; i++) {
      const g = await store.acquireLease(scope, `h${i}`, { ttlMs: 10_000, waitMs: 0 });
      last = g.token;
      await store.releaseLease(g);
    }
    const held = await store.acquireLease(scope, 'held', { ttlMs: 10_000, waitMs: 0 });
    await store.appendAudit({
      at: Date.now(),
      agent: 'a',
      tenant: 'default',
      tool: 'lab__write',
      key: 'k',
      scopes: [scope],
      fencingToken: held.token,
      outcome: 'ok',
      durationMs: 3,
    });
    await store.close();
    assert.equal(existsSync(`${path}.lock`), false, 'close removes the lock file');

    store = await open(path);
    try {
      assert.equal((await store.getKey(done))?.result, '{"value":42}');
      await assert.rejects(store.acquireLease(scope, 'next', { ttlMs: 10_000, waitMs: 0 }), LeaseWaitTimeout);
      assert.equal((await store.listLeases()).find((l) => l.scope === scope)?.holder, 'held');
      assert.equal(await store.renewLease(held, 10_000), true, 'the grant is still valid for its holder');
      await store.releaseLease(held);
      const next = await store.acquireLease(scope, 'next', { ttlMs: 10_000, waitMs: 0 });
      assert.ok(next.token > held.token && held.token > last, 'tokens keep growing after a reopen');
      assert.equal((await store.queryAudit({ tool: 'lab__write' }))[0]?.fencingToken, held.token);
    } finally {
      await store.close();
    }
  });

  it('survives kill -9: completed records replay, the stale lock is taken over, tokens stay monotonic', T, async () => {
    const path = dbPath();
    const { child, output } = storeChild(
      path,
      `await store.claimKey({ scope: 'k-done', fingerprint: 'fp', owner: 'child:1', claimTtlMs: 60000, retryUnknown: false });
await store.markDispatched('k-done', 'child:1', 1, 60000);
await store.completeKey('k-done', 'child:1', 1, '{"n":7}', 60000);
await store.claimKey({ scope: 'k-flying', fingerprint: 'fp', owner: 'child:2', claimTtlMs: 60000, retryUnknown: false });
await store.markDispatched('k-flying', 'child:2', 1, 60000);
await store.claimKey({ scope: 'k-claimed', fingerprint: 'fp', owner: 'child:3', claimTtlMs: 60000, retryUnknown: false });
let token = 0;
for (let i = 0; i < 5; i++) {
  const g = await store.acquireLease('s', 'child', { ttlMs: 60000, waitMs: 0 });
  token = g.token;
  if (i < 4) await store.releaseLease(g);
}
process.stdout.write('token=' + token + '\\nready\\n');`,
    );
    try {
      await waitForLine(child, 'ready', 10_000);
      assert.equal(readFileSync(`${path}.lock`, 'utf8').trim(), String(child.pid));
      await assert.rejects(open(path), new RegExp(`another toolbus \\(pid ${child.pid}\\) owns`));
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
    const childToken = Number(/token=(\d+)/.exec(output())?.[1]);
    assert.ok(childToken >= 5);
    assert.equal(existsSync(`${path}.lock`), true, 'a killed bus leaves its lock behind');

    const store = await open(path);
    try {
      assert.equal((await store.getKey('k-done'))?.result, '{"n":7}');
      assert.equal((await store.getKey('k-flying'))?.state, 'dispatched');
      const settled = await store.settleAbandoned(60_000);
      assert.deepEqual(settled, { released: 1, unknown: 1 });
      assert.equal((await store.getKey('k-flying'))?.state, 'unknown');
      assert.equal(await store.getKey('k-claimed'), null);
      // The dead holder's lease blocks only briefly after settling, not for its whole TTL.
      const began = Date.now();
      const g = await store.acquireLease('s', 'me', { ttlMs: 10_000, waitMs: 5000 });
      assert.ok(Date.now() - began < 2000);
      assert.ok(g.token > childToken, `token ${g.token} after ${childToken}`);
    } finally {
      await store.close();
    }
  });

  it('a kill -9 while changes sit in the redo journal loses none of them: the next open replays it', T, async () => {
    const path = dbPath();
    // Writes without pause, so the kill lands while the newest changes are only in the journal (it is drained to
    // the tables every 100 ms). A key is reported only once its write has returned.
    const { child, output } = storeChild(
      path,
      `for (let i = 0; ; i++) {
  const begun = await store.beginWrite({ scope: 'k-' + i, fingerprint: 'fp', owner: 'child:' + i, claimTtlMs: 60000,
    retryUnknown: false, leases: ['s-' + i], leaseTtlMs: 60000, dispatch: true });
  await store.finishWrite({ scope: 'k-' + i, owner: 'child:' + i, fence: 1, result: '{"i":' + i + '}', ttlMs: 60000,
    grants: begun.grants ?? [] });
  await store.beginWrite({ scope: 'open-' + i, fingerprint: 'fp', owner: 'child:' + i, claimTtlMs: 60000,
    retryUnknown: false, leases: ['held-' + i], leaseTtlMs: 60000, dispatch: true });
  process.stdout.write('done ' + i + '\\n');
}`,
    );
    try {
      await waitForLine(child, 'done 300\n', 10_000);
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
    const last = Math.max(...[...output().matchAll(/done (\d+)\n/g)].map((m) => Number(m[1])));
    assert.ok(readFileSync(`${path}.redo`).length > 0, 'the kill left changes in the journal');

    const store = await open(path);
    try {
      assert.equal(readFileSync(`${path}.redo`).length, 0, 'the journal was replayed and emptied at open');
      for (const i of [0, Math.floor(last / 2), last]) {
        assert.equal((await store.getKey(`k-${i}`))?.result, `{"i":${i}}`, `key ${i} of ${last}`);
        assert.equal((await store.getKey(`open-${i}`))?.state, 'dispatched', `open write ${i} of ${last}`);
      }
      const held = new Set((await store.listLeases()).map((l) => l.scope));
      assert.ok(held.has(`held-${last}`) && held.has('held-0'), 'leases of writes in flight are still held');
      assert.ok(!held.has(`s-${last}`), 'a released lease stays released');
      // Every lease the child was granted came below the stored ceiling: a new grant is above all of them.
      const g = await store.acquireLease('after-restart', 'me', { ttlMs: 1000, waitMs: 0 });
      const tokens = (await store.listLeases()).filter((l) => l.scope !== 'after-restart').map((l) => l.token);
      assert.ok(
        tokens.every((t) => t < g.token),
        `token ${g.token} after ${Math.max(...tokens)}`,
      );
    } finally {
      await store.close();
    }
    assert.equal(existsSync(`${path}.redo`), false, 'a clean close leaves no journal');
  });

  it(
    'a file that cannot grow (the disk is full) stops writes at the next ping, loses none it acknowledged, and recovers',
    T,
    async () => {
      const path = dbPath();
      // The child runs under a 1 MiB file size limit (ulimit -f), so a drain fails once the WAL would pass it, while the
      // journal, emptied by every drain before, still takes lines. A key is reported only once its write has returned.
      const { child, output } = storeChild(
        path,
        `const result = JSON.stringify({ pad: 'x'.repeat(8000) });
let acked = 0;
let refused = '';
for (let i = 0; i < 2000 && !refused; i++) {
  try {
    await store.beginWrite({ scope: 'k-' + i, fingerprint: 'fp', owner: 'child:' + i, claimTtlMs: 60000,
      retryUnknown: false, leases: [], leaseTtlMs: 60000, dispatch: true });
    await store.finishWrite({ scope: 'k-' + i, owner: 'child:' + i, fence: 1, result, ttlMs: 600000, grants: [] });
    acked = i + 1;
    await store.ping();
  } catch (err) {
    refused = err.name + ': ' + err.message;
  }
  await new Promise((r) => setTimeout(r, 5));
}
process.stdout.write(JSON.stringify({ acked, refused }) + '\\n');
// The parent lifts the limit (space freed): the ping drains again, and writes are taken.
for (let i = 0; i < 200; i++) {
  try {
    await store.ping();
    break;
  } catch {
    await new Promise((r) => setTimeout(r, 50));
  }
}
const b = await store.beginWrite({ scope: 'after', fingerprint: 'fp', owner: 'child:after', claimTtlMs: 60000,
  retryUnknown: false, leases: [], leaseTtlMs: 60000, dispatch: true });
await store.finishWrite({ scope: 'after', owner: 'child:after', fence: 1, result, ttlMs: 600000, grants: [] });
process.stdout.write('recovered\\n');`,
        { fileSizeKiB: 1024 },
      );
      try {
        await waitForLine(child, '}\n', 12_000);
        const lifted = spawnSync('prlimit', ['--pid', String(child.pid), '--fsize=unlimited']);
        assert.equal(lifted.status, 0, lifted.stderr.toString());
        await waitForLine(child, 'recovered\n', 12_000);
      } finally {
        child.kill('SIGKILL');
        await exited(child);
      }
      const { acked, refused } = JSON.parse(output().split('\n')[0] ?? '') as { acked: number; refused: string };
      assert.match(refused, /^StoreUnavailable: the state file cannot be written/);
      assert.ok(acked > 20, `${acked} writes before the disk filled`);
      assert.ok(readFileSync(`${path}.redo`).length > 0, 'the writes since the last drain wait in the journal');

      const store = await open(path);
      try {
        for (let i = 0; i < acked; i++) {
          const record = await store.getKey(`k-${i}`);
          assert.equal(record?.state, 'completed', `key ${i} of ${acked}`);
        }
        assert.equal((await store.getKey('after'))?.state, 'completed', 'the write after recovery');
      } finally {
        await store.close();
      }
    },
  );

  it('a journal write cut short (the disk filled mid-line) fails its step and is cut off again', T, async () => {
    const path = dbPath();
    // Results of 200 KB, written faster than a drain comes (every 100 ms), fill the journal past the 1 MiB file size
    // limit: the write that crosses it is taken only in part. That write must fail, and the fragment must go, or the
    // next line would be glued to it and lost at replay.
    const { child, output } = storeChild(
      path,
      `const write = async (scope, size) => {
  const b = await store.beginWrite({ scope, fingerprint: 'fp', owner: 'child:' + scope, claimTtlMs: 60000,
    retryUnknown: false, leases: [], leaseTtlMs: 60000, dispatch: true });
  await store.finishWrite({ scope, owner: 'child:' + scope, fence: 1, result: JSON.stringify({ pad: 'x'.repeat(size) }),
    ttlMs: 600000, grants: [] });
};
let acked = 0;
let refused = '';
for (let i = 0; i < 20 && !refused; i++) {
  try {
    await write('k-' + i, 200_000);
    acked = i + 1;
  } catch (err) {
    refused = err.name + ': ' + err.message;
  }
}
await write('small', 10);
process.stdout.write(JSON.stringify({ acked, refused }) + '\\n');`,
      { fileSizeKiB: 1024 },
    );
    try {
      await waitForLine(child, '}\n', 12_000);
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
    const { acked, refused } = JSON.parse(output()) as { acked: number; refused: string };
    assert.match(refused, /^StoreUnavailable: the state journal took \d+ of \d+ bytes/);
    assert.ok(acked >= 3, `${acked} writes before the journal filled`);

    const store = await open(path);
    try {
      for (let i = 0; i < acked; i++) assert.equal((await store.getKey(`k-${i}`))?.state, 'completed', `key ${i}`);
      // Its begin-write was journaled; its completion, refused, was not: the key stays dispatched (unknown once the
      // start-up settle runs), never completed with a result nobody was told about.
      assert.equal((await store.getKey(`k-${acked}`))?.state, 'dispatched', 'the refused completion is not recorded');
      assert.equal((await store.getKey('small'))?.state, 'completed', 'the line after the cut-off one replays');
    } finally {
      await store.close();
    }
  });

  it('a journal line cut short (a power loss) ends the replay; the lines before it count', T, async () => {
    const path = dbPath();
    const far = Date.now() + 60_000;
    const row = (result: string) => ({
      state: 'completed',
      fingerprint: 'fp',
      owner: 'o',
      fence: 1,
      result,
      expiresAt: far,
      unknownTtlMs: 1000,
    });
    mkdirSync(dirname(path), { recursive: true });
    const whole = JSON.stringify([
      ['k', 'kept', row('{"a":1}')],
      ['l', 'scope-kept', { holder: 'o', token: 7, expiresAt: far }],
    ]);
    const second = JSON.stringify([['k', 'kept', row('{"a":2}')]]);
    const torn = JSON.stringify([['k', 'lost', row('{"b":1}')]]).slice(0, 30);
    writeFileSync(`${path}.redo`, `${whole}\n${second}\n${torn}`);
    const store = await open(path);
    try {
      assert.deepEqual((store as SqliteStore).journalReplay, { lines: 2, droppedBytes: 30 }, 'the bus logs this');
      assert.equal((await store.getKey('kept'))?.result, '{"a":2}', 'later lines win');
      assert.equal(await store.getKey('lost'), null);
      assert.deepEqual(
        (await store.listLeases()).map((l) => [l.scope, l.token]),
        [['scope-kept', 7]],
      );
    } finally {
      await store.close();
    }
  });

  it('settles the previous run at start: claims deleted, dispatches unknown with the given TTL', T, async () => {
    const path = dbPath();
    const store = await open(path);
    try {
      const req = (scope: string, owner: string) => ({
        scope,
        fingerprint: 'fp',
        owner,
        claimTtlMs: 60_000,
        retryUnknown: false,
      });
      await store.claimKey(req('c1', 'o1'));
      await store.claimKey(req('c2', 'o2'));
      await store.claimKey(req('d1', 'o3'));
      await store.markDispatched('d1', 'o3', 1, 60_000);
      await store.claimKey(req('done', 'o4'));
      await store.completeKey('done', 'o4', 1, '1', 60_000);
      const before = Date.now();
      assert.deepEqual(await store.settleAbandoned(150), { released: 2, unknown: 1 });
      assert.equal(await store.getKey('c1'), null);
      assert.equal(await store.getKey('c2'), null);
      const d1 = await store.getKey('d1');
      assert.equal(d1?.state, 'unknown');
      assert.ok(d1 && d1.expiresAt >= before + 150 && d1.expiresAt <= Date.now() + 150);
      assert.equal((await store.getKey('done'))?.state, 'completed');
      assert.deepEqual(await store.settleAbandoned(150), { released: 0, unknown: 0 });
      await sleep(200);
      assert.equal(await store.getKey('d1'), null, 'the unknown record expires after the given TTL');
    } finally {
      await store.close();
    }
  });

  it('refuses a second owner while the first lives, and takes over a lock whose pid is dead', T, async () => {
    const path = dbPath();
    const first = await open(path);
    try {
      assert.equal(readFileSync(`${path}.lock`, 'utf8').trim(), String(process.pid));
      await assert.rejects(
        open(path),
        new RegExp(`another toolbus \\(pid ${process.pid}\\) owns ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
      );
    } finally {
      await first.close();
    }
    const dead = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await exited(dead);
    writeFileSync(`${path}.lock`, `${dead.pid}\n`);
    const second = await open(path);
    assert.equal(readFileSync(`${path}.lock`, 'utf8').trim(), String(process.pid));
    await second.close();
    writeFileSync(`${path}.lock`, 'garbage');
    const third = await open(path);
    await third.close();
  });

  it('opens read-only beside a running bus without its lock, and refuses writes there', T, async () => {
    const path = dbPath();
    const bus = await open(path);
    try {
      await bus.appendAudit({
        at: Date.now(),
        agent: 'a',
        tenant: 't',
        tool: 'x__y',
        key: null,
        scopes: [],
        fencingToken: null,
        outcome: 'ok',
        durationMs: 1,
      });
      const reader = await open(path, true);
      try {
        assert.equal((await reader.queryAudit({ tool: 'x__y' })).length, 1);
        await assert.rejects(
          reader.claimKey({ scope: 'k', fingerprint: 'f', owner: 'o', claimTtlMs: 1000, retryUnknown: false }),
          StoreUnavailable,
        );
        assert.deepEqual(await reader.settleAbandoned(1000), { released: 0, unknown: 0 });
      } finally {
        await reader.close();
      }
      assert.equal(
        readFileSync(`${path}.lock`, 'utf8').trim(),
        String(process.pid),
        "the reader left the bus's lock alone",
      );
      await bus.appendAudit({
        at: Date.now(),
        agent: 'a',
        tenant: 't',
        tool: 'x__y',
        key: null,
        scopes: [],
        fencingToken: null,
        outcome: 'ok',
        durationMs: 1,
      });
    } finally {
      await bus.close();
    }
    await assert.rejects(open(join(dir, 'missing', 'state.db'), true), /cannot open the toolbus state/);
  });

  it(
    'moves a version 1 file (rowid tables) over at open: records replay, held leases block, tokens keep growing',
    T,
    async () => {
      const path = dbPath();
      mkdirSync(dirname(path), { recursive: true });
      const v1 = new Database(path);
      const far = Date.now() + 60_000;
      v1.exec(`
      CREATE TABLE keys_v1 (scope TEXT PRIMARY KEY, state TEXT NOT NULL, fingerprint TEXT NOT NULL, owner TEXT NOT NULL,
        fence INTEGER NOT NULL, result TEXT, expires_at INTEGER NOT NULL, unknown_ttl_ms INTEGER NOT NULL);
      CREATE INDEX keys_v1_expires_at ON keys_v1 (expires_at);
      CREATE TABLE leases_v1 (scope TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL, expires_at INTEGER NOT NULL);
      CREATE TABLE counters_v1 (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
      INSERT INTO keys_v1 VALUES ('old-key', 'completed', 'fp', 'o', 1, '{"kept":true}', ${far}, 1000);
      INSERT INTO leases_v1 VALUES ('old-scope', 'o', 41, ${far});
      INSERT INTO counters_v1 VALUES ('lease-token', 41);
    `);
      v1.close();
      const store = await open(path);
      try {
        const out = await store.claimKey({
          scope: 'old-key',
          fingerprint: 'fp',
          owner: 'n',
          claimTtlMs: 1000,
          retryUnknown: false,
        });
        assert.equal(out.kind, 'existing');
        assert.equal(out.kind === 'existing' && out.record.result, '{"kept":true}');
        await assert.rejects(store.acquireLease('old-scope', 'n', { ttlMs: 1000, waitMs: 0 }), LeaseWaitTimeout);
        const g = await store.acquireLease('other-scope', 'n', { ttlMs: 1000, waitMs: 0 });
        assert.ok(g.token > 41, `token ${g.token}`);
      } finally {
        await store.close();
      }
    },
  );

  it(
    'internal: one operation that fails in a group commit fails alone; a waiter never gets a lease that was rolled back',
    T,
    async () => {
      const store = await open(dbPath());
      // The store's group commit, reached past its type: the public operations never throw inside a batch, so a
      // failing one is put in by hand, in the same turn as real ones.
      const group = (store as unknown as { group: { run<T>(op: () => T): Promise<T> } }).group;
      try {
        const scope = uniqueScope('held');
        const begun = await store.beginWrite({
          scope: 'k-held',
          fingerprint: 'fp',
          owner: 'holder',
          claimTtlMs: 10_000,
          retryUnknown: false,
          leases: [scope],
          leaseTtlMs: 10_000,
          dispatch: true,
        });
        assert.equal(begun.kind, 'claimed');
        const grants = begun.kind === 'claimed' ? (begun.grants ?? []) : [];
        assert.equal(grants.length, 1);
        const waiting = store.acquireLease(scope, 'waiter', { ttlMs: 10_000, waitMs: 5000 });
        // One turn: the finish (releases the lease to the waiter), an operation that throws, a new claim.
        const finished = store.finishWrite({
          scope: 'k-held',
          owner: 'holder',
          fence: 1,
          result: '{"ok":1}',
          ttlMs: 60_000,
          grants,
        });
        const failing = group.run(() => {
          throw new Error('bad operation');
        });
        const other = store.claimKey({
          scope: 'k-other',
          fingerprint: 'fp',
          owner: 'o2',
          claimTtlMs: 10_000,
          retryUnknown: false,
        });
        const claimedLater = store.beginWrite({
          scope: 'k-later',
          fingerprint: 'fp',
          owner: 'o3',
          claimTtlMs: 10_000,
          retryUnknown: false,
          leases: [],
          leaseTtlMs: 10_000,
          dispatch: true,
        });
        await assert.rejects(failing, /bad operation/);
        assert.equal(await finished, true);
        assert.equal((await other).kind, 'claimed');
        assert.equal((await claimedLater).kind, 'claimed');
        const grant = await waiting;
        assert.equal(grant.holder, 'waiter');
        const held = (await store.listLeases()).find((l) => l.scope === scope);
        assert.equal(held?.holder, 'waiter', 'the waiter holds a lease that is on disk');
        assert.equal(held?.token, grant.token);
        const replay = await store.claimKey({
          scope: 'k-held',
          fingerprint: 'fp',
          owner: 'o4',
          claimTtlMs: 10_000,
          retryUnknown: false,
        });
        assert.equal(replay.kind === 'existing' && replay.record.state, 'completed');
      } finally {
        await store.close();
      }
    },
  );
});
