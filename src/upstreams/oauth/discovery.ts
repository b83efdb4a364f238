// Finding out how to get a token for an upstream, with the SDK's helpers doing the protocol work: the upstream's 401
// (`WWW-Authenticate`) → RFC 9728 protected-resource metadata → RFC 8414 or OIDC discovery of the authorization
// server; then a client: the configured one, a client ID metadata document, or Dynamic Client Registration.
import {
  type AuthorizationServerMetadata,
  checkResourceAllowed,
  discoverOAuthServerInfo,
  extractWWWAuthenticateParams,
  LATEST_PROTOCOL_VERSION,
  type OAuthClientInformationMixed,
  registerClient,
  resourceUrlFromServerUrl,
} from '@modelcontextprotocol/client';
import type { UpstreamOAuthConfig } from './schema.js';

export interface AuthorizationTarget {
  authorizationServerUrl: string;
  metadata: AuthorizationServerMetadata;
  /** RFC 8707 resource indicator: the resource metadata's own spelling, else the upstream URL without fragment. */
  resource: string;
  scope?: string;
}

const PROBE_TIMEOUT_MS = 10_000;

/** Space-separated scope lists merged, each scope once, in first-seen order. */
export function unionScopes(...lists: (string | undefined)[]): string | undefined {
  const all = new Set(lists.flatMap((l) => (l ? l.split(/\s+/).filter(Boolean) : [])));
  return all.size > 0 ? [...all].join(' ') : undefined;
}

/**
 * Asks the upstream without credentials; a protected one answers 401 and says where its metadata is. `extraScope`:
 * scopes the upstream asked for later (step-up, remembered by the bus), added to the usual choice.
 */
export async function discoverTarget(
  url: string,
  oauth: UpstreamOAuthConfig,
  extraScope?: string,
): Promise<AuthorizationTarget> {
  let resourceMetadataUrl: URL | undefined;
  let challengeScope: string | undefined;
  const probe = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'toolbus', version: '0.1.0' },
      },
    }),
    signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
  });
  let challenge = probe.status === 401 ? probe : undefined;
  const session = probe.headers.get('mcp-session-id');
  await probe.arrayBuffer().catch(() => undefined);
  if (!challenge && probe.ok) {
    // Some servers let the handshake through and protect the calls: ask for the tools to see their challenge.
    const listed = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        ...(session ? { 'mcp-session-id': session } : {}),
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    });
    if (listed.status === 401) challenge = listed;
    await listed.arrayBuffer().catch(() => undefined);
  }
  if (challenge) {
    const params = extractWWWAuthenticateParams(challenge);
    resourceMetadataUrl = params.resourceMetadataUrl;
    challengeScope = params.scope;
  }
  const info = await discoverOAuthServerInfo(url, resourceMetadataUrl ? { resourceMetadataUrl } : {});
  if (!info.authorizationServerMetadata) {
    throw new Error(`no authorization server metadata found for ${info.authorizationServerUrl}`);
  }
  const advertised = info.resourceMetadata?.resource;
  if (advertised && !checkResourceAllowed({ requestedResource: url, configuredResource: advertised })) {
    throw new Error(`the upstream's resource metadata names another resource (${advertised})`);
  }
  const base =
    oauth.scopes?.join(' ') ?? challengeScope ?? info.resourceMetadata?.scopes_supported?.join(' ') ?? undefined;
  const scope = unionScopes(base, extraScope);
  return {
    authorizationServerUrl: info.authorizationServerUrl,
    metadata: info.authorizationServerMetadata,
    resource: advertised ?? resourceUrlFromServerUrl(url).href,
    ...(scope ? { scope } : {}),
  };
}

/** The client toolbus acts as: configured, a client ID metadata document, or registered now (DCR). */
export async function resolveClient(
  target: AuthorizationTarget,
  oauth: UpstreamOAuthConfig,
  redirectUri: string | undefined,
): Promise<OAuthClientInformationMixed> {
  if (oauth.clientId) {
    return { client_id: oauth.clientId, ...(oauth.clientSecret ? { client_secret: oauth.clientSecret } : {}) };
  }
  const md = target.metadata as AuthorizationServerMetadata & { client_id_metadata_document_supported?: boolean };
  if (oauth.clientMetadataUrl && md.client_id_metadata_document_supported)
    return { client_id: oauth.clientMetadataUrl };
  if (!md.registration_endpoint) {
    throw new Error(
      'the authorization server offers neither dynamic client registration nor client ID metadata documents: set oauth.clientId',
    );
  }
  const confidential = oauth.grant === 'client_credentials';
  return registerClient(target.authorizationServerUrl, {
    metadata: target.metadata,
    clientMetadata: {
      client_name: 'toolbus',
      // SEP-837: a loopback-redirect client is a native application; a machine client with a secret is not.
      application_type: confidential ? 'web' : 'native',
      redirect_uris: redirectUri ? [redirectUri] : [],
      grant_types: confidential ? ['client_credentials'] : ['authorization_code', 'refresh_token'],
      response_types: confidential ? [] : ['code'],
      token_endpoint_auth_method: confidential ? 'client_secret_basic' : 'none',
      ...(target.scope ? { scope: target.scope } : {}),
    },
    ...(target.scope ? { scope: target.scope } : {}),
  });
}
