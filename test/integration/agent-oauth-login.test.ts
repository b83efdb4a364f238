// An MCP client logs in to toolbus by itself: given only the bus URL, the official SDK client gets a 401, reads the
// RFC 9728 metadata it points to, discovers the authorization server (a real oidc-provider on loopback), registers,
// runs the authorization-code flow with PKCE and a resource indicator, and then calls tools with the JWT it got.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  Client,
  type OAuthClientProvider,
  StreamableHTTPClientTransport,
  UnauthorizedError,
} from '@modelcontextprotocol/client';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { type LoginProvider, startLoginProvider } from '../helpers/login-provider.js';

type Stored = Parameters<OAuthClientProvider['saveTokens']>[0];
type StoredClient = Parameters<NonNullable<OAuthClientProvider['saveClientInformation']>>[0];
type Discovery = Parameters<NonNullable<OAuthClientProvider['saveDiscoveryState']>>[0];

/** An in-memory client-side store, as a CLI client would keep on disk; it knows nothing about toolbus or the IdP. */
class MemoryOAuthClient implements OAuthClientProvider {
  client: StoredClient | undefined;
  stored: Stored | undefined;
  verifier = '';
  discovery: Discovery | undefined;
  lastAuthorizationUrl: URL | undefined;
  readonly redirectUrl = 'http://127.0.0.1:9/callback';
  get clientMetadata() {
    return {
      client_name: 'toolbus login test',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info: StoredClient) {
    this.client = info;
  }
  tokens() {
    return this.stored;
  }
  saveTokens(tokens: Stored) {
    this.stored = tokens;
  }
  redirectToAuthorization(url: URL) {
    this.lastAuthorizationUrl = url;
  }
  saveCodeVerifier(v: string) {
    this.verifier = v;
  }
  codeVerifier() {
    return this.verifier;
  }
  saveDiscoveryState(state: Discovery) {
    this.discovery = state;
  }
  discoveryState() {
    return this.discovery;
  }
}

describe('an MCP client logs in through the identity provider toolbus names', () => {
  let idp: LoginProvider;
  let bus: BusProcess;
  before(async () => {
    idp = await startLoginProvider({ accountId: 'claude-agent-1', extraClaims: { org: 'acme' } });
    const dir = tempDir();
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
auth:
  oidc:
    issuer: ${idp.issuer}
    claims: { agent: sub, tenant: org }
    scopes: [mcp]
  agents:
    claude-agent-1: { tools: ["lab__echo"] }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    tools:
      echo: { kind: read }
      whoami: { kind: read }
`,
      { cwd: dir },
    );
  });
  after(async () => {
    await bus?.stop();
    await idp?.close();
  });

  it('discovers the authorization server from the bus URL alone, logs in and calls a tool', async () => {
    const oauth = new MemoryOAuthClient();
    const first = new StreamableHTTPClientTransport(new URL(bus.url), { authProvider: oauth });
    await assert.rejects(new Client({ name: 'login-test', version: '1.0.0' }).connect(first), UnauthorizedError);
    const authUrl = oauth.lastAuthorizationUrl;
    assert.ok(authUrl, 'the client was sent to log in');
    assert.equal(authUrl.origin, idp.issuer, 'to the issuer named in the metadata');
    assert.equal(authUrl.searchParams.get('resource'), bus.url, 'asking for a token for this bus (RFC 8707)');
    assert.equal(authUrl.searchParams.get('code_challenge_method'), 'S256');

    const callback = await idp.browse(authUrl);
    const code = callback.searchParams.get('code');
    assert.ok(code, `no code in ${callback.href}`);
    // The whole callback goes back, so the client checks the `iss` in it against the issuer it discovered (RFC 9207).
    await first.finishAuth(callback.searchParams);
    const token = oauth.stored?.access_token;
    assert.ok(token);
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    assert.equal(payload.aud, bus.url);
    assert.equal(payload.sub, 'claude-agent-1');

    const client = new Client({ name: 'login-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(bus.url), { authProvider: oauth }));
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(
        tools.map((t) => t.name),
        ['lab__echo'],
        'the allow-list configured for the agent id in the token',
      );
      const r = (await client.callTool({ name: 'lab__echo', arguments: { text: 'logged in' } })) as {
        content: { text?: string }[];
      };
      assert.equal(r.content[0]?.text, 'logged in');
    } finally {
      await client.close();
    }
  });
});
