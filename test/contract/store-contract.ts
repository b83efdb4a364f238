// The one test suite every state store passes (memory, SQLite, Redis): the promises of src/store/contract.ts, with
// short TTLs so expiry is exercised for real. Each test gets a fresh store from `makeStore` and its own scopes.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type AuditEntry,
  type BeginWriteRequest,
  type ClaimRequest,
  type LeaseGrant,
  LeaseWaitTimeout,
  type StateStore,
  StoreUnavailable,
} from '../../src/store/contract.js';

const T = { timeout: 10_000 };

export function uniqueScope(name: string): string {
  return `${name}/${randomUUID()}`;
}

function claimReq(scope: string, owner: string, over: Partial<ClaimRequest> = {}): ClaimRequest {
  return { scope, fingerprint: 'fp-1', owner, claimTtlMs: 10_000, retryUnknown: false, ...over };
}

async function elapsed<R>(fn: () => Promise<R>): Promise<{ value: R; ms: number }> {
  const began = Date.now();
  const value = await fn();
  return { value, ms: Date.now() - began };
}

export function storeContract(name: string, makeStore: () => Promise<StateStore>): void {
  describe(`${name} store: the state-store contract`, () => {
    let store: StateStore;
    beforeEach(async () => {
      store = await makeStore();
    });
    afterEach(async () => {
      await store.close();
    });

    describe('idempotency keys', () => {
      it('lets exactly one of 50 concurrent claims win, and shows the winner to the others', T, async () => {
        const scope = uniqueScope('race');
        const outcomes = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            store.claimKey(claimReq(scope, `owner-${i}`, { fingerprint: 'fp-race' })),
          ),
        );
        const winners = outcomes.flatMap((o, i) => (o.kind === 'claimed' ? [{ o, i }] : []));
        assert.equal(winners.length, 1);
        const winner = winners[0]!;
        assert.deepEqual(winner.o, { kind: 'claimed', fence: 1, tookOver: false });
        for (const o of outcomes) {
          if (o.kind !== 'existing') continue;
          assert.equal(o.record.state, 'claimed');
          assert.equal(o.record.owner, `owner-${winner.i}`);
          assert.equal(o.record.fence, 1);
          assert.equal(o.record.fingerprint, 'fp-race');
        }
      });

      it('keeps the first fingerprint, so a reuse with other arguments can be told apart', T, async () => {
        const scope = uniqueScope('fp');
        assert.equal((await store.claimKey(claimReq(scope, 'a', { fingerprint: 'fp-A' }))).kind, 'claimed');
        const other = await store.claimKey(claimReq(scope, 'b', { fingerprint: 'fp-B' }));
        assert.equal(other.kind, 'existing');
        assert.equal(other.kind === 'existing' && other.record.fingerprint, 'fp-A');
        const rec = await store.getKey(scope);
        assert.equal(rec?.fingerprint, 'fp-A');
        assert.equal(rec?.state, 'claimed');
        assert.equal(rec?.owner, 'a');
      });

      it("takes over a dead owner's expired claim with the next fence, and refuses the old owner", T, async () => {
        const scope = uniqueScope('takeover');
        const first = await store.claimKey(claimReq(scope, 'dead', { claimTtlMs: 60 }));
        assert.deepEqual(first, { kind: 'claimed', fence: 1, tookOver: false });
        await sleep(120);
        assert.equal(await store.getKey(scope), null, 'an expired claim reads as absent');
        const next = await store.claimKey(claimReq(scope, 'alive', { fingerprint: 'fp-other' }));
        assert.deepEqual(next, { kind: 'claimed', fence: 2, tookOver: true });
        assert.equal(await store.markDispatched(scope, 'dead', 1, 10_000), false);
        assert.equal(await store.markDispatched(scope, 'alive', 2, 10_000), true);
        const rec = await store.getKey(scope);
        assert.equal(rec?.state, 'dispatched');
        assert.equal(rec?.fingerprint, 'fp-other');
      });

      it('turns an expired dispatch into unknown, which lives the unknown TTL and then expires', T, async () => {
        const scope = uniqueScope('dispatch-expiry');
        await store.claimKey(claimReq(scope, 'a', { unknownTtlMs: 300 }));
        assert.equal(await store.markDispatched(scope, 'a', 1, 60), true);
        await sleep(120);
        const rec = await store.getKey(scope);
        assert.equal(rec?.state, 'unknown');
        const again = await store.claimKey(claimReq(scope, 'b', { unknownTtlMs: 300 }));
        assert.equal(again.kind, 'existing');
        assert.equal(again.kind === 'existing' && again.record.state, 'unknown');
        assert.equal(await store.completeKey(scope, 'a', 1, '{}', 10_000), false, 'the late owner lost the record');
        await sleep(320);
        assert.equal(await store.getKey(scope), null);
        assert.deepEqual(await store.claimKey(claimReq(scope, 'c')), { kind: 'claimed', fence: 1, tookOver: false });
      });

      it('re-runs an unknown key for retryUnknown with the same fingerprint only', T, async () => {
        const scope = uniqueScope('retry-unknown');
        await store.claimKey(claimReq(scope, 'a'));
        assert.equal(await store.markDispatched(scope, 'a', 1, 10_000), true);
        assert.equal(await store.markUnknown(scope, 'a', 1, 10_000), true);
        const plain = await store.claimKey(claimReq(scope, 'b'));
        assert.equal(plain.kind === 'existing' && plain.record.state, 'unknown');
        const otherArgs = await store.claimKey(claimReq(scope, 'c', { retryUnknown: true, fingerprint: 'fp-2' }));
        assert.equal(otherArgs.kind === 'existing' && otherArgs.record.state, 'unknown');
        const retry = await store.claimKey(claimReq(scope, 'd', { retryUnknown: true }));
        assert.deepEqual(retry, { kind: 'claimed', fence: 2, tookOver: true });
        assert.equal((await store.getKey(scope))?.owner, 'd');
      });

      it(
        'refuses transitions by a wrong owner, a stale fence, from a wrong state, or on a missing key',
        T,
        async () => {
          const scope = uniqueScope('cas');
          await store.claimKey(claimReq(scope, 'a'));
          assert.equal(await store.markDispatched(scope, 'b', 1, 10_000), false, 'wrong owner');
          assert.equal(await store.markDispatched(scope, 'a', 2, 10_000), false, 'wrong fence');
          assert.equal(await store.markUnknown(scope, 'a', 1, 10_000), false, 'claimed cannot become unknown');
          assert.equal(await store.renewKey(scope, 'a', 1, 10_000), true);
          assert.equal(await store.markDispatched(scope, 'a', 1, 10_000), true);
          assert.equal(await store.markDispatched(scope, 'a', 1, 10_000), false, 'already dispatched');
          assert.equal(await store.renewKey(scope, 'a', 1, 10_000), true);
          assert.equal(await store.completeKey(scope, 'b', 1, '{}', 10_000), false, 'wrong owner');
          assert.equal(await store.completeKey(scope, 'a', 0, '{}', 10_000), false, 'stale fence');
          assert.equal(await store.completeKey(scope, 'a', 1, '{"ok":true}', 10_000), true);
          assert.equal(await store.completeKey(scope, 'a', 1, '{}', 10_000), false, 'already completed');
          assert.equal(await store.markUnknown(scope, 'a', 1, 10_000), false, 'completed cannot become unknown');
          assert.equal(await store.renewKey(scope, 'a', 1, 10_000), false, 'completed is not renewed');
          assert.equal(await store.releaseKey(scope, 'a', 1), false, 'completed cannot be released');
          assert.equal((await store.getKey(scope))?.result, '{"ok":true}');
          const missing = uniqueScope('cas-missing');
          assert.equal(await store.markDispatched(missing, 'a', 1, 10_000), false);
          assert.equal(await store.renewKey(missing, 'a', 1, 10_000), false);
          assert.equal(await store.completeKey(missing, 'a', 1, '{}', 10_000), false);
          assert.equal(await store.markUnknown(missing, 'a', 1, 10_000), false);
          assert.equal(await store.releaseKey(missing, 'a', 1), false);
        },
      );

      it('releases a claim so the retry claims afresh', T, async () => {
        const scope = uniqueScope('release');
        await store.claimKey(claimReq(scope, 'a'));
        assert.equal(await store.releaseKey(scope, 'b', 1), false);
        assert.equal(await store.releaseKey(scope, 'a', 1), true);
        assert.equal(await store.getKey(scope), null);
        assert.equal((await store.claimKey(claimReq(scope, 'b'))).kind, 'claimed');
      });

      it('stores the completed result byte for byte', T, async () => {
        const scope = uniqueScope('bytes');
        const result = `{"content":[{"type":"text","text":"é \\u2028 😀 \u2028 \\" ' \t"}],  "n": 1.50, "big":"${'x'.repeat(100_000)}"}`;
        await store.claimKey(claimReq(scope, 'a'));
        assert.equal(await store.markDispatched(scope, 'a', 1, 10_000), true);
        assert.equal(await store.completeKey(scope, 'a', 1, result, 10_000), true);
        const rec = await store.getKey(scope);
        assert.equal(rec?.state, 'completed');
        assert.equal(rec?.result, result);
        const replay = await store.claimKey(claimReq(scope, 'b'));
        assert.equal(replay.kind === 'existing' && replay.record.result, result);
      });

      it('forgets a completed key after its TTL', T, async () => {
        const scope = uniqueScope('completed-ttl');
        await store.claimKey(claimReq(scope, 'a'));
        assert.equal(await store.completeKey(scope, 'a', 1, '{"r":1}', 80), true);
        assert.equal((await store.getKey(scope))?.state, 'completed');
        await sleep(150);
        assert.equal(await store.getKey(scope), null);
        assert.deepEqual(await store.claimKey(claimReq(scope, 'b')), { kind: 'claimed', fence: 1, tookOver: false });
      });

      it("wakes a joined waiter by the owner's completion, long before its timeout", T, async () => {
        const scope = uniqueScope('wait-complete');
        await store.claimKey(claimReq(scope, 'a'));
        await store.markDispatched(scope, 'a', 1, 10_000);
        const waiting = elapsed(() => store.waitForKey(scope, 5000));
        await sleep(50);
        await store.completeKey(scope, 'a', 1, '{"done":true}', 10_000);
        const { value, ms } = await waiting;
        assert.equal(value?.state, 'completed');
        assert.equal(value?.result, '{"done":true}');
        assert.ok(ms < 1500, `woke after ${ms} ms`);
      });

      it('wakes a joined waiter with null when the claim is released, and with unknown when marked so', T, async () => {
        const scope = uniqueScope('wait-release');
        await store.claimKey(claimReq(scope, 'a'));
        const released = elapsed(() => store.waitForKey(scope, 5000));
        await sleep(50);
        await store.releaseKey(scope, 'a', 1);
        const r1 = await released;
        assert.equal(r1.value, null);
        assert.ok(r1.ms < 1500, `woke after ${r1.ms} ms`);

        await store.claimKey(claimReq(scope, 'b'));
        await store.markDispatched(scope, 'b', 1, 10_000);
        const lost = elapsed(() => store.waitForKey(scope, 5000));
        await sleep(50);
        await store.markUnknown(scope, 'b', 1, 10_000);
        const r2 = await lost;
        assert.equal(r2.value?.state, 'unknown');
        assert.ok(r2.ms < 1500, `woke after ${r2.ms} ms`);
      });

      it("wakes a joined waiter when a dead owner's claim expires", T, async () => {
        const scope = uniqueScope('wait-expiry');
        await store.claimKey(claimReq(scope, 'dead', { claimTtlMs: 150 }));
        const { value, ms } = await elapsed(() => store.waitForKey(scope, 5000));
        assert.equal(value, null);
        assert.ok(ms >= 100 && ms < 1500, `woke after ${ms} ms`);
      });

      it('returns the latest record when the wait times out or is aborted', T, async () => {
        const scope = uniqueScope('wait-timeout');
        await store.claimKey(claimReq(scope, 'a'));
        const timedOut = await elapsed(() => store.waitForKey(scope, 150));
        assert.equal(timedOut.value?.state, 'claimed');
        assert.ok(timedOut.ms >= 140 && timedOut.ms < 1500, `gave up after ${timedOut.ms} ms`);
        const ac = new AbortController();
        setTimeout(() => ac.abort(new Error('agent cancelled')), 50);
        const aborted = await elapsed(() => store.waitForKey(scope, 5000, ac.signal));
        assert.equal(aborted.value?.state, 'claimed');
        assert.ok(aborted.ms < 1500, `abort honoured after ${aborted.ms} ms`);
      });

      it('answers a wait at once when the key is absent or settled', T, async () => {
        const scope = uniqueScope('wait-now');
        assert.equal(await store.waitForKey(scope, 5000), null);
        await store.claimKey(claimReq(scope, 'a'));
        await store.completeKey(scope, 'a', 1, '"r"', 10_000);
        const { value, ms } = await elapsed(() => store.waitForKey(scope, 5000));
        assert.equal(value?.result, '"r"');
        assert.ok(ms < 500);
      });
    });

    describe('leases', () => {
      const lease = (scope: string, holder: string, waitMs = 5000, ttlMs = 10_000, signal?: AbortSignal) =>
        store.acquireLease(scope, holder, { ttlMs, waitMs, ...(signal ? { signal } : {}) });

      it('serves waiters in arrival order, with strictly increasing fencing tokens', T, async () => {
        const scope = uniqueScope('fifo');
        const first = await lease(scope, 'h0');
        const order: string[] = [];
        const waiting: Promise<LeaseGrant>[] = [];
        for (let i = 1; i <= 4; i++) {
          waiting.push(
            lease(scope, `h${i}`).then((g) => {
              order.push(g.holder);
              return g;
            }),
          );
          await sleep(15);
        }
        const listed = (await store.listLeases()).find((l) => l.scope === scope);
        assert.equal(listed?.holder, 'h0');
        assert.equal(listed?.token, first.token);
        assert.equal(listed?.waiters, 4);
        const grants = [first];
        let current = first;
        for (let i = 1; i <= 4; i++) {
          await store.releaseLease(current);
          current = await waiting[i - 1]!;
          grants.push(current);
        }
        await store.releaseLease(current);
        assert.deepEqual(order, ['h1', 'h2', 'h3', 'h4']);
        for (let i = 1; i < grants.length; i++) assert.ok(grants[i]!.token > grants[i - 1]!.token, 'tokens grow');
        assert.equal(
          (await store.listLeases()).find((l) => l.scope === scope),
          undefined,
        );
      });

      it('issues strictly increasing tokens per scope across many grants', T, async () => {
        const scopes = [uniqueScope('tok-a'), uniqueScope('tok-b')];
        const last = new Map<string, number>();
        for (let i = 0; i < 20; i++) {
          const scope = scopes[i % 2]!;
          const g = await lease(scope, `h${i}`, 0);
          assert.ok(g.token > (last.get(scope) ?? 0), `token ${g.token} after ${last.get(scope)}`);
          last.set(scope, g.token);
          await store.releaseLease(g);
        }
      });

      it('frees the scope when a dead holder lets its lease expire', T, async () => {
        const scope = uniqueScope('ttl');
        const dead = await lease(scope, 'dead', 0, 150);
        const { value, ms } = await elapsed(() => lease(scope, 'next', 3000));
        assert.equal(value.holder, 'next');
        assert.ok(value.token > dead.token);
        assert.ok(ms >= 100 && ms < 1500, `granted after ${ms} ms`);
        assert.equal(await store.renewLease(dead, 10_000), false, 'the expired holder cannot renew');
        await store.releaseLease(dead);
        assert.equal(
          (await store.listLeases()).find((l) => l.scope === scope)?.holder,
          'next',
          'a stale release is ignored',
        );
        await store.releaseLease(value);
      });

      it('renews a held lease', T, async () => {
        const scope = uniqueScope('renew');
        const g = await lease(scope, 'a', 0, 150);
        await sleep(80);
        assert.equal(await store.renewLease(g, 5000), true);
        await sleep(120);
        await assert.rejects(lease(scope, 'b', 0), LeaseWaitTimeout);
        const held = (await store.listLeases()).find((l) => l.scope === scope);
        assert.equal(held?.holder, 'a');
        await store.releaseLease(g);
        assert.equal((await lease(scope, 'b', 0)).holder, 'b');
      });

      it('keeps the scope blocked for blockForMs after a release', T, async () => {
        const scope = uniqueScope('block');
        const g = await lease(scope, 'timed-out');
        const next = elapsed(() => lease(scope, 'next', 3000));
        await sleep(20);
        const releasedAt = Date.now();
        await store.releaseLease(g, 200);
        const { value } = await next;
        const after = Date.now() - releasedAt;
        assert.equal(value.holder, 'next');
        assert.ok(after >= 180 && after < 1500, `granted ${after} ms after the release`);
        await store.releaseLease(value);
      });

      it(
        'rejects with LeaseWaitTimeout and a retryAfterMs after waitMs, and the waiter leaves the queue',
        T,
        async () => {
          const scope = uniqueScope('wait-timeout');
          const g = await lease(scope, 'holder', 0, 5000);
          const began = Date.now();
          const err = await lease(scope, 'impatient', 120).then(
            () => assert.fail('granted'),
            (e: unknown) => e,
          );
          const waited = Date.now() - began;
          assert.ok(err instanceof LeaseWaitTimeout, String(err));
          assert.equal(err.scope, scope);
          assert.ok(err.retryAfterMs > 0 && err.retryAfterMs <= 5000, `retryAfterMs ${err.retryAfterMs}`);
          assert.ok(waited >= 100 && waited < 1500, `waited ${waited} ms`);
          assert.equal((await store.listLeases()).find((l) => l.scope === scope)?.waiters, 0);
          await store.releaseLease(g);
          const { value, ms } = await elapsed(() => lease(scope, 'later', 2000));
          assert.equal(value.holder, 'later');
          assert.ok(ms < 500, `no ghost waiter ahead (${ms} ms)`);
          await store.releaseLease(value);
        },
      );

      it('removes an aborted waiter from the queue', T, async () => {
        const scope = uniqueScope('abort');
        const g = await lease(scope, 'holder');
        const ac = new AbortController();
        const aborted = lease(scope, 'aborted', 5000, 10_000, ac.signal);
        await sleep(20);
        const behind = elapsed(() => lease(scope, 'behind', 3000));
        await sleep(30);
        ac.abort(new Error('agent cancelled'));
        await assert.rejects(aborted, /agent cancelled/);
        const releasedAt = Date.now();
        await store.releaseLease(g);
        const { value } = await behind;
        assert.equal(value.holder, 'behind');
        assert.ok(Date.now() - releasedAt < 500, 'the aborted waiter did not hold up the queue');
        await store.releaseLease(value);
        const pre = new AbortController();
        pre.abort(new Error('already gone'));
        await assert.rejects(lease(scope, 'x', 1000, 10_000, pre.signal), /already gone/);
      });
    });

    describe('combined write operations (beginWrite, finishWrite)', () => {
      const begin = (scope: string, owner: string, leases: string[], over: Partial<BeginWriteRequest> = {}) =>
        store.beginWrite({ ...claimReq(scope, owner), leases, leaseTtlMs: 10_000, dispatch: true, ...over });

      it('claims, grants every free lease and persists the dispatch in one step', T, async () => {
        const key = uniqueScope('bw');
        const scopes = [uniqueScope('bw-a'), uniqueScope('bw-b')].sort();
        const out = await begin(key, 'w1', scopes);
        assert.equal(out.kind, 'claimed');
        if (out.kind !== 'claimed') return;
        assert.equal(out.fence, 1);
        assert.equal(out.dispatched, true);
        assert.deepEqual(
          out.grants?.map((g) => [g.scope, g.holder]),
          scopes.map((s) => [s, 'w1']),
        );
        assert.equal((await store.getKey(key))?.state, 'dispatched');
        const listed = await store.listLeases();
        for (const s of scopes) assert.equal(listed.find((l) => l.scope === s)?.holder, 'w1');
        // Nobody else gets a lease that beginWrite granted.
        await assert.rejects(store.acquireLease(scopes[0]!, 'other', { ttlMs: 1000, waitMs: 0 }), LeaseWaitTimeout);
      });

      it('grants none of the leases when one is busy, and leaves the key claimed', T, async () => {
        const key = uniqueScope('bw-busy');
        const [free, busy] = [uniqueScope('bw-free'), uniqueScope('bw-held')];
        const held = await store.acquireLease(busy, 'holder', { ttlMs: 10_000, waitMs: 0 });
        const out = await begin(key, 'w1', [free, busy].sort());
        assert.equal(out.kind, 'claimed');
        if (out.kind !== 'claimed') return;
        assert.equal(out.grants, null);
        assert.equal(out.dispatched, false);
        assert.equal((await store.getKey(key))?.state, 'claimed');
        const g = await store.acquireLease(free, 'x', { ttlMs: 1000, waitMs: 0 });
        await store.releaseLease(g);
        await store.releaseLease(held);
      });

      it('claims without dispatching when asked not to', T, async () => {
        const key = uniqueScope('bw-nodispatch');
        const out = await begin(key, 'w1', [uniqueScope('bw-nd')], { dispatch: false });
        assert.ok(out.kind === 'claimed' && out.grants !== null && !out.dispatched);
        assert.equal((await store.getKey(key))?.state, 'claimed');
        assert.equal(await store.markDispatched(key, 'w1', 1, 10_000), true);
      });

      it('lets exactly one of 30 concurrent begins win a key, and one writer at a time hold a scope', T, async () => {
        const key = uniqueScope('bw-race');
        const scope = uniqueScope('bw-race-scope');
        const same = await Promise.all(Array.from({ length: 30 }, (_, i) => begin(key, `o${i}`, [scope])));
        assert.equal(same.filter((o) => o.kind === 'claimed').length, 1);
        const other = await Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            begin(uniqueScope('bw-k'), `p${i}`, [uniqueScope('bw-s'), scope].sort()),
          ),
        );
        assert.ok(other.every((o) => o.kind === 'claimed' && o.grants === null));
      });

      it('shows an existing record instead of claiming, and never grants its leases', T, async () => {
        const key = uniqueScope('bw-existing');
        const scope = uniqueScope('bw-ex');
        const first = await begin(key, 'w1', [scope]);
        assert.ok(first.kind === 'claimed' && first.grants);
        assert.equal(
          await store.finishWrite({
            scope: key,
            owner: 'w1',
            fence: 1,
            result: '{"a":1}',
            ttlMs: 10_000,
            grants: first.grants,
          }),
          true,
        );
        const again = await begin(key, 'w2', [scope]);
        assert.equal(again.kind, 'existing');
        if (again.kind !== 'existing') return;
        assert.equal(again.record.state, 'completed');
        assert.equal(again.record.result, '{"a":1}');
        const g = await store.acquireLease(scope, 'x', { ttlMs: 1000, waitMs: 0 });
        assert.ok(g.token > first.grants[0]!.token, 'tokens keep growing across both paths');
      });

      it('completes and releases in one step, waking a lease waiter and a joined caller at once', T, async () => {
        const key = uniqueScope('fw');
        const scope = uniqueScope('fw-scope');
        const out = await begin(key, 'w1', [scope]);
        assert.ok(out.kind === 'claimed' && out.grants);
        const waiter = elapsed(() => store.acquireLease(scope, 'next', { ttlMs: 10_000, waitMs: 5000 }));
        const joined = elapsed(() => store.waitForKey(key, 5000));
        await sleep(50);
        assert.equal(
          await store.finishWrite({
            scope: key,
            owner: 'w1',
            fence: out.fence,
            result: '{"ok":true}',
            ttlMs: 10_000,
            grants: out.grants,
          }),
          true,
        );
        const w = await waiter;
        const j = await joined;
        assert.ok(w.ms < 1000, `lease waiter woke after ${w.ms} ms`);
        assert.ok(w.value.token > out.grants[0]!.token);
        assert.ok(j.ms < 1000, `joined caller woke after ${j.ms} ms`);
        assert.equal(j.value?.state, 'completed');
        assert.equal(j.value?.result, '{"ok":true}');
        await store.releaseLease(w.value);
      });

      it('refuses to complete for a stale fence but still releases the leases', T, async () => {
        const key = uniqueScope('fw-stale');
        const scope = uniqueScope('fw-stale-scope');
        const out = await begin(key, 'w1', [scope]);
        assert.ok(out.kind === 'claimed' && out.grants);
        assert.equal(
          await store.finishWrite({
            scope: key,
            owner: 'w1',
            fence: out.fence + 1,
            result: '{}',
            ttlMs: 10_000,
            grants: out.grants,
          }),
          false,
        );
        assert.equal((await store.getKey(key))?.state, 'dispatched');
        const g = await store.acquireLease(scope, 'x', { ttlMs: 1000, waitMs: 0 });
        await store.releaseLease(g);
      });
    });

    describe('rate buckets (GCRA)', () => {
      it('admits the burst at once, then refuses with the exact wait, and admits after it', T, async () => {
        const bucket = uniqueScope('gcra');
        for (let i = 0; i < 5; i++)
          assert.deepEqual(await store.takeToken(bucket, 10, 5), { ok: true }, `burst call ${i}`);
        const refused = await store.takeToken(bucket, 10, 5);
        assert.equal(refused.ok, false);
        const wait = refused.ok ? 0 : refused.retryAfterMs;
        assert.ok(wait > 0 && wait <= 100, `retryAfterMs ${wait}`);
        // Refusals consume nothing: asking again does not push the admission further out.
        for (let i = 0; i < 5; i++) {
          const again = await store.takeToken(bucket, 10, 5);
          assert.ok(!again.ok && again.retryAfterMs <= wait);
        }
        await sleep(wait + 5);
        assert.deepEqual(await store.takeToken(bucket, 10, 5), { ok: true });
        const next = await store.takeToken(bucket, 10, 5);
        assert.ok(!next.ok && next.retryAfterMs > 50 && next.retryAfterMs <= 100, JSON.stringify(next));
      });

      it('admits at most burst + perSecond·T over a window', T, async () => {
        const bucket = uniqueScope('gcra-window');
        const began = Date.now();
        let admitted = 0;
        while (Date.now() - began < 400) {
          if ((await store.takeToken(bucket, 20, 3)).ok) admitted++;
          await sleep(5);
        }
        const window = (Date.now() - began) / 1000;
        assert.ok(admitted <= 3 + 20 * window + 1e-9, `admitted ${admitted} in ${window}s`);
        assert.ok(admitted >= 3 + 20 * 0.4 * 0.6, `admitted only ${admitted}`);
      });

      it('admits nothing while paused, then resumes', T, async () => {
        const bucket = uniqueScope('pause');
        assert.deepEqual(await store.takeToken(bucket, 100, 10), { ok: true });
        await store.pauseBucket(bucket, 200);
        const refused = await store.takeToken(bucket, 100, 10);
        assert.equal(refused.ok, false);
        const wait = refused.ok ? 0 : refused.retryAfterMs;
        assert.ok(wait >= 150 && wait <= 200, `retryAfterMs ${wait}`);
        await sleep(wait + 5);
        assert.deepEqual(await store.takeToken(bucket, 100, 10), { ok: true });
      });
    });

    describe('audit trail', () => {
      it('appends and queries by time, tool and limit, newest last', T, async () => {
        const tool = uniqueScope('tool');
        const other = uniqueScope('other');
        const base = Date.now() - 10_000;
        const entry = (i: number, t: string): AuditEntry => ({
          at: base + i * 100,
          agent: `agent-${i}`,
          tenant: 'default',
          tool: t,
          key: i % 2 === 0 ? `key-${i}` : null,
          scopes: i % 2 === 0 ? [`lab:c:${i}`, 'lab:x'] : [],
          fencingToken: i % 2 === 0 ? i * 10 : null,
          outcome: i === 3 ? 'conflict' : 'ok',
          durationMs: i,
        });
        for (let i = 0; i < 6; i++) await store.appendAudit(entry(i, i === 4 ? other : tool));
        const mine = await store.queryAudit({ tool });
        assert.deepEqual(
          mine,
          [0, 1, 2, 3, 5].map((i) => entry(i, tool)),
        );
        assert.deepEqual(await store.queryAudit({ tool, limit: 2 }), [entry(3, tool), entry(5, tool)]);
        assert.deepEqual(
          await store.queryAudit({ tool, sinceMs: base + 200 }),
          [2, 3, 5].map((i) => entry(i, tool)),
        );
        assert.deepEqual(await store.queryAudit({ tool: other }), [entry(4, other)]);
        const recent = await store.queryAudit({ sinceMs: base + 100 });
        assert.deepEqual(
          recent.filter((e) => e.tool === tool || e.tool === other),
          [1, 2, 3, 4, 5].map((i) => entry(i, i === 4 ? other : tool)),
        );
      });
    });

    describe('lifecycle', () => {
      it('pings while open and refuses with StoreUnavailable once closed', T, async () => {
        await store.ping();
        const closing = await makeStore();
        await closing.close();
        await assert.rejects(closing.claimKey(claimReq(uniqueScope('closed'), 'a')), StoreUnavailable);
        await assert.rejects(closing.ping(), StoreUnavailable);
        await closing.close();
      });
    });
  });
}
