// The configured agents and their bearer tokens. Tokens are kept only as SHA-256 digests and compared in constant
// time; the table is swapped whole on a live reload, so a revoked token stops working at once.
//
// A keep-alive connection sends the same Authorization header on every request: the header that matched last is
// remembered on that connection (and only there, for as long as it is open), so the token is hashed once per
// connection instead of once per request (a cold SHA-256 was about 10 µs of a 1-agent call). A replaced table
// forgets every connection's match. Only agents whose plaintext token is in the config are remembered: an agent
// configured by `tokenSha256` keeps its plaintext out of the process's memory, so its token is hashed every time.
import { createHash, timingSafeEqual } from 'node:crypto';
import { toolMatcher } from '../catalog/catalog.js';
import type { AgentConfig } from '../config/schema.js';
import type { AgentIdentity } from '../pipeline/context.js';

interface Entry {
  digest: Buffer;
  identity: AgentIdentity;
  /** The config holds the plaintext token (not only its digest): a connection may remember the header. */
  memo: boolean;
}

function digestOf(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** What a connection last authenticated as, and under which table. */
interface Matched {
  header: string;
  identity: AgentIdentity;
  entries: Entry[];
}

export class AgentTable {
  private entries: Entry[] = [];
  private readonly matched = new WeakMap<object, Matched>();

  constructor(agents: readonly AgentConfig[]) {
    this.replace(agents);
  }

  replace(agents: readonly AgentConfig[]): void {
    this.entries = agents.map((a) => ({
      digest: a.tokenSha256 ? Buffer.from(a.tokenSha256, 'hex') : digestOf(a.token!),
      memo: !a.tokenSha256,
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

  /**
   * `Authorization: Bearer <token>` → the agent, or null. Every entry is compared, so timing says nothing.
   * `connection` (the request's socket) remembers a match for the connection's next requests.
   */
  authenticate(header: string | undefined, connection?: object): AgentIdentity | null {
    if (!header || header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ') return null;
    const last = connection && this.matched.get(connection);
    if (last && last.header === header && last.entries === this.entries) return last.identity;
    const digest = digestOf(header.slice(7).trim());
    let found: Entry | null = null;
    for (const e of this.entries) if (timingSafeEqual(e.digest, digest) && !found) found = e;
    if (found?.memo && connection)
      this.matched.set(connection, { header, identity: found.identity, entries: this.entries });
    return found?.identity ?? null;
  }
}
