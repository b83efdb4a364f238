// The embedded, durable state store: one SQLite file owned by one bus process (lock file PATH.lock).
//
// Durability: WAL with synchronous=NORMAL. Every committed transaction is in the WAL before the call returns, so a
// killed process (kill -9, OOM, crash) loses nothing; only a power loss or OS crash may lose the last transactions
// before a checkpoint, which is the price of not fsyncing every call. Key rows, lease rows and the fencing-token
// ceiling change through the redo journal PATH.redo first (sqlite-journal.ts), with the same promise, and reach the
// tables in batches; a restart replays the journal before anything else.
//
// better-sqlite3 is synchronous, and this process is the only writer, so each operation below (a read, the rules of
// key-rules.ts / gcra.ts, a write) runs to completion without interleaving; a multi-row one is one journal step, so
// neither the journal nor the file ever holds half of one. Waiting (joins, lease queues) happens in this process.
// Lease rows and the fencing-token counter are kept, so a restart keeps tokens monotonic.

import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  type AuditEntry,
  type BeginWriteOutcome,
  type BeginWriteRequest,
  type ClaimOutcome,
  type ClaimRequest,
  type FinishWriteRequest,
  type KeyRecord,
  type LeaseGrant,
  type StateStore,
  StoreUnavailable,
  type TakeTokenResult,
} from './contract.js';
import { stillLocked, takeFileLock } from './file-lock.js';
import { pauseBucketState, takeFromBucket } from './gcra.js';
import { applyTransition, CLAIM_LINGER_MS, decideClaim, type KeyTransition, settles, viewKey } from './key-rules.js';
import { KeyTransitions } from './key-transitions.js';
import { LocalLeases } from './local-leases.js';
import { beginWriteLocally, finishWriteLocally, type KeyRows } from './local-writes.js';
import { DEFAULT_AUDIT_LIMIT } from './memory.js';
import { ScopeSignals, waitUntilSettled } from './scope-signals.js';
import { GroupCommit } from './sqlite-group-commit.js';
import { JournaledRows, type JournalReplay, replayJournal } from './sqlite-journal.js';
import { backingRows, journalPath, prepareFile, prepareStatements, type Statements } from './sqlite-tables.js';
import { SqliteVault } from './vault-sqlite.js';

const SWEEP_EVERY_MS = 60_000;
const SWEEP_BATCH = 5000;
const BUCKET_IDLE_MS = 60_000;
/** Audit entries older than this are deleted, so the file does not grow without bound. */
export const AUDIT_RETENTION_MS = 30 * 24 * 3600_000;
/** Leases of a previous incarnation stay blocked at most this long after a restart (as after a timed-out holder). */
const ABANDONED_LEASE_DELAY_MS = 1000;
/** Audit entries are written together at most this long after the first of a batch, or at this many. */
const AUDIT_FLUSH_MS = 20;
const AUDIT_BATCH_MAX = 256;

function fileIdentity(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}
/** Fencing tokens are reserved in blocks, so a grant writes the counter's page once per this many grants. */
const TOKEN_BLOCK = 1000;

/** Codes that mean the file cannot be used right now (disk, permissions, locking), not a bug in a statement. */
const UNAVAILABLE = /^SQLITE_(IOERR|FULL|CANTOPEN|BUSY|LOCKED|READONLY|CORRUPT|NOTADB|PROTOCOL|NOMEM|PERM|AUTH)/;

export function openSqliteStore(path: string, opts: { readonly: boolean }): SqliteStore {
  if (opts.readonly) {
    let db: Database.Database;
    try {
      db = new Database(path, { readonly: true, fileMustExist: true });
    } catch (err) {
      throw new Error(`cannot open the toolbus state at ${path}: ${(err as Error).message}`, { cause: err });
    }
    const found = db
      .prepare(`SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'audit_v1'`)
      .get() as {
      n: number;
    };
    if (found.n === 0) {
      db.close();
      throw new Error(`${path} holds no toolbus state (table audit_v1)`);
    }
    // A reader neither replays nor reads PATH.redo: it sees the tables as of the bus's last drain (up to 100 ms
    // old), which is all `toolbus audit` needs (audit entries do not go through the journal).
    const q = prepareStatements(db);
    return new SqliteStore(db, q, undefined, new JournaledRows(undefined, backingRows(db, q)));
  }
  mkdirSync(dirname(path), { recursive: true });
  const unlock = takeFileLock(path);
  try {
    const db = new Database(path);
    prepareFile(db);
    const q = prepareStatements(db);
    const backing = backingRows(db, q);
    const replay = replayJournal(journalPath(path), backing);
    return new SqliteStore(db, q, unlock, new JournaledRows(journalPath(path), backing), replay);
  } catch (err) {
    unlock();
    throw err;
  }
}

