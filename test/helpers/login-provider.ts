// A real OpenID provider (oidc-provider) on loopback, standing in for a company IdP in login tests: dynamic client
// registration, authorization code with PKCE, resource indicators (RFC 8707) and JWT access tokens for the resource
// the client asks for. Its "login page" signs in one fixed user and consents at once, so a test can drive the browser
// part of the flow with plain HTTP requests (`browse`).
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

export interface LoginProvider {
  issuer: string;
  /** Follows the authorization URL through login and consent; returns the redirect URL carrying `code`. */
  browse(authorizationUrl: URL): Promise<URL>;
  close(): Promise<void>;
}

export async function startLoginProvider(opts: { accountId: string; extraClaims?: Record<string, unknown> }) {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const issuer = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingJwk = { ...(await exportJWK(privateKey)), kid: 'login-1', alg: 'RS256', use: 'sig' };

  const provider = new Provider(issuer, {
    jwks: { keys: [signingJwk] },
    scopes: ['openid', 'offline_access', 'mcp'],
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 300 },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx: unknown, _client: unknown, oneOf?: string) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({
          scope: 'mcp',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: () => opts.extraClaims ?? {},
    findAccount: (_ctx: unknown, sub: string) => ({ accountId: sub, claims: () => ({ sub }) }),
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!(req.url ?? '').startsWith('/interaction/')) return callback(req, res);
    void (async () => {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === 'login') {
        await provider.interactionFinished(req, res, { login: { accountId: opts.accountId } });
        return;
      }
      const grant = details.grantId
        ? ((await provider.Grant.find(details.grantId)) as InstanceType<typeof provider.Grant>)
        : new provider.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
      const missing = details.prompt.details as {
        missingOIDCScope?: string[];
        missingResourceScopes?: Record<string, string[]>;
      };
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {}))
        grant.addResourceScope(resource, scopes.join(' '));
      await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } });
    })().catch((err: unknown) => {
      res.writeHead(500).end(String(err));
    });
  });

  async function browse(authorizationUrl: URL): Promise<URL> {
    const cookies = new Map<string, string>();
    let url = authorizationUrl;
    for (let hop = 0; hop < 10; hop++) {
      if (url.origin !== issuer) return url;
      const res = await fetch(url, {
        redirect: 'manual',
        headers: { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') },
        signal: AbortSignal.timeout(10_000),
      });
      for (const c of res.headers.getSetCookie()) {
        const [pair] = c.split(';');
        const eq = pair!.indexOf('=');
        cookies.set(pair!.slice(0, eq), pair!.slice(eq + 1));
      }
      const location = res.headers.get('location');
      if (!location) throw new Error(`login stopped at ${url.pathname} with ${res.status}: ${await res.text()}`);
      url = new URL(location, url);
    }
    throw new Error('too many redirects in the login flow');
  }

  return {
    issuer,
    browse,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  } satisfies LoginProvider;
}
