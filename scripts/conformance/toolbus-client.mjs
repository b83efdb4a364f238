#!/usr/bin/env node
// toolbus as the client under test of the official conformance suite's auth scenarios:
//   node --import ./scripts/conformance/fs-glob-hook.mjs node_modules/@modelcontextprotocol/conformance/dist/index.js \
//     client --command "node scripts/conformance/toolbus-client.mjs" --suite auth
// The suite appends the server URL and sets MCP_CONFORMANCE_SCENARIO / MCP_CONFORMANCE_CONTEXT. This wrapper does
// what an operator and an agent would: `toolbus login` (following the authorization redirect, as a browser would),
// `toolbus serve`, then one tools/list and one tools/call through the bus. Needs `npm run build` first.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../dist/src/cli/main.js');
const serverUrl = process.argv[2];
const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? '';
const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT ?? '{}');
const dir = mkdtempSync(join(tmpdir(), 'toolbus-conformance-'));
const config = join(dir, 'toolbus.yaml');

const oauth = { clientMetadataUrl: 'https://conformance-test.local/client-metadata.json' };
if (context.client_id) oauth.clientId = context.client_id;
if (context.client_secret) oauth.clientSecret = context.client_secret;
if (scenario.includes('client-credentials')) oauth.grant = 'client_credentials';
writeFileSync(
  config,
  JSON.stringify({
    store: { kind: 'sqlite', path: join(dir, 'state.db') },
    logging: { level: 'warn' },
    agents: [{ id: 'conformance', token: 'conformance-agent-token' }],
    upstreams: { conf: { url: serverUrl, trustAnnotations: true, oauth } },
  }),
);

function run(args, onStdout) {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    out += d;
    process.stdout.write(d);
    onStdout?.(out, child);
  });
  return { child, exited: new Promise((r) => child.once('exit', (code) => r(code))) };
}

async function login() {
  let opened = false;
  const { exited } = run(['login', 'conf', '--config', config, '--no-browser', '--timeout', '20'], (out) => {
    const url = out.split('\n').find((l) => /^https?:\/\/\S+$/.test(l));
    if (!url || opened) return;
    opened = true;
    // The browser's part: open the URL; the test server approves and redirects to the loopback listener.
    void (async () => {
      const res = await fetch(url, { redirect: 'manual' });
      const location = res.headers.get('location');
      if (location) await (await fetch(location)).text();
    })().catch((err) => process.stderr.write(`browser step failed: ${err.message}\n`));
  });
  const code = await exited;
  if (code !== 0) throw new Error(`toolbus login exited with ${code}`);
}

async function serveAndCall() {
  let listening;
  const ready = new Promise((r) => {
    listening = r;
  });
  const { child, exited } = run(['serve', '--config', config, '--port', '0'], (out) => {
    const m = /toolbus listening on (http:\/\/\S+)/.exec(out);
    if (m) listening(m[1]);
  });
  const url = await Promise.race([ready, exited.then((c) => Promise.reject(new Error(`serve exited with ${c}`)))]);
  const rpc = async (method, params) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: 'Bearer conformance-agent-token',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
    return res.json();
  };
  const origin = new URL(url).origin;
  const needsLogin = async () => /"needs_login"/.test(await (await fetch(`${origin}/readyz`)).text());
  const listTools = async () => {
    for (let i = 0; i < 30; i++) {
      const tools = (await rpc('tools/list', {})).result?.tools ?? [];
      if (tools.length > 0 || (await needsLogin())) return tools;
      await new Promise((r) => setTimeout(r, 100));
    }
    return [];
  };
  const callFirst = async (tools) => {
    // Unknown tools are writes to toolbus, so the call carries an idempotency key (the bus strips it).
    const key = `conformance-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const reply = await rpc('tools/call', { name: tools[0].name, arguments: { idempotency_key: key } });
    console.log(JSON.stringify(reply));
    return reply;
  };
  // What an operator does when the bus reports needs_login (the upstream wants more scopes, or moved to another
  // authorization server): log in again; the running bus picks the new grant up within a second.
  const relogin = async () => {
    if (scenario.includes('client-credentials')) return false;
    await login();
    for (let i = 0; i < 30 && (await needsLogin()); i++) await new Promise((r) => setTimeout(r, 200));
    return true;
  };
  try {
    let tools = await listTools();
    if (tools.length === 0 && (await needsLogin()) && (await relogin())) tools = await listTools();
    if (tools.length === 0) return;
    const reply = await callFirst(tools);
    if (reply.result?._meta?.['toolbus/error']?.code === 'needs_login' && (await relogin())) await callFirst(tools);
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

if (!scenario.includes('client-credentials')) await login();
await serveAndCall();
