// The `auth:` section: how agents may prove who they are besides the static tokens under `agents:`.
// JWT access tokens from a company identity provider (OIDC), short-lived tokens toolbus signs itself
// (`toolbus token create`), and per-agent / per-group policy for agents that are not listed under `agents:`.
import { z } from 'zod';
import { LOOPBACK_HOSTS } from '../agents/hosts.js';

const positiveInt = z.number().int().positive();
const agentId = z.string().regex(/^[A-Za-z0-9_.-]+$/);

/** https always; plain http only for a loopback issuer (tests, local development). */
const issuerUrl = z.url().refine(
  (u) => {
    const url = new URL(u);
    return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
  },
  { message: 'must be an https URL (plain http is accepted only on loopback)' },
);

export const OidcSchema = z.strictObject({
  /** Exactly the `iss` the provider puts in its tokens; may carry a path (https://idp.example.com/realms/x). */
  issuer: issuerUrl,
  /** Expected `aud`. Default: toolbus's own resource URL (RFC 8707), i.e. `auth.resource`. */
  audience: z.string().min(1).optional(),
  /** Default: the `jwks_uri` of the issuer's discovery document. */
  jwksUri: issuerUrl.optional(),
  claims: z
    .strictObject({
      /** The agent id is exactly this claim's value. */
      agent: z.string().min(1).default('sub'),
      /** Tenant claim; when absent from a token, the agent's entry under `auth.agents` or `defaultTenant`. */
      tenant: z.string().min(1).optional(),
      /** A claim holding tool globs (array or space-separated string); it can only narrow what config allows. */
      tools: z.string().min(1).optional(),
      /** A claim holding group names (array or space-separated string), matched against `auth.groups`. */
      groups: z.string().min(1).optional(),
    })
    .default({ agent: 'sub' }),
  /** Scopes published in the metadata (`scopes_supported`); MCP clients ask for these when they log in. */
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/)).optional(),
  defaultTenant: z.string().min(1).default('default'),
  /** Tools for a token whose agent is in neither `auth.agents` nor a configured group. */
  defaultTools: z.array(z.string().min(1)).default(['*']),
  /** Refuse tokens whose agent is in neither `auth.agents` nor a configured group. */
  requireKnownAgent: z.boolean().default(false),
  algorithms: z
    .array(z.string().regex(/^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$/))
    .default(['RS256', 'PS256', 'ES256', 'EdDSA']),
  /** An unknown `kid` refetches the key set at most this often. */
  jwksCooldownMs: positiveInt.default(5_000),
  /** How long a key set without `Cache-Control: max-age` is kept; also the cap on max-age. */
  jwksMaxAgeMs: positiveInt.default(300_000),
  clockSkewSeconds: z.number().int().min(0).max(60).default(60),
});

export const AgentPolicySchema = z.strictObject({
  tenant: z.string().min(1).optional(),
  tools: z.array(z.string().min(1)).optional(),
  weight: z.number().positive().optional(),
  /** The agent's static token (under `agents:`) stops working at this instant. */
  tokenExpiresAt: z.iso.datetime({ offset: true }).optional(),
});

export const GroupPolicySchema = z.strictObject({
  tools: z.array(z.string().min(1)).optional(),
  weight: z.number().positive().optional(),
});

export const SigningSchema = z.strictObject({
  /** HMAC key (at least 32 characters; use a ${file:} or ${env:} reference). */
  key: z.string().min(32),
  issuer: z.string().min(1).default('toolbus'),
  audience: z.string().min(1).default('toolbus'),
  /** The longest --ttl `toolbus token create` will sign. */
  maxTtlSeconds: positiveInt.default(24 * 3600),
});

export const AuthSchema = z.strictObject({
  /** toolbus's public URL of /mcp: the resource identifier in metadata and the default audience. Default: the listen address. */
  resource: z.url().optional(),
  oidc: OidcSchema.optional(),
  signing: SigningSchema.optional(),
  agents: z.record(agentId, AgentPolicySchema).default({}),
  groups: z.record(z.string().min(1), GroupPolicySchema).default({}),
});

export type AuthConfig = z.infer<typeof AuthSchema>;
export type OidcConfig = z.infer<typeof OidcSchema>;
