// Who is calling: static bearer tokens (the `agents:` list, checked synchronously: this is the hot path and gets no
// promise) and, only when a token is shaped like a JWT and JWT auth is configured, an asynchronous JWT check.
// Also owns toolbus's identity as an OAuth protected resource: its resource URL and its RFC 9728 metadata.
import type { Logger } from 'pino';
import { toolMatcher } from '../catalog/catalog.js';
import type { AuthConfig } from '../config/auth-schema.js';
import type { AgentIdentity } from '../pipeline/context.js';
import type { AgentTable } from './agent-table.js';
import { type AuthOutcome, challenge } from './auth-outcome.js';
import { LOOPBACK_HOSTS } from './hosts.js';
import { JwtVerifier } from './oidc.js';

const METADATA_PREFIX = '/.well-known/oauth-protected-resource';

export class Authenticator {
  private verifier: JwtVerifier;
  private expiries = new Map<string, number>();
  private listenUrl = 'http://127.0.0.1/mcp';

  constructor(
    private readonly table: AgentTable,
    private auth: AuthConfig,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.verifier = this.build(auth);
  }

  /** Called once the listen address is known: the default resource URL is derived from it. */
  setListenUrl(url: string): void {
    this.listenUrl = url;
    this.warnIfResourceGuessed();
  }

  private warnIfResourceGuessed(): void {
    if (!this.auth.oidc || this.auth.oidc.audience || this.auth.resource) return;
    if (LOOPBACK_HOSTS.has(new URL(this.listenUrl).hostname)) return;
    // Clients reach a non-loopback bus through a name toolbus cannot know (DNS, a proxy): tokens minted for that
    // name would all be refused as wrong_audience.
    this.logger.warn(
      { resource: this.resource },
      'auth.oidc without auth.resource or auth.oidc.audience: set auth.resource to the public URL of /mcp',
    );
  }

  /** A live config reload: the static table is replaced by its owner; this takes the new `auth:` section. */
  replace(auth: AuthConfig): void {
    // Rebuilding drops the cached key set; keep the verifier (and its cache) when nothing it depends on changed.
    const same = JSON.stringify(auth) === JSON.stringify(this.auth);
    this.auth = auth;
    if (!same) this.verifier = this.build(auth);
  }

  private build(auth: AuthConfig): JwtVerifier {
    this.expiries = new Map();
    for (const [id, p] of Object.entries(auth.agents))
      if (p.tokenExpiresAt) this.expiries.set(id, Date.parse(p.tokenExpiresAt));
    return new JwtVerifier(
      auth,
      () => this.resource,
      (id) => this.configuredAgent(id),
      (message) => this.logger.warn({ issuer: auth.oidc?.issuer, problem: message }, 'cannot fetch the issuer keys'),
    );
  }

  /** toolbus's resource identifier (RFC 8707): the public URL of /mcp. */
  get resource(): string {
    return (this.auth.resource ?? this.listenUrl).replace(/\/$/, '');
  }

  /** True when clients can be sent to an authorization server (RFC 9728 metadata is published). */
  get publishesMetadata(): boolean {
    return this.auth.oidc !== undefined;
  }

  /** The agent, a refusal, or (only for a JWT) a promise of either. `connection`: see AgentTable.authenticate. */
  authenticate(header: string | undefined, connection?: object): AuthOutcome | Promise<AuthOutcome> {
    const agent = this.table.authenticate(header, connection);
    if (agent) {
      const expiresAt = this.expiries.get(agent.id);
      if (expiresAt === undefined) return agent;
      return this.now() < expiresAt ? { ...agent, expiresAt } : { failure: 'expired' };
    }
    if (!header || header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ')
      return { failure: 'missing_token' };
    const token = header.slice(7).trim();
    if (this.verifier.enabled && isJwtShaped(token)) return this.verifier.recall(token) ?? this.verifier.verify(token);
    return { failure: 'invalid_token' };
  }

  /** For the pipeline's re-check after a live reload. */
  isActive(id: string): boolean {
    return this.table.has(id) || this.verifier.accepts(id);
  }

  /** The URL of the metadata document for a request path (/mcp → /.well-known/oauth-protected-resource/mcp). */
  metadataUrl(): string | undefined {
    if (!this.publishesMetadata) return undefined;
    const r = new URL(this.resource);
    return `${r.origin}${METADATA_PREFIX}${r.pathname === '/' ? '' : r.pathname}`;
  }

  /** The 401 for a refusal. */
  challenge(outcome: { failure: Parameters<typeof challenge>[0] }): ReturnType<typeof challenge> {
    return challenge(outcome.failure, this.metadataUrl());
  }

  /**
   * RFC 9728 metadata for a well-known path, or undefined when the path is not one. Served at the root and under
   * the resource's path (`/mcp`, and `/mcp/{upstream}` for per-upstream resources).
   */
  metadataFor(path: string): Record<string, unknown> | undefined {
    if (!this.publishesMetadata || !path.startsWith(METADATA_PREFIX)) return undefined;
    const rest = path.slice(METADATA_PREFIX.length);
    const base = new URL(this.resource);
    const basePath = base.pathname === '/' ? '' : base.pathname;
    let resource: string;
    if (rest === '' || rest === '/' || rest === basePath) resource = this.resource;
    else if (rest.startsWith(`${basePath}/`) && /^[A-Za-z0-9_-]{1,128}$/.test(rest.slice(basePath.length + 1)))
      resource = `${this.resource}${rest.slice(basePath.length)}`;
    else return undefined;
    return {
      resource,
      authorization_servers: [this.auth.oidc!.issuer],
      bearer_methods_supported: ['header'],
      ...(this.auth.oidc!.scopes ? { scopes_supported: this.auth.oidc!.scopes } : {}),
      resource_name: 'toolbus',
    };
  }

  /** An agent from config (the `agents:` list, else `auth.agents`), for tokens toolbus signs itself. */
  private configuredAgent(id: string): AgentIdentity | undefined {
    const listed = this.table.get(id);
    if (listed) return listed;
    const p = this.auth.agents[id];
    if (!p) return undefined;
    return {
      id,
      tenant: p.tenant ?? 'default',
      weight: p.weight ?? 1,
      allows: toolMatcher(p.tools ?? ['*']),
    };
  }
}

function isJwtShaped(token: string): boolean {
  const first = token.indexOf('.');
  return first > 0 && token.indexOf('.', first + 1) > first + 1 && token.length <= 16_384;
}
