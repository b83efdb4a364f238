// JWT access tokens: from the company's identity provider (`auth.oidc`) or signed by toolbus itself
// (`auth.signing`, see `toolbus token create`). The token's unverified `iss` only picks which of the two verifies
// it; everything is then checked by jose: signature (asymmetric algorithms only for the IdP, so `alg: none` and a
// public key used as an HMAC secret are refused), iss, aud, exp/nbf with bounded skew, and `typ` (JWT or at+jwt).
import { createHash } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors, type JWTPayload, jwtVerify } from 'jose';
import { toolMatcher } from '../catalog/catalog.js';
import type { AuthConfig, OidcConfig } from '../config/auth-schema.js';
import type { AgentIdentity } from '../pipeline/context.js';
import type { AuthFailure, AuthOutcome } from './auth-outcome.js';
import { JwksCache, KeysUnavailable } from './jwks-cache.js';
import { signingKeyBytes } from './local-tokens.js';

const ACCEPTED_TYP = new Set(['jwt', 'at+jwt', 'application/jwt', 'application/at+jwt']);
const MAX_AGENT_ID = 256;
/** Verified IdP tokens remembered (by digest), so an agent's next requests skip the signature check. */
const MAX_REMEMBERED = 10_000;

/** What the static agent list knows about an agent (for toolbus-signed tokens, which name a configured agent). */
export type StaticAgentLookup = (id: string) => AgentIdentity | undefined;

function failure(f: AuthFailure): { failure: AuthFailure } {
  return { failure: f };
}

/** Maps a jose error to the reason a client is told. */
function reasonOf(err: unknown): AuthFailure {
  if (err instanceof KeysUnavailable) return 'keys_unavailable';
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf' || err.claim === 'iat') return 'not_yet_valid';
    if (err.claim === 'aud') return 'wrong_audience';
    if (err.claim === 'iss') return 'wrong_issuer';
  }
  return 'invalid_token';
}

/** A claim that is a list: a JSON array of strings, or a space-separated string (the OAuth `scope` style). */
function listClaim(payload: JWTPayload, name: string | undefined): string[] | undefined {
  if (!name) return undefined;
  const v = payload[name];
  if (typeof v === 'string') return v.split(' ').filter(Boolean);
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return undefined;
}

/** Agent ids end up in log lines, metric labels and store keys: no control characters there. */
function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20 || s.charCodeAt(i) === 0x7f) return true;
  return false;
}

async function discoverJwksUri(issuer: string): Promise<URL> {
  // OIDC discovery appends to the issuer (path kept); RFC 8414 inserts the well-known segment before the path.
  const base = issuer.replace(/\/$/, '');
  const u = new URL(issuer);
  const candidates = [
    `${base}/.well-known/openid-configuration`,
    `${u.origin}/.well-known/oauth-authorization-server${u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '')}`,
  ];
  for (const c of candidates) {
    const res = await fetch(c, { redirect: 'error', signal: AbortSignal.timeout(5_000) }).catch(() => null);
    if (!res?.ok) continue;
    const meta = (await res.json().catch(() => null)) as { issuer?: unknown; jwks_uri?: unknown } | null;
    // The document must be the issuer's own (RFC 8414 §3.3), or its keys could be anyone's.
    if (meta?.issuer !== issuer || typeof meta.jwks_uri !== 'string') continue;
    return new URL(meta.jwks_uri);
  }
  throw new KeysUnavailable('the issuer publishes no usable discovery document');
}

export class JwtVerifier {
  private readonly jwks: JwksCache | undefined;
  private readonly signingKey: Uint8Array | undefined;
  private jwksUri: Promise<URL> | undefined;
  private readonly remembered = new Map<string, { agent: AgentIdentity; until: number }>();

  constructor(
    private readonly auth: AuthConfig,
    /** The audience tokens must carry when `auth.oidc.audience` is not set (toolbus's resource URL). */
    private readonly resource: () => string,
    private readonly staticAgent: StaticAgentLookup,
    onKeysUnavailable: (message: string) => void = () => {},
  ) {
    const oidc = auth.oidc;
    if (oidc) {
      this.jwks = new JwksCache({
        uri: () => {
          if (oidc.jwksUri) return Promise.resolve(new URL(oidc.jwksUri));
          // A failed discovery is retried on the next fetch rather than remembered.
          this.jwksUri ??= discoverJwksUri(oidc.issuer).catch((err: unknown) => {
            this.jwksUri = undefined;
            throw err;
          });
          return this.jwksUri;
        },
        cooldownMs: oidc.jwksCooldownMs,
        maxAgeMs: oidc.jwksMaxAgeMs,
        onFetchFailed: onKeysUnavailable,
      });
    }
    if (auth.signing) this.signingKey = signingKeyBytes(auth.signing);
  }

  get enabled(): boolean {
    return this.jwks !== undefined || this.signingKey !== undefined;
  }

  /** True while a JWT-authenticated agent with this id would still be let in (for the pipeline's re-check). */
  accepts(id: string): boolean {
    // Group membership lives in the token, not here, so an IdP agent stays accepted while IdP auth is configured;
    // its token's expiry (checked on every request) is what ends it.
    if (this.auth.oidc) return true;
    return this.signingKey !== undefined && this.staticAgent(id) !== undefined;
  }

