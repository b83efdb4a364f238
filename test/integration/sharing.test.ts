// Sharing modes against the real bus and a real stateful upstream (test/fixtures/stateful-server.ts remembers notes
// per process): per-agent state is never seen by another agent (tools and resources), per-tenant state is shared
// inside a tenant only, idle sessions close and a later call opens a fresh one, maxSessions is never exceeded while
// every call is served or refused with upstream_unavailable, and killing one session's process touches one agent.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, ROOT, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busError, busErrorStrict, type ToolCallResult } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const STATEFUL = join(ROOT, 'dist/test/fixtures/stateful-server.js');
const dir = tempDir('toolbus-sharing-');
const pids = (up: string) => join(dir, `pids-${up}`);

const upstream = (name: string, extra: string, who = '{agent}', env = '{agent}@{tenant}') => `
  ${name}:
    command: ${process.execPath}
    args: [${STATEFUL}, "--who=${who}"]
    env: { STATEFUL_PIDDIR: ${pids(name)}, STATEFUL_WHO: "${env}" }
    trustAnnotations: true
    restart: { initialDelayMs: 200, maxDelayMs: 500 }
    ${extra}`;

const SECRET_FILE = join(dir, 'stateful-token');
writeFileSync(SECRET_FILE, 'secret-v1-abcdef\n');
const digest = (v: string) => createHash('sha256').update(v).digest('hex').slice(0, 12);

const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents:
  - { id: alice, token: "alice-token-123", tenant: t1 }
  - { id: bob, token: "bob-token-12345", tenant: t1 }
  - { id: carol, token: "carol-token-123", tenant: t2 }
  - { id: dave, token: "dave-token-1234", tenant: t2 }
upstreams:${upstream('pa', `sharing: per-agent\n    cwd: ${join(dir, 'ws', '{agent}')}`)}${upstream('pt', 'sharing: per-tenant', '{tenant}', '{tenant}')}${upstream('idle', 'sharing: per-agent\n    sessionIdleMs: 600')}${upstream(
  'cap',
  'sharing: per-agent\n    maxSessions: 2\n    queueWaitMs: 4000',
)}${upstream('full', 'sharing: per-agent\n    maxSessions: 1\n    queueWaitMs: 600')}${upstream(
  'fair',
  'sharing: per-agent\n    maxSessions: 2\n    maxConcurrency: 2\n    queueWaitMs: 400',
)}
${upstream('rl', 'sharing: per-agent\n    rateLimit: { perSecond: 1, burst: 2 }\n    queueWaitMs: 300')}
  sec:
    command: ${process.execPath}
    args: [${STATEFUL}]
    env: { STATEFUL_TOKEN: "\${file:${SECRET_FILE}}" }
    sharing: per-agent
    trustAnnotations: true
  sh:
    command: ${process.execPath}
    args: [${STATEFUL}]
    trustAnnotations: true
`;

let bus: BusProcess;
const clients: Record<string, AgentClient> = {};
const as = (id: 'alice' | 'bob' | 'carol' | 'dave') => clients[id]!;
/** All four agents at once, three calls each of `tool` holding its session for `ms`; each result with its agent. */
const flood = (tool: string, ms: number) =>
  Promise.all(
    (['alice', 'bob', 'carol', 'dave'] as const).flatMap((id) =>
      [0, 1, 2].map(() =>
        as(id)
          .call(tool, { ms })
          .then((r) => ({ id, r })),
      ),
    ),
  );
let keySeq = 0;
const key = () => `sharing-key-${process.pid}-${++keySeq}`;

function sc(r: ToolCallResult): Record<string, unknown> {
  assert.equal(r.isError, undefined, JSON.stringify(r));
  return r.structuredContent ?? (JSON.parse(r.content?.[0]?.text ?? '{}') as Record<string, unknown>);
}

/** Live session processes of an upstream (the listing session, which names itself _catalog, left out). */
function livePids(up: string): number[] {
  if (!existsSync(pids(up))) return [];
  return readdirSync(pids(up))
    .map(Number)
    .filter((pid) => {
      try {
        process.kill(pid, 0);
      } catch {
        return false;
      }
      try {
        return !readFileSync(join(pids(up), String(pid)), 'utf8').includes('_catalog');
      } catch {
        return false; // exited while we looked
      }
    });
}

async function metric(name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`${bus.url.replace(/\/mcp$/, '')}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

