// Upstream OAuth (DESIGN.md section 15) against a real, strict authorization server on loopback
// (test/fixtures/oauth-upstream.ts: PKCE S256, resource indicators, exact redirect URIs, refresh-token rotation with
// reuse detection that revokes the family, 2 s access tokens) and the MCP server it protects:
//   - one `toolbus login`, then 24 agents for 20 s on one SQLite bus and on 3 Redis replicas: no failed call, no reuse
//     detection, one refresh per expiry for the whole cluster;
//   - a 401 (access token revoked early) costs one refresh and one resend, not a failed call;
//   - a revoked grant turns the upstream to needs_login (structured error, /readyz, dashboard) until a new login;
//   - no token in agent replies, logs, metrics, the dashboard, or in clear in the store.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { type BusProcess, CLI, startBus, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { busErrorStrict, post, type ToolCallResult } from '../helpers/mcp-http.js';
import { loginViaCli, type OAuthStats, type OAuthUpstream, startOAuthUpstream } from '../helpers/oauth.js';
import { waitFor } from '../helpers/wait.js';

const AGENTS = 24;
const LOAD_MS = 20_000;
const ACCESS_TTL_MS = 2000;
/** serve refreshes at 80% of the lifetime. */
const REFRESH_EVERY_MS = ACCESS_TTL_MS * 0.8;
const REDIS_URL = 'redis://127.0.0.1:6379/0';

function config(store: string, mcpUrl: string, oauth = '{}'): string {
  const agents = Array.from({ length: AGENTS }, (_, i) => `  - { id: a${i}, token: "agent-token-${i}" }`).join('\n');
  return `
store: ${store}
logging: { level: info }
agents:
${agents}
upstreams:
  remote:
    url: ${mcpUrl}
    trustAnnotations: true
    maxConcurrency: 32
    oauth: ${oauth}
`;
}

async function call(
  busUrl: string,
  agent: number,
  n: number,
): Promise<{ status: number; result?: ToolCallResult; text: string }> {
  const r = await post(busUrl, `agent-token-${agent}`, {
    jsonrpc: '2.0',
    id: n,
    method: 'tools/call',
    params: { name: 'remote__echo', arguments: { n } },
  });
  const body = r.body as { result?: ToolCallResult } | null;
  return { status: r.status, ...(body?.result ? { result: body.result } : {}), text: r.text };
}

/** 24 agents, each calling in a loop (with a short pause, to spare the 2-core machine) until the time is up. */
async function agentsCalling(
  busUrls: string[],
  ms: number,
): Promise<{ ok: number; failed: number; samples: string[] }> {
  const end = Date.now() + ms;
  let ok = 0;
  let failed = 0;
  const samples: string[] = [];
  await Promise.all(
    Array.from({ length: AGENTS }, async (_, i) => {
      const url = busUrls[i % busUrls.length]!;
      for (let n = 1; Date.now() < end && n < 100_000; n++) {
        const r = await call(url, i, n);
        // The exact text proves the reply carries the tool's answer and nothing else.
        if (r.status === 200 && r.result?.isError !== true && r.result?.content?.[0]?.text === JSON.stringify({ n }))
          ok++;
        else {
          failed++;
          if (samples.length < 5) samples.push(r.text.slice(0, 400));
        }
        await sleep(20);
      }
    }),
  );
  return { ok, failed, samples };
}

function assertNoToken(where: string, text: string, tokens: string[]): void {
  const leaked = tokens.filter((t) => text.includes(t));
  assert.equal(leaked.length, 0, `${leaked.length} token(s) found in ${where}`);
}

async function surfaces(bus: BusProcess): Promise<string> {
  const get = async (path: string) => (await fetch(`${new URL(bus.url).origin}${path}`)).text();
  return [bus.stdout(), bus.stderr(), await get('/metrics'), await get('/api/dashboard'), await get('/readyz')].join(
    '\n',
  );
}

