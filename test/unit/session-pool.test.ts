// The session pool's rules on a clock the test moves by hand and timers it fires by hand: a key's session opens on
// first use and is reused; idle sessions close after idleMs; at most maxSessions are alive, a new key takes the place
// of the least recently used idle one, and waits (FIFO) while all are busy, then is refused with sessions_full.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BusError } from '../../src/errors.js';
import { SessionPool } from '../../src/upstreams/session-pool.js';

function poolAt(maxSessions: number, idleMs = 1000) {
  let t = 1_000_000;
  const timers: { at: number; fn: () => void; live: boolean }[] = [];
  const log: string[] = [];
  let nextId = 0;
  const pool = new SessionPool<{ id: number; key: string }>({
    upstream: 'up',
    maxSessions,
    idleMs,
    now: () => t,
    schedule: (fn, ms) => {
      const timer = { at: t + ms, fn, live: true };
      timers.push(timer);
      return () => {
        timer.live = false;
      };
    },
    open: (key) => {
      log.push(`open ${key}`);
      return { id: ++nextId, key };
    },
    close: (s, key, reason) => log.push(`close ${key}#${s.id} ${reason}`),
  });
  return {
    pool,
    log,
    now: () => t,
    advance(ms: number) {
      t += ms;
      for (const timer of timers) {
        if (timer.live && timer.at <= t) {
          timer.live = false;
          timer.fn();
        }
      }
    },
  };
}

const forever = { waitUntil: Number.MAX_SAFE_INTEGER };

describe('SessionPool', () => {
  it('opens a session on a key’s first use and hands the same one out after', async () => {
    const { pool, log } = poolAt(4);
    const a1 = await pool.acquire('alice', forever);
    assert.equal(a1.opened, true);
    a1.release();
    const a2 = await pool.acquire('alice', forever);
    assert.equal(a2.opened, false);
    assert.equal(a2.session, a1.session);
    const b = await pool.acquire('bob', forever);
    assert.notEqual(b.session, a1.session);
    assert.deepEqual(log, ['open alice', 'open bob']);
    assert.equal(pool.size, 2);
  });

  it('closes a session idle for idleMs, never one with a call in flight; the next use opens a fresh one', async () => {
    const { pool, log, advance } = poolAt(4, 1000);
    const a = await pool.acquire('alice', forever);
    const b = await pool.acquire('bob', forever);
    b.release();
    advance(999);
    pool.sweep();
    assert.equal(pool.size, 2, 'not idle long enough yet');
    advance(1);
    pool.sweep();
    assert.deepEqual(log, ['open alice', 'open bob', 'close bob#2 idle']);
    advance(10_000);
    pool.sweep();
    assert.equal(pool.peek('alice'), a.session, 'alice is busy: never closed');
    a.release();
    advance(1000);
    pool.sweep();
    assert.equal(pool.size, 0);
    const again = await pool.acquire('bob', forever);
    assert.equal(again.opened, true);
    assert.equal(again.session.id, 3);
    assert.deepEqual(pool.counts, { opened: 3, idle: 2, evicted: 0 });
  });

  it('at maxSessions, a new key replaces the least recently used idle session', async () => {
    const { pool, log, advance } = poolAt(2);
    const a = await pool.acquire('a', forever);
    advance(10);
    a.release();
    const b = await pool.acquire('b', forever);
    advance(10);
    b.release();
    advance(10);
    (await pool.acquire('a', forever)).release(); // a is now more recent than b
    const c = await pool.acquire('c', forever);
    assert.equal(c.opened, true);
    assert.ok(log.includes('close b#2 evicted'), log.join());
    assert.equal(pool.size, 2);
    assert.deepEqual([...pool.sessions()].map(([k]) => k).sort(), ['a', 'c']);
  });

  it('while all sessions are busy a new key waits, first come first served, and gets the first one freed', async () => {
    const { pool, log } = poolAt(2);
    const a = await pool.acquire('a', forever);
    const b = await pool.acquire('b', forever);
    const order: string[] = [];
    const c = pool.acquire('c', forever).then((l) => {
      order.push('c');
      return l;
    });
    const d = pool.acquire('d', forever).then((l) => {
      order.push('d');
      return l;
    });
    // A key that has a session never waits, even behind waiters.
    const a2 = await pool.acquire('a', forever);
    a2.release();
    assert.equal(pool.waiting, 2);
    b.release();
    const cl = await c;
    assert.deepEqual(order, ['c']);
    assert.ok(log.includes('close b#2 evicted'));
    a.release();
    const dl = await d;
    assert.deepEqual(order, ['c', 'd']);
    assert.equal(pool.size, 2);
    cl.release();
    dl.release();
  });

  it('refuses a waiter at its limit with upstream_unavailable (sessions_full) and a retryAfterMs; never exceeds max', async () => {
    const { pool, advance, now } = poolAt(1);
    const a = await pool.acquire('a', forever);
    const waiting = pool.acquire('b', { waitUntil: now() + 500 });
    advance(499);
    assert.equal(pool.waiting, 1);
    advance(1);
    await assert.rejects(waiting, (err: unknown) => {
      assert.ok(err instanceof BusError);
      assert.equal(err.category, 'upstream_unavailable');
      assert.equal(err.code, 'sessions_full');
      assert.ok((err.retryAfterMs ?? 0) > 0);
      return true;
    });
    assert.equal(pool.waiting, 0);
    // A limit already past is refused at once.
    await assert.rejects(pool.acquire('c', { waitUntil: now() }), /sessions are busy/);
    assert.equal(pool.size, 1);
    a.release();
  });

  it('a waiter whose agent cancels leaves the queue; release twice counts once', async () => {
    const { pool } = poolAt(1);
    const a = await pool.acquire('a', forever);
    const ctl = new AbortController();
    const waiting = pool.acquire('b', { ...forever, signal: ctl.signal });
    ctl.abort(new Error('agent went away'));
    await assert.rejects(waiting, /agent went away/);
    assert.equal(pool.waiting, 0);
    const a2 = await pool.acquire('a', forever);
    a.release();
    a.release();
    // a2 still holds the session: it must not be evictable.
    await assert.rejects(pool.acquire('c', { waitUntil: 0 }), /sessions_full|sessions are busy/);
    a2.release();
    assert.equal((await pool.acquire('c', forever)).opened, true);
  });

  it('close() refuses waiters and closes every session', async () => {
    const { pool, log } = poolAt(1);
    await pool.acquire('a', forever);
    const waiting = pool.acquire('b', forever);
    pool.close();
    await assert.rejects(waiting, /shutting down/);
    assert.ok(log.includes('close a#1 shutdown'));
    await assert.rejects(pool.acquire('a', forever), /shutting down/);
  });
});

