// `toolbus login`: the OAuth 2.1 authorization-code flow, once, by an operator. PKCE S256 and the RFC 8707 resource
// parameter come from the SDK's startAuthorization/exchangeAuthorization; this file owns the loopback redirect
// listener and what is stored afterwards.
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { exchangeAuthorization, startAuthorization } from '@modelcontextprotocol/client';
import { discoverTarget, resolveClient } from './discovery.js';
import type { UpstreamOAuthConfig } from './schema.js';
import { type GrantRecord, type HeldGrant, type TokenVault, timesFor } from './token-vault.js';

export interface LoginOptions {
  upstream: string;
  url: string;
  oauth: UpstreamOAuthConfig;
  vault: TokenVault;
  /** Shows the authorization URL (on a line of its own) and, where possible, opens it. */
  present: (authorizationUrl: string) => void;
  timeoutMs: number;
}

interface Callback {
  code: string;
  iss?: string;
}

const PAGE_OK =
  '<!doctype html><title>toolbus</title><p>Logged in. You can close this tab and return to the terminal.</p>';
const PAGE_FAIL = '<!doctype html><title>toolbus</title><p>Login failed; see the terminal.</p>';

/** Listens on 127.0.0.1 for the one redirect carrying our `state`; everything else is answered 404. */
function listenForRedirect(
  port: number,
  state: string,
): Promise<{ redirectUri: string; callback: Promise<Callback>; close: () => void }> {
  return new Promise((resolveListen, rejectListen) => {
    let settle!: { ok: (c: Callback) => void; fail: (e: Error) => void };
    const callback = new Promise<Callback>((ok, fail) => {
      settle = { ok, fail };
    });
    const server: Server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (req.method !== 'GET' || u.pathname !== '/callback') {
        res.writeHead(404).end();
        return;
      }
      if (u.searchParams.get('state') !== state) {
        res.writeHead(400, { 'content-type': 'text/html' }).end(PAGE_FAIL);
        return;
      }
      const error = u.searchParams.get('error');
      const code = u.searchParams.get('code');
      res.writeHead(error || !code ? 400 : 200, { 'content-type': 'text/html', connection: 'close' });
      res.end(error || !code ? PAGE_FAIL : PAGE_OK);
      if (error || !code) {
        const desc = u.searchParams.get('error_description');
        settle.fail(
          new Error(`the authorization server answered ${error ?? 'without a code'}${desc ? `: ${desc}` : ''}`),
        );
        return;
      }
      const iss = u.searchParams.get('iss');
      settle.ok({ code, ...(iss ? { iss } : {}) });
    });
    server.once('error', rejectListen);
    server.listen(port, '127.0.0.1', () => {
      const addr = server.address();
      const bound = typeof addr === 'object' && addr ? addr.port : port;
      resolveListen({
        redirectUri: `http://127.0.0.1:${bound}/callback`,
        callback,
        close: () => {
          server.closeAllConnections();
          server.close();
        },
      });
    });
  });
}

/** Runs the whole flow and stores the grant; resolves with what was stored. */
export async function loginWithAuthorizationCode(opts: LoginOptions): Promise<HeldGrant> {
  const { oauth, url } = opts;
  // Scopes the upstream asked for since the last login (403 insufficient_scope) are asked for now as well.
  const target = await discoverTarget(url, oauth, await opts.vault.wantedScope());
  const state = randomBytes(16).toString('base64url');
  const listener = await listenForRedirect(oauth.redirectPort, state);
  try {
    const client = await resolveClient(target, oauth, listener.redirectUri);
    const { authorizationUrl, codeVerifier } = await startAuthorization(target.authorizationServerUrl, {
      metadata: target.metadata,
      clientInformation: client,
      redirectUrl: listener.redirectUri,
      state,
      resource: target.resource,
      ...(target.scope ? { scope: target.scope } : {}),
    });
    opts.present(authorizationUrl.href);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no redirect came back within ${Math.round(opts.timeoutMs / 1000)} s`)),
        opts.timeoutMs,
      );
    });
    const cb = await Promise.race([listener.callback, timeout]).finally(() => clearTimeout(timer));
    const obtainedAt = Date.now();
    const tokens = await exchangeAuthorization(target.authorizationServerUrl, {
      metadata: target.metadata,
      clientInformation: client,
      authorizationCode: cb.code,
      ...(cb.iss ? { iss: cb.iss } : {}),
      codeVerifier,
      redirectUri: listener.redirectUri,
      resource: target.resource,
    });
    const grant: GrantRecord = {
      upstreamUrl: url,
      grant: 'authorization_code',
      authorizationServerUrl: target.authorizationServerUrl,
      metadata: target.metadata,
      resource: target.resource,
      ...(tokens.scope || target.scope ? { scope: tokens.scope ?? target.scope } : {}),
      client,
      accessToken: tokens.access_token,
      ...(tokens.refresh_token ? { refreshToken: tokens.refresh_token } : {}),
      obtainedAt,
      ...timesFor(obtainedAt, tokens.expires_in, oauth.refreshAt),
    };
    return await opts.vault.replace(grant);
  } finally {
    listener.close();
  }
}