/**
 * Agents calling through a login kept the calls flowing, and the upstream saw each refresh once: no refresh token
 * redeemed twice, none refused, and as many refreshes as the token lifetimes allow (`min`..`max`).
 */
function assertRefreshedOnce(
  label: string,
  load: { ok: number; failed: number; samples: string[] },
  stats: OAuthStats,
  min: number,
  max: number,
): void {
  console.log(
    `${label}: ${load.ok} calls ok, ${load.failed} failed, ${stats.refreshes} refreshes (expected ${min}..${max}), ${stats.reuseDetections} reuse detections`,
  );
  assert.equal(load.failed, 0, load.samples.join('\n'));
  assert.ok(load.ok > AGENTS * 10);
  assert.equal(stats.reuseDetections, 0);
  assert.equal(stats.refusedRefreshes, 0);
  assert.ok(stats.refreshes >= min && stats.refreshes <= max, `${stats.refreshes} refreshes, expected ${min}..${max}`);
}

function refreshBounds(sinceLoginMs: number, loadMs: number): { min: number; max: number } {
  // One refresh per expiry for the cluster: about one every 1.6 s since the login. Per-replica refreshing would be
  // three times that; the lower bound proves refreshes happened at all.
  return { min: Math.floor(loadMs / REFRESH_EVERY_MS) - 1, max: Math.ceil(sinceLoginMs / REFRESH_EVERY_MS) + 1 };
}

