// The configured agents and their bearer tokens. Tokens are kept only as SHA-256 digests and compared in constant
// time; the table is swapped whole on a live reload, so a revoked token stops working at once.
import { createHash, timingSafeEqual } from 'node:crypto';
import { toolMatcher } from '../catalog/catalog.js';
import type { AgentConfig } from '../config/schema.js';
import type { AgentIdentity } from '../pipeline/context.js';

interface Entry {
  digest: Buffer;
  identity: AgentIdentity;
}

function digestOf(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export class AgentTable {
  private entries: Entry[] = [];

  constructor(agents: readonly AgentConfig[]) {
    this.replace(agents);
  }

  replace(agents: readonly AgentConfig[]): void {
    this.entries = agents.map((a) => ({
      digest: a.tokenSha256 ? Buffer.from(a.tokenSha256, 'hex') : digestOf(a.token!),
      identity: { id: a.id, tenant: a.tenant, weight: a.weight, allows: toolMatcher(a.tools) },
    }));
  }

  has(id: string): boolean {
    return this.entries.some((e) => e.identity.id === id);
  }

  get(id: string): AgentIdentity | undefined {
    return this.entries.find((e) => e.identity.id === id)?.identity;
  }

  list(): AgentIdentity[] {
    return this.entries.map((e) => e.identity);
  }

  /** `Authorization: Bearer <token>` → the agent, or null. Every entry is compared, so timing says nothing. */
  authenticate(header: string | undefined): AgentIdentity | null {
    if (!header || header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ') return null;
    const digest = digestOf(header.slice(7).trim());
    let found: AgentIdentity | null = null;
    for (const e of this.entries) if (timingSafeEqual(e.digest, digest) && !found) found = e.identity;
    return found;
  }
}
