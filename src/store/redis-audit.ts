// The audit trail of the Redis store: a capped stream under P audit, one item per batch of entries (field b, a JSON
// array, oldest first; older versions wrote one entry per item in field e, still read). A batch rides along with a
// finish-write script once it holds a few entries or has waited a little, so a steady stream of writes sends its
// audit with no round trip of its own and about one XADD per RIDE_MIN_ENTRIES writes; with no write coming, a timer
// sends it after AUDIT_FLUSH_MS. A crash loses at most that last second: the audit is a record, not a guarantee.
import type { Redis } from 'ioredis';
import type { AuditEntry } from './contract.js';
import { DEFAULT_AUDIT_LIMIT } from './memory.js';

/** The stream keeps about this many newest entries, and disappears after this long without appends. */
export const REDIS_AUDIT_CAP = 10_000;
const AUDIT_TTL_MS = 30 * 24 * 3600_000;
const AUDIT_TTL_REFRESH_MS = 60_000;
const AUDIT_PAGE = 1000;
/** Entries are sent on their own at most this long after the first of a batch, or at this many. */
const AUDIT_FLUSH_MS = 1000;
const AUDIT_BATCH_MAX = 256;
/** A batch rides with a write's script once it has this many entries... */
const RIDE_MIN_ENTRIES = 8;
/** ...or its first entry has waited this long. */
const RIDE_MIN_AGE_MS = 20;

/** A batch taken for sending: the stream item's fields, and how to tell the appenders it was (or was not) stored. */
export interface AuditBatch {
  json: string;
  /** MAXLEN for the stream, in items, so that it keeps about REDIS_AUDIT_CAP entries. */
  maxItems: number;
  /** Refresh the stream's TTL with this append (at most once a minute). */
  refreshTtl: boolean;
  ttlMs: number;
  settle(err?: unknown): void;
}

export class RedisAuditTrail {
  private batch: AuditEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private written: Promise<void> | undefined;
  private settleWritten: { resolve: () => void; reject: (err: unknown) => void } | undefined;
  private ttlRefreshedAt = 0;
  private firstAt = 0;

  constructor(
    private readonly client: Redis,
    readonly key: string,
    /** Runs a request to Redis, counted and with errors mapped (RedisStore.command). */
    private readonly command: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {}

  /** Resolves once the entry's batch is in Redis (the pipeline does not wait for it; a CLI or test may). */
  append(entry: AuditEntry): Promise<void> {
    this.batch.push(entry);
    if (!this.written) {
      this.firstAt = Date.now();
      this.written = new Promise<void>((resolve, reject) => {
        this.settleWritten = { resolve, reject };
      });
      this.timer = setTimeout(() => {
        this.flush().catch(() => {});
      }, AUDIT_FLUSH_MS);
    }
    const written = this.written;
    if (this.batch.length >= AUDIT_BATCH_MAX) this.flush().catch(() => {});
    return written;
  }

  /** The pending entries for a write's script to append, once worth it (see RIDE_MIN_*); else undefined. */
  takeForRide(): AuditBatch | undefined {
    if (this.batch.length < RIDE_MIN_ENTRIES && Date.now() - this.firstAt < RIDE_MIN_AGE_MS) return undefined;
    return this.take();
  }

  /** The pending entries, for a script to append; undefined when there are none. */
  take(): AuditBatch | undefined {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.batch;
    const settle = this.settleWritten;
    this.batch = [];
    this.written = undefined;
    this.settleWritten = undefined;
    if (batch.length === 0 || !settle) return undefined;
    const now = Date.now();
    const refreshTtl = now - this.ttlRefreshedAt > AUDIT_TTL_REFRESH_MS;
    if (refreshTtl) this.ttlRefreshedAt = now;
    return {
      json: JSON.stringify(batch),
      maxItems: Math.max(1, Math.ceil(REDIS_AUDIT_CAP / batch.length)),
      refreshTtl,
      ttlMs: AUDIT_TTL_MS,
      settle: (err) => (err === undefined ? settle.resolve() : settle.reject(err)),
    };
  }

  /** Sends the pending entries in one pipeline. */
  async flush(): Promise<void> {
    const b = this.take();
    if (!b) return;
    try {
      await this.command(async () => {
        const pipe = this.client.pipeline();
        pipe.xadd(this.key, 'MAXLEN', '~', b.maxItems, '*', 'b', b.json);
        if (b.refreshTtl) pipe.pexpire(this.key, b.ttlMs);
        for (const [err] of (await pipe.exec()) ?? []) if (err) throw err;
      });
      b.settle();
    } catch (err) {
      b.settle(err);
      throw err;
    }
  }

  /** Oldest first (newest last); with a limit, the newest `limit` matching entries. Scans the capped stream. */
  async query(q: { sinceMs?: number; tool?: string; limit?: number }): Promise<AuditEntry[]> {
    const limit = q.limit ?? DEFAULT_AUDIT_LIMIT;
    await this.flush().catch(() => {});
    return this.command(async () => {
      const out: AuditEntry[] = [];
      let end = '+';
      while (out.length < limit) {
        const page = await this.client.xrevrange(this.key, end, '-', 'COUNT', AUDIT_PAGE);
        for (const [, fields] of page) {
          const parsed = JSON.parse(fields[1] ?? 'null') as AuditEntry | AuditEntry[] | null;
          const entries = Array.isArray(parsed) ? parsed.reverse() : parsed ? [parsed] : [];
          for (const entry of entries) {
            if (q.sinceMs !== undefined && entry.at < q.sinceMs) continue;
            if (q.tool !== undefined && entry.tool !== q.tool) continue;
            out.push(entry);
            if (out.length >= limit) break;
          }
          if (out.length >= limit) break;
        }
        if (page.length < AUDIT_PAGE) break;
        end = `(${page[page.length - 1]![0]}`;
      }
      return out.reverse();
    });
  }
}
