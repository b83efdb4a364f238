// Agents authenticating with JWT access tokens from an identity provider on loopback (a real HTTP server publishing
// discovery and a JWKS, with an issuer that carries a path), and with short-lived tokens from `toolbus token create`,
// side by side with static tokens. Every refusal is checked by its 401 reason; every acceptance by what the agent can
// see and do (its tool list, and the agent id and tenant the write audit trail records).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, CLI, LAB_SERVER, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { JwksIssuer, unsignedToken } from '../helpers/jwks-issuer.js';
import { AgentClient, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const SIGNING_KEY = 'signing-key-for-tests-0123456789abcdef';

function toolbus(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function reasonOf(url: string, token: string | null): Promise<string | number> {
  const r = await post(url, token, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
  if (r.status === 200) return 200;
  assert.equal(r.status, 401, r.text);
  assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer /);
  return (JSON.parse(r.text) as { reason: string }).reason;
}

async function toolNames(url: string, token: string): Promise<string[]> {
  return (await new AgentClient(url, token).listTools()).map((t) => t.name as string).sort();
}

describe('agents with JWT access tokens', () => {
  let idp: JwksIssuer;
  let bus: BusProcess;
  let dir: string;
  let config: string;

  before(async () => {
    idp = await JwksIssuer.start('/realms/fleet');
    dir = tempDir();
    config = join(dir, 'toolbus.yaml');
    writeFileSync(
      config,
      `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents:
  - { id: static-agent, token: "static-token-0001", tools: ["lab__echo"] }
  - { id: retired-agent, token: "retired-token-0001" }
  - { id: script-agent, token: "script-static-token-0001", tenant: scripts, tools: ["lab__slow", "lab__echo"] }
auth:
  oidc:
    issuer: ${idp.issuer}
    claims: { agent: azp, tenant: org, tools: toolbus_tools, groups: groups }
    jwksCooldownMs: 1000
  signing: { key: "${SIGNING_KEY}" }
  agents:
    ops-bot: { weight: 2, tools: ["lab__*"] }
    retired-agent: { tokenExpiresAt: "2020-01-01T00:00:00Z" }
  groups:
    readers: { tools: ["lab__echo", "lab__whoami"] }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_STATE: ${join(dir, 'lab-state.json')} }
    tools:
      echo: { kind: read }
      whoami: { kind: read }
      slow: { kind: read }
      counter_incr: { kind: write, idempotency: required }
`,
    );
    bus = await startBusWithConfig(config, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
    await idp?.close();
  });

  it('maps a valid token to exactly its agent id, its tenant and its allow-list', async () => {
    const aud = bus.url;
    const ops = await idp.sign({ azp: 'ops-bot', org: 'acme' }, { audience: aud });
    assert.ok((await toolNames(bus.url, ops)).includes('lab__counter_incr'));
    const r = await new AgentClient(bus.url, ops).call('lab__counter_incr', {
      entity: 'oidc',
      idempotency_key: 'oidc-key-000001',
    });
    assert.notEqual(r.isError, true, JSON.stringify(r));
    // The audit trail (read by the CLI from the store) records who it was.
    const audit = toolbus(['audit', '--config', config, '--json', '--tool', 'lab__counter_incr'], dir);
    assert.equal(audit.code, 0, audit.stderr);
    const rows = audit.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      rows.map((x) => [x.agent, x.tenant]),
      [['ops-bot', 'acme']],
    );

    // A group claim gives the group's allow-list; a tools claim can only narrow it.
    const reader = await idp.sign({ azp: 'dashboards', org: 'acme', groups: ['readers'] }, { audience: aud });
    assert.deepEqual(await toolNames(bus.url, reader), ['lab__echo', 'lab__whoami']);
    const narrowed = await idp.sign(
      { azp: 'dashboards', org: 'acme', groups: ['readers'], toolbus_tools: 'lab__echo lab__counter_incr' },
      { audience: aud },
    );
    assert.deepEqual(await toolNames(bus.url, narrowed), ['lab__echo']);
    // An `aud` array containing the resource is fine; `typ: JWT` is accepted as well as at+jwt.
    const listAud = await idp.sign({ azp: 'ops-bot', org: 'acme' }, { audience: ['other', aud], typ: 'JWT' });
    assert.equal(await reasonOf(bus.url, listAud), 200);
  });

  it('refuses wrong issuer, wrong audience, expired, not-yet-valid, bad signature, alg none', async () => {
    const aud = bus.url;
    const claims = { azp: 'ops-bot', org: 'acme' };
    const cases: [string, string][] = [
      ['wrong issuer', await idp.sign(claims, { audience: aud, issuer: 'http://127.0.0.1:1/realms/fleet' })],
      ['wrong audience', await idp.sign(claims, { audience: 'http://127.0.0.1:1/mcp' })],
      ['no audience', await idp.sign(claims)],
      ['expired past the skew', await idp.sign(claims, { audience: aud, expiresIn: -90 })],
      ['not yet valid past the skew', await idp.sign(claims, { audience: aud, notBefore: 120 })],
      ['bad signature', await idp.sign(claims, { audience: aud }, await idp.strangerKey())],
      ['alg none', unsignedToken({ ...claims, iss: idp.issuer, aud, exp: Math.floor(Date.now() / 1000) + 300 })],
      ['an id token typ', await idp.sign(claims, { audience: aud, typ: 'id_token+jwt' })],
      ['no agent claim', await idp.sign({ org: 'acme' }, { audience: aud })],
    ];
    const reasons = Object.fromEntries(await Promise.all(cases.map(async ([n, t]) => [n, await reasonOf(bus.url, t)])));
    assert.deepEqual(reasons, {
      'wrong issuer': 'wrong_issuer',
      'wrong audience': 'wrong_audience',
      'no audience': 'wrong_audience',
      'expired past the skew': 'expired',
      'not yet valid past the skew': 'not_yet_valid',
      'bad signature': 'invalid_token',
      'alg none': 'invalid_token',
      'an id token typ': 'invalid_token',
      'no agent claim': 'unknown_agent',
    });
    // Inside the 60 s skew a token still works.
    assert.equal(await reasonOf(bus.url, await idp.sign(claims, { audience: aud, expiresIn: -20 })), 200);
    // A token for another audience never works, whichever agent it names.
    const staticName = await idp.sign({ azp: 'static-agent' }, { audience: 'https://elsewhere.example/mcp' });
    assert.equal(await reasonOf(bus.url, staticName), 'wrong_audience');
  });

  it('the 401 points to RFC 9728 metadata naming the issuer, and reveals nothing else', async () => {
    const r = await post(bus.url, null, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    assert.equal(r.status, 401);
    const header = r.headers.get('www-authenticate') ?? '';
    const m = /resource_metadata="([^"]+)"/.exec(header);
    assert.ok(m, header);
    const origin = new URL(bus.url).origin;
    assert.equal(m[1], `${origin}/.well-known/oauth-protected-resource/mcp`);
    assert.deepEqual(Object.keys(JSON.parse(r.text) as object).sort(), ['error', 'error_description', 'reason']);
    for (const [path, resource] of [
      ['/.well-known/oauth-protected-resource', bus.url],
      ['/.well-known/oauth-protected-resource/mcp', bus.url],
      ['/.well-known/oauth-protected-resource/mcp/lab', `${bus.url}/lab`],
    ]) {
      const res = await fetch(`${origin}${path}`);
      assert.equal(res.status, 200, path);
      const meta = (await res.json()) as Record<string, unknown>;
      assert.equal(meta.resource, resource);
      assert.deepEqual(meta.authorization_servers, [idp.issuer]);
    }
    assert.equal((await fetch(`${origin}/.well-known/oauth-protected-resource/other`)).status, 404);
    const expired = await post(bus.url, await idp.sign({ azp: 'x' }, { audience: bus.url, expiresIn: -600 }), {});
    assert.match(expired.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  it('follows key rotation: a new kid is fetched at once, a dropped key stops working within seconds', async () => {
    const aud = bus.url;
    const oldKid = idp.currentKid;
    const oldToken = await idp.sign({ azp: 'ops-bot' }, { audience: aud, kid: oldKid });
    assert.equal(await reasonOf(bus.url, oldToken), 200);
    await idp.addKey();
    const newToken = await idp.sign({ azp: 'ops-bot' }, { audience: aud });
    assert.equal(await reasonOf(bus.url, newToken), 200, 'a token signed with a just-published key');
    idp.dropKey(oldKid);
    const dropped = Date.now();
    await waitFor(async () => (await reasonOf(bus.url, oldToken)) === 'invalid_token', 5000, 'old key refused');
    assert.ok(Date.now() - dropped < 5000);
    assert.equal(await reasonOf(bus.url, newToken), 200);

    // Unknown kids refetch the key set at most once per cooldown (1 s here), however many arrive.
    const stranger = await idp.strangerKey();
    const before = idp.jwksFetches;
    const started = Date.now();
    for (let round = 0; round < 3; round++) {
      const forged = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          idp.sign({ azp: 'ops-bot' }, { audience: aud, kid: `forged-${round}-${i}` }, stranger),
        ),
      );
      const reasons = await Promise.all(forged.map((t) => reasonOf(bus.url, t)));
      assert.deepEqual(new Set(reasons), new Set(['invalid_token']));
    }
    const seconds = (Date.now() - started) / 1000;
    // One refetch per cooldown window for unknown kids, plus one per expiry of the 1 s max-age.
    assert.ok(idp.jwksFetches - before <= 2 * (Math.ceil(seconds) + 1), `${idp.jwksFetches - before} fetches`);
  });

  it('static tokens keep working beside JWTs, and a static token can be given an expiry', async () => {
    assert.deepEqual(await toolNames(bus.url, 'static-token-0001'), ['lab__echo']);
    assert.equal(await reasonOf(bus.url, 'retired-token-0001'), 'expired');
    assert.equal(await reasonOf(bus.url, 'not-a-token'), 'invalid_token');
  });

  it('toolbus token create signs a short-lived token; in-flight calls finish, the next call gets 401', async () => {
    const help = toolbus(['token', '--help'], dir);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /token create --agent ID/);
    assert.equal(toolbus(['token', 'create', '--config', config, '--agent', 'nobody'], dir).code, 2);
    assert.equal(
      toolbus(['token', 'create', '--config', config, '--agent', 'script-agent', '--ttl', '2d'], dir).code,
      2,
    );

    const created = toolbus(['token', 'create', '--config', config, '--agent', 'script-agent', '--ttl', '3s'], dir);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.ok(!created.stderr.includes(token));
    const agent = new AgentClient(bus.url, token);
    assert.deepEqual(await toolNames(bus.url, token), ['lab__echo', 'lab__slow']);
    // A session's notification stream lives no longer than the token that opened it.
    await agent.initialize();
    const stream = await fetch(bus.url, {
      headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...agent.headers() },
      signal: AbortSignal.timeout(15_000),
    });
    assert.equal(stream.status, 200);
    const streamEnded = stream.text().then(() => Date.now());
    // A call that outlives the token finishes normally.
    const { exp } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number };
    const slowMs = Math.round(Math.max(500, exp * 1000 - Date.now() + 800));
    const slow = await agent.call('lab__slow', { ms: slowMs, tag: 'outlives' });
    assert.notEqual(slow.isError, true, JSON.stringify(slow));
    assert.ok(Date.now() > exp * 1000, 'the token expired while the call ran');
    assert.equal(await reasonOf(bus.url, token), 'expired');
    const ended = await streamEnded;
    assert.ok(ended >= exp * 1000 && ended < exp * 1000 + 2000, `stream ended ${ended - exp * 1000} ms after exp`);
    // The session is still there for a fresh token of the same agent (a client refreshing its token keeps going).
    const fresh = toolbus(['token', 'create', '--config', config, '--agent', 'script-agent', '--ttl', '60'], dir);
    const again = await post(
      bus.url,
      fresh.stdout.trim(),
      { jsonrpc: '2.0', id: 9, method: 'tools/list' },
      agent.headers(),
    );
    assert.equal(again.status, 200);
    // The signing key never reaches a log line.
    assert.ok(!bus.stdout().includes(SIGNING_KEY) && !bus.stderr().includes(SIGNING_KEY));
  });

  it('a live reload revokes: in-flight calls finish, the next call gets 401', async () => {
    const token = await idp.sign({ azp: 'ops-bot', org: 'acme' }, { audience: bus.url });
    const ops = new AgentClient(bus.url, token);
    assert.equal(await reasonOf(bus.url, token), 200);
    const inFlight = ops.call('lab__slow', { ms: 1500, tag: 'before-revocation' });
    await new Promise((r) => setTimeout(r, 300));
    // Only agents named in auth.agents are accepted now, and ops-bot is no longer one; static-agent is removed too.
    const next = readFileSync(config, 'utf8')
      .replace('    jwksCooldownMs: 1000\n', '    jwksCooldownMs: 1000\n    requireKnownAgent: true\n')
      .replace('    ops-bot: { weight: 2, tools: ["lab__*"] }\n', '')
      .replace('  - { id: static-agent, token: "static-token-0001", tools: ["lab__echo"] }\n', '');
    writeFileSync(config, next);
    bus.child.kill('SIGHUP');
    await waitFor(async () => (await reasonOf(bus.url, token)) === 'unknown_agent', 5000, 'ops-bot refused');
    assert.equal(await reasonOf(bus.url, 'static-token-0001'), 'invalid_token');
    const done = await inFlight;
    assert.notEqual(done.isError, true, JSON.stringify(done));
  });
});
