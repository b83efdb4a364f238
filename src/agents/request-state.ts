// toolbus's seal over an upstream's requestState (2026-07-28 multi round-trip requests, DESIGN.md section 13). A
// 2026 agent that gets an InputRequiredResult gets the upstream's state wrapped in toolbus's own, with an HMAC over
// the agent, the endpoint, the method and what it names (tool, prompt or resource), the idempotency key and the inner
// state. Its retry must bring the seal back unchanged: a seal opened by another agent, for another tool or key, or
// altered in any byte, is refused before anything reaches the upstream.
//
// The key lives in the state store (sharedSealKey): every replica on one Redis, and a SQLite bus across restarts,
// seal and open with the same key, so a follow-up call may reach any of them. (A parked call is another matter: it is
// an upstream call running in one process; see parked-calls.ts.)
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { KEY_META } from '../catalog/catalog.js';
import type { VaultStore } from '../store/contract.js';

const KEY_BLOB = 'toolbus/request-state-key';

/**
 * The seal key shared through the store: read, or made once (the first replica to write it wins, the others read
 * it). An attacker who can read the store could forge a seal, which would let an agent send the upstream a state of
 * its choosing, as it could without toolbus; parked calls are still bound to their agent.
 */
export async function sharedSealKey(vault: VaultStore): Promise<Buffer> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const stored = await vault.getBlob(KEY_BLOB);
    if (stored && /^[0-9a-f]{64}$/.test(stored.value)) return Buffer.from(stored.value, 'hex');
    const fresh = randomBytes(32).toString('hex');
    const written = await vault.putBlob(KEY_BLOB, fresh, stored?.version ?? 0);
    if (written !== null) return Buffer.from(fresh, 'hex');
  }
  throw new Error('the request-state key could not be read or written in the state store');
}

const PREFIX = 'tb1.';

/** What a seal is bound to; everything but the inner state, which it carries. */
export interface SealBinding {
  agentId: string;
  endpoint: string | undefined;
  method: string;
  params: Record<string, unknown> | undefined;
}

function bindingText(b: SealBinding): string {
  const p = b.params ?? {};
  const target = p.name ?? p.uri ?? '';
  const args = p.arguments as Record<string, unknown> | undefined;
  const key = args?.idempotency_key ?? (p._meta as Record<string, unknown> | undefined)?.[KEY_META] ?? '';
  return JSON.stringify([b.agentId, b.endpoint ?? '', b.method, String(target), String(key)]);
}

export class RequestStateSeal {
  constructor(private readonly key: Buffer = randomBytes(32)) {}

  private mac(binding: SealBinding, payload: string): Buffer {
    return createHmac('sha256', this.key).update(bindingText(binding)).update('\n').update(payload).digest();
  }

  seal(binding: SealBinding, inner: unknown): string {
    const payload = Buffer.from(JSON.stringify({ s: inner })).toString('base64url');
    return `${PREFIX}${payload}.${this.mac(binding, payload).toString('base64url')}`;
  }

  /** The inner state, or undefined when the seal is not one of ours for this binding. */
  open(binding: SealBinding, sealed: unknown): { inner: unknown } | undefined {
    if (typeof sealed !== 'string' || !sealed.startsWith(PREFIX) || sealed.length > 1_000_000) return undefined;
    const [payload, tag, extra] = sealed.slice(PREFIX.length).split('.');
    if (payload === undefined || tag === undefined || extra !== undefined) return undefined;
    // Compared as text: two tags that decode to the same bytes (Base64's spare bits) are still different states.
    const expected = Buffer.from(this.mac(binding, payload).toString('base64url'));
    const given = Buffer.from(tag);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    try {
      const decoded = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { s?: unknown };
      return { inner: decoded.s };
    } catch {
      return undefined;
    }
  }
}