export class SqliteStore extends KeyTransitions implements StateStore {
  readonly kind = 'sqlite' as const;
  private vaultTables: SqliteVault | undefined;
  /** Created on first use, so a read-only store (`toolbus audit`) never writes the vault's tables. */
  get vault(): SqliteVault {
    this.vaultTables ??= new SqliteVault(this.db);
    return this.vaultTables;
  }
  private closed = false;
  private readonly signals = new ScopeSignals();
  private readonly leases: LocalLeases;
  /** The last fencing token handed out (tokens are reserved in blocks up to rows.tokenCeiling). */
  private lastToken = 0;
  private readonly sweeper: NodeJS.Timeout | undefined;
  /** Device and inode of the file opened, for the ping's check that it is still there. */
  private readonly fileId: string | undefined;
  private readonly takeTx: (bucket: string, perSecond: number, burst: number, now: number) => TakeTokenResult;
  private readonly settleTx: (unknownTtlMs: number, now: number) => { released: number; unknown: number };
  private readonly keyRows: KeyRows;
  private readonly group: GroupCommit;
  private readonly auditTx: (entries: AuditEntry[]) => void;
  /** Audit entries not yet written: flushed together, one transaction per batch, off the call's path. */
  private auditBatch: AuditEntry[] = [];
  private auditTimer: NodeJS.Timeout | undefined;
  private auditWritten: Promise<void> | undefined;
  private auditSettle: { resolve: () => void; reject: (err: unknown) => void } | undefined;

