// Short-lived tokens toolbus signs itself (`toolbus token create`), for scripts that have no identity provider.
// They are ordinary JWTs (HS256, iss/aud/sub/exp/iat/jti) and are verified by the same code as any other JWT.
import { createHash, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { AuthConfig } from '../config/auth-schema.js';

type Signing = NonNullable<AuthConfig['signing']>;

/** The configured key is hashed, so any string of 32+ characters gives a full-strength 256-bit HMAC key. */
export function signingKeyBytes(signing: Signing): Uint8Array {
  return createHash('sha256').update(signing.key, 'utf8').digest();
}

export function signAgentToken(
  signing: Signing,
  agentId: string,
  ttlSeconds: number,
  now = Date.now(),
): Promise<string> {
  const iat = Math.floor(now / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })
    .setIssuer(signing.issuer)
    .setAudience(signing.audience)
    .setSubject(agentId)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlSeconds)
    .setJti(randomUUID())
    .sign(signingKeyBytes(signing));
}

/** "90", "90s", "15m", "1h", "2d" → seconds; undefined when it is none of these. */
export function parseTtl(text: string): number | undefined {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return n > 0 ? n : undefined;
}