describe('session placeholders', () => {
  it('fills {agent} and {tenant} in args, env and cwd, encoded so a value can never climb out of a directory', async () => {
    const { configForSession, placeholderValue, sharingProblems } = await import(
      '../../src/upstreams/session-config.js'
    );
    const { UpstreamSchema } = await import('../../src/config/schema.js');
    const cfg = UpstreamSchema.parse({
      command: 'srv',
      args: ['--dir', '/w/{tenant}/{agent}'],
      env: { WHO: '{agent}@{tenant}' },
      cwd: '/w/{agent}',
      sharing: 'per-agent',
    });
    const filled = configForSession(cfg, { agent: 'alice', tenant: 't1' });
    assert.ok('args' in filled);
    assert.deepEqual(filled.args, ['--dir', '/w/t1/alice']);
    assert.deepEqual(filled.env, { WHO: 'alice@t1' });
    assert.equal(filled.cwd, '/w/alice');
    assert.equal(placeholderValue('../etc'), '..%2Fetc');
    assert.equal(placeholderValue('..'), '%2E%2E');
    assert.equal(placeholderValue('a b/ü'), 'a%20b%2F%C3%BC');
    assert.equal(placeholderValue('ok_id-1.x'), 'ok_id-1.x');
    assert.deepEqual(sharingProblems('up', cfg), []);
    assert.equal(sharingProblems('up', { ...cfg, sharing: 'shared' }).length, 1);
    assert.match(sharingProblems('up', { ...cfg, sharing: 'per-tenant' })[0] ?? '', /\{agent\} cannot be used/);
  });
});