  constructor(
    private readonly db: Database.Database,
    private readonly q: Statements,
    private readonly unlock: (() => void) | undefined,
    /** Key rows, lease rows and the token ceiling: SQLite's, behind the redo journal's overlay. */
    private readonly rows: JournaledRows,
    /** What the redo journal replayed at open (the bus logs a line cut short). */
    readonly journalReplay: JournalReplay = { lines: 0, droppedBytes: 0 },
  ) {
    super();
    this.fileId = unlock && db.name !== ':memory:' ? fileIdentity(db.name) : undefined;
    // Tokens up to the stored ceiling may have been handed out; a new incarnation starts above it (and above any
    // lease row, in case a power loss kept a row and lost its ceiling).
    this.lastToken = rows.tokenCeiling;
    for (const [, row] of rows.allLeases()) this.lastToken = Math.max(this.lastToken, row.token);
    this.takeTx = db.transaction((bucket: string, perSecond: number, burst: number, now: number) => {
      const { result, next } = takeFromBucket(q.getBucket.get(bucket), now, perSecond, burst);
      if (next) q.putBucket.run(bucket, next.tat, next.pausedUntil);
      return result;
    });
    this.settleTx = db.transaction((unknownTtlMs: number, now: number) => {
      const released = q.releaseClaims.run().changes;
      q.dropLostDispatches.run(now);
      const unknown = q.dispatchesToUnknown.run(now + unknownTtlMs).changes;
      // The dead incarnation's leases: its writes may still be finishing upstream, so block briefly, not for the
      // whole TTL (which would make every retry after a restart wait out the lease).
      q.shortenLeases.run(now + ABANDONED_LEASE_DELAY_MS, now);
      return { released, unknown };
    });

    this.keyRows = { get: (scope) => rows.getKey(scope), put: (scope, row) => rows.putKey(scope, row) };
    // Claim + leases + dispatch in one step, complete + release in another, and the steps of concurrent writes in
    // one journal line per turn of the event loop.
    this.group = new GroupCommit(rows, (fn) => this.guard(fn));
    this.auditTx = db.transaction((entries: AuditEntry[]) => {
      for (const e of entries) q.appendAudit.run(e.at, e.tool, JSON.stringify(e));
    });

    const grant = (scope: string, holder: string, expiresAt: number) => {
      const token = this.lastToken + 1;
      // In the same step as the lease row, so no token is handed out above the stored ceiling.
      if (token > rows.tokenCeiling) rows.setTokenCeiling(token + TOKEN_BLOCK - 1);
      rows.putLease(scope, { holder, token, expiresAt });
      this.lastToken = token;
      return token;
    };
    this.leases = new LocalLeases({
      // The lease table is in memory (sqlite-journal.ts): reads cannot fail, only journaled changes can.
      get: (scope) => rows.getLease(scope),
      grant: (scope, holder, expiresAt) => this.guard(() => rows.atomically(() => grant(scope, holder, expiresAt))),
      put: (scope, row) => this.guard(() => rows.atomically(() => rows.putLease(scope, row))),
      remove: (scope) => this.guard(() => rows.atomically(() => rows.putLease(scope, null))),
      all: () => rows.allLeases(),
    });
    if (unlock) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_EVERY_MS);
      this.sweeper.unref();
    }
  }

  async claimKey(req: ClaimRequest): Promise<ClaimOutcome> {
    return this.guard(() =>
      this.rows.atomically(() => {
        const { outcome, write } = decideClaim(this.rows.getKey(req.scope), req, Date.now());
        if (write) this.rows.putKey(req.scope, write);
        return outcome;
      }),
    );
  }

  beginWrite(req: BeginWriteRequest): Promise<BeginWriteOutcome> {
    if (this.closed) return Promise.reject(closedError());
    return this.group.run(() => beginWriteLocally(req, Date.now(), this.keyRows, this.leases));
  }

  async finishWrite(req: FinishWriteRequest): Promise<boolean> {
    this.assertOpen();
    const done = await this.group.run(() => finishWriteLocally(req, Date.now(), this.keyRows, this.leases));
    if (done) this.signals.notify(req.scope);
    return done;
  }

  async getKey(scope: string): Promise<KeyRecord | null> {
    return this.guard(() => viewKey(this.rows.getKey(scope), Date.now()));
  }

  waitForKey(scope: string, timeoutMs: number, signal?: AbortSignal): Promise<KeyRecord | null> {
    return waitUntilSettled({
      scope,
      timeoutMs,
      signal,
      signals: this.signals,
      read: async () =>
        this.guard(() => {
          const now = Date.now();
          return { record: viewKey(this.rows.getKey(scope), now), now };
        }),
    });
  }

  acquireLease(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant> {
    try {
      this.assertOpen();
      return this.leases.acquire(scope, holder, opts);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async renewLease(grant: LeaseGrant, ttlMs: number): Promise<boolean> {
    this.assertOpen();
    return this.leases.renew(grant, ttlMs);
  }

  async releaseLease(grant: LeaseGrant, blockForMs?: number): Promise<void> {
    this.assertOpen();
    this.leases.release(grant, blockForMs);
  }

  async listLeases(): Promise<{ scope: string; holder: string; token: number; expiresAt: number; waiters: number }[]> {
    this.assertOpen();
    return this.leases.list();
  }

  async takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult> {
    return this.guard(() => this.takeTx(bucket, perSecond, burst, Date.now()));
  }

  async pauseBucket(bucket: string, ms: number): Promise<void> {
    this.guard(() => {
      const next = pauseBucketState(this.q.getBucket.get(bucket), Date.now(), ms);
      this.q.putBucket.run(bucket, next.tat, next.pausedUntil);
    });
  }

  /** Resolves once the entry's batch is written (the pipeline does not wait for it; a CLI or test may). */
  appendAudit(entry: AuditEntry): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    this.auditBatch.push(entry);
    if (!this.auditWritten) {
      this.auditWritten = new Promise<void>((resolve, reject) => {
        this.auditSettle = { resolve, reject };
      });
      this.auditTimer = setTimeout(() => this.flushAudit(), AUDIT_FLUSH_MS);
    }
    const written = this.auditWritten;
    if (this.auditBatch.length >= AUDIT_BATCH_MAX) this.flushAudit();
    return written;
  }

  /** Writes the pending audit entries in one transaction. */
  private flushAudit(): void {
    clearTimeout(this.auditTimer);
    this.auditTimer = undefined;
    const batch = this.auditBatch;
    const settle = this.auditSettle;
    this.auditBatch = [];
    this.auditWritten = undefined;
    this.auditSettle = undefined;
    if (batch.length === 0 || !settle) return;
    try {
      this.guard(() => this.auditTx(batch));
      settle.resolve();
    } catch (err) {
      settle.reject(err);
    }
  }

  /** Oldest first (newest last); with a limit, the newest `limit` matching entries. */
  async queryAudit(query: { sinceMs?: number; tool?: string; limit?: number }): Promise<AuditEntry[]> {
    this.flushAudit();
    return this.guard(() =>
      this.q.queryAudit
        .all({
          since: query.sinceMs ?? Number.MIN_SAFE_INTEGER,
          tool: query.tool ?? null,
          limit: query.limit ?? DEFAULT_AUDIT_LIMIT,
        })
        .map((r) => JSON.parse(r.entry) as AuditEntry)
        .reverse(),
    );
  }

  /**
   * Also checks that the file on disk is still the one this store opened and that the lock is still ours: a state
   * file deleted or replaced while the bus runs would otherwise take writes into an unlinked file, and let a second
   * bus start on the same path.
   */
  async ping(): Promise<void> {
    this.guard(() => this.q.ping.get());
    // A failed drain is retried here too, so writes come back as soon as the file can take them again.
    if (this.rows.drainError && !this.rows.drain()) {
      throw new StoreUnavailable(`the state file cannot be written: ${this.rows.drainError.message}`);
    }
    if (this.fileId === undefined) return;
    let now: string | undefined;
    try {
      now = fileIdentity(this.db.name);
    } catch {
      now = undefined;
    }
    if (now !== this.fileId) throw new StoreUnavailable(`the state file ${this.db.name} was removed or replaced`);
    if (!stillLocked(this.db.name)) throw new StoreUnavailable(`the lock of ${this.db.name} is no longer ours`);
  }

  async settleAbandoned(unknownTtlMs: number): Promise<{ released: number; unknown: number }> {
    if (!this.unlock) return { released: 0, unknown: 0 };
    return this.guard(() => {
      // The statements below run on the tables, which must hold everything first.
      if (!this.rows.drain()) {
        throw new StoreUnavailable(`the state file cannot be written: ${this.rows.drainError?.message}`);
      }
      const settled = this.settleTx(unknownTtlMs, Date.now());
      this.rows.reloadLeases();
      return settled;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.group.flush();
    this.flushAudit();
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.leases.close(closedError());
    this.signals.notifyAll();
    try {
      this.rows.close();
      this.db.close();
    } finally {
      this.unlock?.();
    }
  }

  protected override transition(scope: string, owner: string, fence: number, t: KeyTransition): boolean {
    const done = this.guard(() =>
      this.rows.atomically(() => {
        const next = applyTransition(this.rows.getKey(scope), owner, fence, t, Date.now());
        if (next === null) return false;
        this.rows.putKey(scope, next === 'delete' ? null : next);
        return true;
      }),
    );
    if (done && settles(t)) this.signals.notify(scope);
    return done;
  }

  private sweep(): void {
    if (this.closed) return;
    const now = Date.now();
    try {
      if (!this.rows.drain()) return; // the sweeps below run on the tables, which must hold everything first
      this.q.sweepKeys.run({ now, linger: CLAIM_LINGER_MS, limit: SWEEP_BATCH });
      this.q.sweepLeases.run(now);
      this.rows.forgetLeasesBefore(now);
      this.q.sweepBuckets.run(now - BUCKET_IDLE_MS);
      this.q.sweepAudit.run(now - AUDIT_RETENTION_MS);
    } catch {
      // A failed sweep is retried next time; expired rows already read as absent.
    }
  }

  private assertOpen(): void {
    if (this.closed) throw closedError();
  }

  /** Runs a statement, mapping a file that cannot be used to StoreUnavailable. */
  private guard<T>(fn: () => T): T {
    this.assertOpen();
    try {
      return fn();
    } catch (err) {
      if (err instanceof Database.SqliteError && UNAVAILABLE.test(err.code)) {
        throw new StoreUnavailable(`SQLite state file unusable: ${err.code} ${err.message}`, { cause: err });
      }
      // The journal could not be appended to (disk full, I/O error).
      if (err instanceof Error && 'syscall' in err) {
        throw new StoreUnavailable(`SQLite state journal unusable: ${err.message}`, { cause: err });
      }
      throw err;
    }
  }
}

function closedError(): StoreUnavailable {
  return new StoreUnavailable('the state store is closed');
}