describe('sharing modes', () => {
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
    for (const [id, token] of [
      ['alice', 'alice-token-123'],
      ['bob', 'bob-token-12345'],
      ['carol', 'carol-token-123'],
      ['dave', 'dave-token-1234'],
    ] as const) {
      clients[id] = new AgentClient(bus.url, token);
      await clients[id].initialize();
    }
  });
  after(async () => {
    await bus?.stop();
  });

  it('per-agent: one agent’s state is never seen by another, through tools or resources', async () => {
    const wrote = sc(await as('alice').call('pa__remember', { note: 'alice-private', idempotency_key: key() }));
    assert.equal(wrote.count, 1);
    assert.equal(wrote.env, 'alice@t1');
    assert.deepEqual(wrote.args, ['--who=alice']);
    assert.equal(wrote.cwd, join(dir, 'ws', 'alice'));

    const carol = sc(await as('carol').call('pa__recall'));
    assert.deepEqual(carol.notes, []);
    assert.notEqual(carol.pid, wrote.pid);
    assert.equal(carol.env, 'carol@t2');
    const bob = sc(await as('bob').call('pa__recall'));
    assert.deepEqual(bob.notes, [], 'same tenant, other agent: still isolated in per-agent mode');
    assert.deepEqual(sc(await as('alice').call('pa__recall')).notes, ['alice-private']);

    const noteUris = async (id: 'alice' | 'carol') =>
      ((await as(id).request('resources/list')).resources as { uri: string }[])
        .map((r) => r.uri)
        .filter((u) => u.startsWith('toolbus://pa/'));
    assert.deepEqual(await noteUris('alice'), ['toolbus://pa/note://0']);
    assert.deepEqual(await noteUris('carol'), []);
    const read = await as('alice').request('resources/read', { uri: 'toolbus://pa/note://0' });
    assert.equal((read.contents as { text: string }[])[0]?.text, 'alice-private');
    // carol names alice's resource: it is read from carol's own session, where it does not exist.
    await assert.rejects(as('carol').request('resources/read', { uri: 'toolbus://pa/note://0' }), /no note 0/);
  });

  it('per-tenant: state is shared inside a tenant and never across; keys stay scoped by tenant', async () => {
    const k = key();
    const first = sc(await as('alice').call('pt__remember', { note: 't1-note', idempotency_key: k }));
    assert.equal(first.env, 't1');
    const bobSees = sc(await as('bob').call('pt__recall'));
    assert.deepEqual(bobSees.notes, ['t1-note']);
    assert.equal(bobSees.pid, first.pid);
    // bob retries alice's operation with her key: one tenant, one key scope, so it is a replay, not a second write.
    const replay = await as('bob').call('pt__remember', { note: 't1-note', idempotency_key: k });
    assert.equal((replay._meta as Record<string, unknown>)['toolbus/replayed'], true);
    assert.deepEqual(sc(await as('bob').call('pt__recall')).notes, ['t1-note']);
    // carol (t2) with the same key: her tenant's scope, her tenant's session.
    const carolWrite = sc(await as('carol').call('pt__remember', { note: 't2-note', idempotency_key: k }));
    assert.equal(carolWrite.count, 1);
    assert.equal(carolWrite.env, 't2');
    assert.deepEqual(sc(await as('dave').call('pt__recall')).notes, ['t2-note']);
    assert.deepEqual(sc(await as('alice').call('pt__recall')).notes, ['t1-note']);
  });

  it('shared mode (the default) is one session for everyone', async () => {
    const a = sc(await as('alice').call('sh__remember', { note: 'shared-note', idempotency_key: key() }));
    const c = sc(await as('carol').call('sh__recall'));
    assert.equal(c.pid, a.pid);
    assert.deepEqual(c.notes, ['shared-note']);
  });

  it('closes a session after sessionIdleMs without calls; a later call opens a fresh one', async () => {
    const first = sc(await as('alice').call('idle__remember', { note: 'before-idle', idempotency_key: key() }));
    assert.deepEqual(livePids('idle'), [first.pid]);
    await waitFor(() => livePids('idle').length === 0, 8000, 'idle session closed');
    assert.ok(((await metric('toolbus_upstream_sessions_closed_total', 'upstream="idle",reason="idle"')) ?? 0) >= 1);
    assert.equal(await metric('toolbus_upstream_sessions', 'upstream="idle",sharing="per-agent"'), 0);
    const again = sc(await as('alice').call('idle__recall'));
    assert.notEqual(again.pid, first.pid);
    assert.deepEqual(again.notes, [], 'a fresh session starts empty');
  });

  it('never exceeds maxSessions; every call is served or gets upstream_unavailable', async () => {
    let maxSeen = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxSeen = Math.max(maxSeen, livePids('cap').length);
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
    const results = await flood('cap__hold', 150);
    sampling = false;
    await sampler;
    let served = 0;
    for (const { id, r } of results) {
      const err = busError(r);
      if (err) assert.equal(err.category, 'upstream_unavailable', JSON.stringify(err));
      else {
        served++;
        assert.deepEqual(sc(r).args, [`--who=${id}`], 'each call ran in its own agent’s session');
      }
    }
    assert.ok(served >= 8, `most calls are served within queueWaitMs (served ${served} of 12)`);
    assert.ok(maxSeen <= 2, `at most maxSessions processes alive, saw ${maxSeen}`);
    assert.ok(maxSeen >= 1);
    assert.ok(((await metric('toolbus_upstream_sessions_closed_total', 'upstream="cap",reason="evicted"')) ?? 0) >= 2);

    // Both sessions of `full` (maxSessions 1) busy past queueWaitMs: the structured refusal, with retryAfterMs.
    const holding = as('alice').call('full__hold', { ms: 2000 });
    await waitFor(() => livePids('full').length === 1, 5000, 'alice holds the only session');
    const refused = busErrorStrict(await as('carol').call('full__recall'));
    assert.equal(refused.category, 'upstream_unavailable');
    assert.equal(refused.code, 'sessions_full');
    assert.equal(refused.retryable, true);
    assert.ok((refused.retryAfterMs ?? 0) > 0);
    sc(await holding);
    // Once alice's call is over, carol gets a session (alice's idle one makes room).
    assert.deepEqual(sc(await as('carol').call('full__recall')).args, ['--who=carol']);
    assert.ok(livePids('full').length <= 1);
  });

  it('with maxConcurrency at most maxSessions, no call the fair queue admitted is refused sessions_full', async () => {
    // More agents than sessions, each with several calls at once, more work than queueWaitMs allows. Calls are turned
    // away by the fair queue (rate_limited), or while a new session's process starts (upstream_down), but a call the
    // queue admitted always finds its own session, a free place or an idle one to replace: never sessions_full.
    // (With maxConcurrency above maxSessions, admitted calls wait for sessions after the queue, and are refused so.)
    const results = await flood('fair__hold', 200);
    let served = 0;
    for (const { id, r } of results) {
      const err = busError(r);
      if (err) assert.ok(err.code !== 'sessions_full', JSON.stringify(err));
      else {
        served++;
        assert.deepEqual(sc(r).args, [`--who=${id}`]);
      }
    }
    assert.ok(served >= 2, `served ${served} of 12`);
    assert.ok(livePids('fair').length <= 2);
  });

  it('killing one session’s process affects only that agent; it is restarted, fresh', async () => {
    sc(await as('carol').call('pa__remember', { note: 'carol-note', idempotency_key: key() }));
    const alice = sc(await as('alice').call('pa__recall'));
    const carolBefore = sc(await as('carol').call('pa__recall'));
    process.kill(alice.pid as number, 'SIGKILL');
    // carol's session is untouched: same process, same state, answering at once.
    for (let i = 0; i < 3; i++) {
      const c = sc(await as('carol').call('pa__recall'));
      assert.equal(c.pid, carolBefore.pid);
      assert.deepEqual(c.notes, ['carol-note']);
    }
    // alice gets upstream_unavailable while her session restarts, then a new process (its state lost with the old).
    let after: Record<string, unknown> | undefined;
    await waitFor(
      async () => {
        const r = await as('alice').call('pa__recall');
        const err = busError(r);
        if (err) {
          assert.equal(err.category, 'upstream_unavailable', JSON.stringify(err));
          return false;
        }
        after = sc(r);
        return true;
      },
      8000,
      'alice served again',
    );
    assert.notEqual(after?.pid, alice.pid);
    assert.deepEqual(after?.notes, []);
    assert.equal(after?.env, 'alice@t1');
  });

  it('one rate limit counts the calls of every session together', async () => {
    // burst 2, 1/s, queueWaitMs 300: of four agents' simultaneous first calls, each in its own session, at most 2
    // (the burst) go at once; the others wait or are turned away. Per-session buckets would let all four through.
    const results = await Promise.all(
      (['alice', 'bob', 'carol', 'dave'] as const).map((id) => as(id).call('rl__recall')),
    );
    const limited = results.map(busError).filter((e) => e !== undefined);
    for (const e of limited) assert.equal(e.category, 'rate_limited', JSON.stringify(e));
    assert.ok(limited.length >= 1, 'the shared bucket turned calls away');
    const pidsServed = new Set(results.filter((r) => !busError(r)).map((r) => sc(r).pid));
    assert.equal(pidsServed.size, 4 - limited.length, 'each call served ran in its own agent’s session');
  });

  it('injects secrets into every session and rotates each live session blue/green', async () => {
    const before = await Promise.all(
      (['alice', 'carol'] as const).map(async (id) => sc(await as(id).call('sec__recall'))),
    );
    for (const b of before) assert.equal(b.tokenDigest, digest('secret-v1-abcdef'));
    writeFileSync(SECRET_FILE, 'secret-v2-ghijkl\n');
    for (const id of ['alice', 'carol'] as const) {
      await waitFor(
        async () => sc(await as(id).call('sec__recall')).tokenDigest === digest('secret-v2-ghijkl'),
        10_000,
        `${id}'s session uses the rotated secret`,
      );
    }
    const afterPids = await Promise.all(
      (['alice', 'carol'] as const).map(async (id) => sc(await as(id).call('sec__recall')).pid),
    );
    assert.notEqual(afterPids[0], before[0]?.pid);
    assert.notEqual(afterPids[1], before[1]?.pid);
    assert.notEqual(afterPids[0], afterPids[1], 'still one session per agent');
    assert.ok(!bus.stderr().includes('secret-v2-ghijkl') && !bus.stdout().includes('secret-v2-ghijkl'));
  });

  it('the dashboard shows sessions per upstream', async () => {
    const res = await fetch(`${bus.url.replace(/\/mcp$/, '')}/api/dashboard`);
    const snap = (await res.json()) as { upstreams: Record<string, unknown>[] };
    const pa = snap.upstreams.find((u) => u.name === 'pa') as {
      sharing: string;
      sessions: { live: number; max: number; list: { key: string }[] };
    };
    assert.equal(pa.sharing, 'per-agent');
    assert.equal(pa.sessions.max, 32);
    assert.deepEqual(pa.sessions.list.map((s) => s.key).sort(), ['alice', 'bob', 'carol']);
    assert.equal(pa.sessions.live, 3);
    const sh = snap.upstreams.find((u) => u.name === 'sh') as { sharing: string; sessions: { live: number } };
    assert.equal(sh.sharing, 'shared');
    assert.equal(sh.sessions.live, 1);
  });
});