  /**
   * An IdP token verified before, answered without a promise. It is trusted no longer than its own exp and no longer
   * than the key set it was verified with is fresh, so a dropped key or an expiry takes effect exactly as without
   * this memory; a config change builds a new verifier and forgets everything.
   */
  recall(token: string): AgentIdentity | undefined {
    if (this.remembered.size === 0) return undefined;
    const key = createHash('sha256').update(token).digest('base64');
    const hit = this.remembered.get(key);
    if (!hit) return undefined;
    if (Date.now() < hit.until) return hit.agent;
    this.remembered.delete(key);
    return undefined;
  }

  private remember(token: string, agent: AgentIdentity): void {
    const until = Math.min(agent.expiresAt ?? 0, this.jwks?.freshUntil ?? 0);
    if (until <= Date.now()) return;
    if (this.remembered.size >= MAX_REMEMBERED) this.remembered.delete(this.remembered.keys().next().value!);
    this.remembered.set(createHash('sha256').update(token).digest('base64'), { agent, until });
  }

  async verify(token: string): Promise<AuthOutcome> {
    let iss: unknown;
    let typ: unknown;
    try {
      iss = decodeJwt(token).iss;
      typ = decodeProtectedHeader(token).typ;
    } catch {
      return failure('invalid_token');
    }
    if (typ !== undefined && (typeof typ !== 'string' || !ACCEPTED_TYP.has(typ.toLowerCase())))
      return failure('invalid_token');
    if (this.signingKey && iss === this.auth.signing!.issuer) return this.verifyLocal(token);
    if (this.jwks && iss === this.auth.oidc!.issuer) {
      const outcome = await this.verifyOidc(token, this.auth.oidc!);
      if (!('failure' in outcome)) this.remember(token, outcome);
      return outcome;
    }
    return failure('wrong_issuer');
  }

  private async verifyLocal(token: string): Promise<AuthOutcome> {
    const signing = this.auth.signing!;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.signingKey!, {
        issuer: signing.issuer,
        audience: signing.audience,
        algorithms: ['HS256'],
        requiredClaims: ['exp', 'sub'],
        // The exp toolbus wrote itself is meant exactly: a 1-minute token must not live 2 minutes.
        clockTolerance: 0,
      }));
    } catch (err) {
      return failure(reasonOf(err));
    }
    const agent = typeof payload.sub === 'string' ? this.staticAgent(payload.sub) : undefined;
    if (!agent) return failure('unknown_agent');
    return { ...agent, expiresAt: payload.exp! * 1000 };
  }

  private async verifyOidc(token: string, oidc: OidcConfig): Promise<AuthOutcome> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks!.key, {
        issuer: oidc.issuer,
        audience: oidc.audience ?? this.resource(),
        algorithms: oidc.algorithms,
        requiredClaims: ['exp'],
        clockTolerance: oidc.clockSkewSeconds,
      }));
    } catch (err) {
      return failure(reasonOf(err));
    }
    const id = payload[oidc.claims.agent];
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_AGENT_ID || hasControlCharacter(id))
      return failure('unknown_agent');
    const groups = listClaim(payload, oidc.claims.groups) ?? [];
    if (oidc.requireKnownAgent && !this.knownToPolicy(id, groups)) return failure('unknown_agent');
    const policy = this.auth.agents[id];
    const groupPolicies = groups.map((g) => this.auth.groups[g]).filter((g) => g !== undefined);

    const tenantClaim = oidc.claims.tenant ? payload[oidc.claims.tenant] : undefined;
    const tenant =
      typeof tenantClaim === 'string' && tenantClaim ? tenantClaim : (policy?.tenant ?? oidc.defaultTenant);

    // Config says what the agent may ever call (its own entry, else the union of its groups, else the default);
    // a tools claim in the token can only narrow that.
    const groupTools = groupPolicies.flatMap((g) => g.tools ?? []);
    const configured = policy?.tools ?? (groupPolicies.some((g) => g.tools) ? groupTools : oidc.defaultTools);
    const allowedByConfig = toolMatcher(configured);
    const claimed = listClaim(payload, oidc.claims.tools);
    const allowedByToken = claimed ? (claimed.length > 0 ? toolMatcher(claimed) : () => false) : undefined;
    const allows = allowedByToken ? (name: string) => allowedByConfig(name) && allowedByToken(name) : allowedByConfig;

    const groupWeight = Math.max(0, ...groupPolicies.map((g) => g.weight ?? 0));
    const weight = policy?.weight ?? (groupWeight > 0 ? groupWeight : 1);
    // NUL cannot occur in a configured agent id, so these keys never collide with a static agent's cache entry.
    const policyKey = `\u0000${JSON.stringify([configured, claimed ?? null])}`;
    return { id, tenant, weight, allows, expiresAt: payload.exp! * 1000, policyKey };
  }

  private knownToPolicy(id: string, groups: readonly string[]): boolean {
    return this.auth.agents[id] !== undefined || groups.some((g) => this.auth.groups[g] !== undefined);
  }
}