describe('upstream OAuth on one SQLite bus', { timeout: 120_000 }, () => {
  const dir = tempDir('toolbus-oauth-');
  const file = join(dir, 'toolbus.yaml');
  let upstream: OAuthUpstream;
  let bus: BusProcess;
  let loggedInAt = 0;

  before(async () => {
    upstream = await startOAuthUpstream({ ACCESS_TTL_S: String(ACCESS_TTL_MS / 1000) });
    writeFileSync(file, config(`{ kind: sqlite, path: ${join(dir, 'state.db')} }`, upstream.mcpUrl));
  });
  after(async () => {
    await bus?.stop();
    await upstream?.stop();
  });

  it('serve without a login: needs_login on /readyz, and the log says what to run', async () => {
    bus = await startBusWithConfig(file, { cwd: dir });
    const ready = await fetch(`${new URL(bus.url).origin}/readyz`);
    assert.equal(ready.status, 503);
    assert.equal(((await ready.json()) as { upstreams: Record<string, string> }).upstreams.remote, 'needs_login');
    await waitFor(() => /"run":"toolbus login remote"/.test(bus.stderr()), 5000, 'the log line');
    // Never connected, so its tools are not in the catalog yet: a call to one of its names says what to do.
    const r = await call(bus.url, 0, 1);
    const e = busErrorStrict(r.result!);
    assert.equal(e.category, 'upstream_unavailable');
    assert.equal(e.code, 'needs_login');
    assert.match(e.hint, /toolbus login remote/);
  });

  it('logs in once while the bus runs: URL on its own line, loopback redirect, picked up within seconds', async () => {
    const login = await loginViaCli(dir, file, 'remote');
    loggedInAt = Date.now();
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stdout, /^http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+$/m);
    assert.match(login.stdout, /logged in to remote/);
    const stats = await upstream.stats();
    assert.equal(stats.registrations, 1, 'registered by DCR');
    assert.equal(stats.codeExchanges, 1);
    const key = join(dir, '.toolbus/oauth.key');
    assert.equal(statSync(key).mode & 0o777, 0o600);
    await waitFor(async () => (await call(bus.url, 0, 1)).result?.content?.[0]?.text === '{"n":1}', 5000, 'pick-up');
    assert.ok(Date.now() - loggedInAt < 5000);
  });

  it('24 agents for 20 s: no failed call, no reuse, one refresh per expiry', async () => {
    const loadStart = Date.now();
    const load = await agentsCalling([bus.url], LOAD_MS);
    const loadMs = Date.now() - loadStart;
    const stats = await upstream.stats();
    const { min, max } = refreshBounds(Date.now() - loggedInAt, loadMs);
    assertRefreshedOnce('sqlite', load, stats, min, max);
  });

  it('a 401 costs one refresh and one resend, not a failed call', async () => {
    const before401 = await upstream.stats();
    await upstream.admin('expire-access');
    for (let i = 0; i < 5; i++) {
      const r = await call(bus.url, i, 1000 + i);
      assert.equal(r.result?.content?.[0]?.text, JSON.stringify({ n: 1000 + i }), r.text);
    }
    const after401 = await upstream.stats();
    assert.ok(after401.unauthorized > before401.unauthorized, 'the upstream did refuse the old token');
    assert.ok(after401.refreshes - before401.refreshes <= 2, `${after401.refreshes - before401.refreshes} refreshes`);
    assert.equal(after401.reuseDetections, 0);
  });

  it('keeps every token out of replies, logs, metrics, the dashboard and the store file', async () => {
    const tokens = await upstream.issued();
    assert.ok(tokens.length > 10);
    assertNoToken('bus output and endpoints', await surfaces(bus), tokens);
    for (const f of ['state.db', 'state.db-wal']) {
      const path = join(dir, f);
      if (existsSync(path)) assertNoToken(f, readFileSync(path).toString('latin1'), tokens);
    }
  });

  it('a revoked grant: needs_login on calls, /readyz and the dashboard; a new login brings it back', async () => {
    await upstream.admin('revoke-all');
    let err: ReturnType<typeof busErrorStrict> | undefined;
    await waitFor(
      async () => {
        const r = await call(bus.url, 0, 1);
        if (r.result?.isError) err = busErrorStrict(r.result);
        return err?.code === 'needs_login';
      },
      10_000,
      'needs_login',
    );
    assert.equal(err!.category, 'upstream_unavailable');
    assert.equal(err!.retryable, true);
    assert.match(err!.hint, /`toolbus login remote`/);
    const origin = new URL(bus.url).origin;
    const ready = await fetch(`${origin}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(await ready.text(), /"remote":"needs_login"/);
    const dash = (await (await fetch(`${origin}/api/dashboard`)).json()) as {
      upstreams: { name: string; state: string }[];
    };
    assert.equal(dash.upstreams.find((u) => u.name === 'remote')?.state, 'needs_login');
    assert.match(bus.stderr(), /toolbus login remote/);

    const again = await loginViaCli(dir, file, 'remote');
    assert.equal(again.code, 0, again.stderr);
    await waitFor(async () => (await call(bus.url, 1, 7)).result?.content?.[0]?.text === '{"n":7}', 10_000, 'recovery');
    assert.equal((await upstream.stats()).reuseDetections, 0);
  });

  it('step-up: a 403 insufficient_scope is needs_login, and the next login asks for the wanted scope', async () => {
    const r = await post(bus.url, 'agent-token-0', {
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'remote__admin_echo', arguments: { n: 5 } },
    });
    const err = busErrorStrict((r.body as { result: ToolCallResult }).result);
    assert.equal(err.code, 'needs_login');
    assert.match(bus.stderr(), /needs more scopes \(tools admin\)/);
    assert.equal((await upstream.stats()).insufficientScope, 1);
    const login = await loginViaCli(dir, file, 'remote');
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stdout, /[?&]scope=tools(\+|%20)admin(&|$)/m);
    await waitFor(
      async () => {
        const again = await post(bus.url, 'agent-token-0', {
          jsonrpc: '2.0',
          id: 2,
          method: 'tools/call',
          params: { name: 'remote__admin_echo', arguments: { n: 6 } },
        });
        return (again.body as { result?: ToolCallResult }).result?.content?.[0]?.text === '{"n":6}';
      },
      10_000,
      'the stepped-up call',
    );
  });

  it('logout forgets the tokens: the bus goes to needs_login at its next refresh', async () => {
    const out = spawnSync(process.execPath, [CLI, 'logout', 'remote', '--config', file], {
      cwd: dir,
      encoding: 'utf8',
    });
    assert.equal(out.status, 0, out.stderr);
    const readyz = `${new URL(bus.url).origin}/readyz`;
    await waitFor(async () => /"remote":"needs_login"/.test(await (await fetch(readyz)).text()), 5000, 'needs_login');
  });
});

describe('upstream OAuth on three Redis replicas', { timeout: 120_000 }, () => {
  const dir = tempDir('toolbus-oauth-redis-');
  const file = join(dir, 'toolbus.yaml');
  const prefix = `tb-oauth-${process.pid}-${Date.now()}:`;
  let upstream: OAuthUpstream;
  const buses: BusProcess[] = [];

  before(async () => {
    upstream = await startOAuthUpstream({ ACCESS_TTL_S: String(ACCESS_TTL_MS / 1000) });
    writeFileSync(file, config(`{ kind: redis, url: "${REDIS_URL}", prefix: "${prefix}" }`, upstream.mcpUrl));
  });
  after(async () => {
    await Promise.all(buses.map((b) => b.stop()));
    await upstream?.stop();
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('one login, 3 replicas, 24 agents for 20 s: no failed call, no reuse, one refresh per expiry', async () => {
    const login = await loginViaCli(dir, file, 'remote');
    const loggedInAt = Date.now();
    assert.equal(login.code, 0, login.stderr);
    for (let i = 0; i < 3; i++) buses.push(await startBusWithConfig(file, { cwd: dir }));
    const loadStart = Date.now();
    const load = await agentsCalling(
      buses.map((b) => b.url),
      LOAD_MS,
    );
    const loadMs = Date.now() - loadStart;
    const stats = await upstream.stats();
    const { min, max } = refreshBounds(Date.now() - loggedInAt, loadMs);
    assertRefreshedOnce('redis x3', load, stats, min, max);
    assert.equal(stats.codeExchanges, 1, 'one login for the cluster');
    // The replicas' own count agrees: together they made exactly the refreshes the server saw.
    let made = 0;
    for (const b of buses) {
      const text = await (await fetch(`${new URL(b.url).origin}/metrics`)).text();
      made += Number(/^toolbus_upstream_token_requests_total\{upstream="remote"\} (\d+)/m.exec(text)?.[1] ?? 0);
    }
    assert.equal(made, stats.refreshes);

    const tokens = await upstream.issued();
    for (const b of buses) assertNoToken('a replica', await surfaces(b), tokens);
    const redis = new Redis(REDIS_URL);
    try {
      const keys = await redis.keys(`${prefix}*`);
      const vaultKeys = keys.filter((k) => k.includes('vault'));
      assert.ok(vaultKeys.length > 0, 'the grant is in Redis');
      let dump = '';
      for (const k of keys) {
        const type = await redis.type(k);
        if (type === 'string') dump += await redis.get(k);
        else if (type === 'hash') dump += JSON.stringify(await redis.hgetall(k));
      }
      assertNoToken('Redis', dump, tokens);
    } finally {
      redis.disconnect();
    }
  });
});

describe('upstream OAuth, client_credentials', { timeout: 30_000 }, () => {
  it('gets its own token with no login and calls through', async () => {
    const upstream = await startOAuthUpstream({ MACHINE_CLIENT_SECRET: 'machine-secret-for-test' });
    const bus = await startBus(
      config(
        '{ kind: memory }',
        upstream.mcpUrl,
        `{ grant: client_credentials, clientId: machine, clientSecret: "${'$'}{env:TB_MACHINE_SECRET}" }`,
      ),
      { env: { TB_MACHINE_SECRET: 'machine-secret-for-test' } },
    );
    try {
      const r = await call(bus.url, 0, 3);
      assert.equal(r.result?.content?.[0]?.text, '{"n":3}', r.text);
      const stats = await upstream.stats();
      assert.equal(stats.clientCredentials, 1);
      assert.equal(stats.codeExchanges, 0);
      assertNoToken('bus output', await surfaces(bus), await upstream.issued());
    } finally {
      await bus.stop();
      await upstream.stop();
    }
  });
});
