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
import { type BucketState, pauseBucketState, takeFromBucket } from './gcra.js';
import {
  applyTransition,
  CLAIM_LINGER_MS,
  decideClaim,
  type KeyTransition,
  type StoredKey,
  settles,
  viewKey,
} from './key-rules.js';
import { KeyTransitions } from './key-transitions.js';
import { type LeaseRow, LocalLeases } from './local-leases.js';
import { beginWriteLocally, finishWriteLocally, type KeyRows } from './local-writes.js';
import { DEFAULT_AUDIT_LIMIT } from './memory.js';
import { ScopeSignals, waitUntilSettled } from './scope-signals.js';
import { GroupCommit } from './sqlite-group-commit.js';
import {
  type BackingRows,
  JournaledRows,
  type JournalOp,
  type JournalReplay,
  replayJournal,
} from './sqlite-journal.js';
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

const SCHEMA = `
CREATE TABLE IF NOT EXISTS keys_v2 (
  scope TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  owner TEXT NOT NULL,
  fence INTEGER NOT NULL,
  result TEXT,
  expires_at INTEGER NOT NULL,
  unknown_ttl_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_v2_expires_at ON keys_v2 (expires_at);
CREATE TABLE IF NOT EXISTS leases_v2 (
  scope TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  token INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters_v1 (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS buckets_v1 (
  bucket TEXT PRIMARY KEY,
  tat REAL NOT NULL,
  paused_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_v1 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  tool TEXT NOT NULL,
  entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_v1_at ON audit_v1 (at);
CREATE INDEX IF NOT EXISTS audit_v1_tool ON audit_v1 (tool, id);
`;

function fileIdentity(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}
/**
 * Version 1 kept keys and leases in rowid tables, so every change of a row also touched a separate index on its
 * scope: two more pages written to the WAL per commit. Version 2 keys them by scope alone (WITHOUT ROWID); a file
 * of version 1 is moved over once, at open.
 */
const MIGRATE_V1 = `
INSERT OR IGNORE INTO keys_v2 SELECT scope, state, fingerprint, owner, fence, result, expires_at, unknown_ttl_ms FROM keys_v1;
DROP TABLE keys_v1;
INSERT OR IGNORE INTO leases_v2 SELECT scope, holder, token, expires_at FROM leases_v1;
DROP TABLE leases_v1;
`;

/** Fencing tokens are reserved in blocks, so a grant writes the counter's page once per this many grants. */
const TOKEN_BLOCK = 1000;

/** Codes that mean the file cannot be used right now (disk, permissions, locking), not a bug in a statement. */
const UNAVAILABLE = /^SQLITE_(IOERR|FULL|CANTOPEN|BUSY|LOCKED|READONLY|CORRUPT|NOTADB|PROTOCOL|NOMEM|PERM|AUTH)/;

interface KeyRow {
  state: StoredKey['state'];
  fingerprint: string;
  owner: string;
  fence: number;
  result: string | null;
  expiresAt: number;
  unknownTtlMs: number;
}

function toStored(row: KeyRow | undefined): StoredKey | undefined {
  if (!row) return undefined;
  const { result, ...rest } = row;
  return result === null ? rest : { ...rest, result };
}

type Statements = ReturnType<typeof prepareStatements>;

function prepareStatements(db: Database.Database) {
  const p = <P extends unknown[] | object = unknown[], R = unknown>(sql: string) => db.prepare<P, R>(sql);
  return {
    getKey: p<[string], KeyRow>(
      `SELECT state, fingerprint, owner, fence, result, expires_at AS expiresAt, unknown_ttl_ms AS unknownTtlMs
       FROM keys_v2 WHERE scope = ?`,
    ),
    putKey: p<[string, string, string, string, number, string | null, number, number]>(
      `INSERT INTO keys_v2 (scope, state, fingerprint, owner, fence, result, expires_at, unknown_ttl_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (scope) DO UPDATE SET state = excluded.state, fingerprint = excluded.fingerprint,
         owner = excluded.owner, fence = excluded.fence, result = excluded.result,
         expires_at = excluded.expires_at, unknown_ttl_ms = excluded.unknown_ttl_ms`,
    ),
    deleteKey: p<[string]>('DELETE FROM keys_v2 WHERE scope = ?'),
    sweepKeys: p<{ now: number; linger: number; limit: number }>(
      `DELETE FROM keys_v2 WHERE scope IN (SELECT scope FROM keys_v2 WHERE expires_at <= @now AND (
         (state IN ('completed', 'unknown'))
         OR (state = 'claimed' AND expires_at + @linger <= @now)
         OR (state = 'dispatched' AND expires_at + unknown_ttl_ms <= @now)) LIMIT @limit)`,
    ),
    releaseClaims: p<[]>(`DELETE FROM keys_v2 WHERE state = 'claimed'`),
    dropLostDispatches: p<[number]>(
      `DELETE FROM keys_v2 WHERE state = 'dispatched' AND expires_at + unknown_ttl_ms <= ?`,
    ),
    dispatchesToUnknown: p<[number]>(`UPDATE keys_v2 SET state = 'unknown', expires_at = ? WHERE state = 'dispatched'`),
    shortenLeases: p<[number, number]>(
      `UPDATE leases_v2 SET holder = '', expires_at = MIN(expires_at, ?) WHERE expires_at > ?`,
    ),
    putLease: p<[string, string, number, number]>(
      `INSERT INTO leases_v2 (scope, holder, token, expires_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (scope) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at`,
    ),
    deleteLease: p<[string]>('DELETE FROM leases_v2 WHERE scope = ?'),
    allLeases: p<[], LeaseRow & { scope: string }>(
      'SELECT scope, holder, token, expires_at AS expiresAt FROM leases_v2',
    ),
    sweepLeases: p<[number]>('DELETE FROM leases_v2 WHERE expires_at <= ?'),
    getTokenCeiling: p<[], { value: number }>(`SELECT value FROM counters_v1 WHERE name = 'lease-token'`),
    putTokenCeiling: p<[number]>(
      `INSERT INTO counters_v1 (name, value) VALUES ('lease-token', ?)
       ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)`,
    ),
    getBucket: p<[string], BucketState>('SELECT tat, paused_until AS pausedUntil FROM buckets_v1 WHERE bucket = ?'),
    putBucket: p<[string, number, number]>(
      `INSERT INTO buckets_v1 (bucket, tat, paused_until) VALUES (?, ?, ?)
       ON CONFLICT (bucket) DO UPDATE SET tat = excluded.tat, paused_until = excluded.paused_until`,
    ),
    sweepBuckets: p<[number]>('DELETE FROM buckets_v1 WHERE MAX(tat, paused_until) <= ?'),
    appendAudit: p<[number, string, string]>('INSERT INTO audit_v1 (at, tool, entry) VALUES (?, ?, ?)'),
    queryAudit: p<{ since: number; tool: string | null; limit: number }, { entry: string }>(
      `SELECT entry FROM audit_v1 WHERE at >= @since AND (@tool IS NULL OR tool = @tool) ORDER BY id DESC LIMIT @limit`,
    ),
    sweepAudit: p<[number]>('DELETE FROM audit_v1 WHERE at < ?'),
    ping: p<[], { one: number }>('SELECT 1 AS one'),
  };
}

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
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 1000');
    db.exec(SCHEMA);
    const v1 = db
      .prepare(`SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'keys_v1'`)
      .get() as {
      n: number;
    };
    if (v1.n > 0) db.transaction(() => db.exec(MIGRATE_V1))();
    const q = prepareStatements(db);
    const backing = backingRows(db, q);
    const replay = replayJournal(journalPath(path), backing);
    const store = new SqliteStore(db, q, unlock, new JournaledRows(journalPath(path), backing));
    store.journalReplay = replay;
    return store;
  } catch (err) {
    unlock();
    throw err;
  }
}

function journalPath(dbPath: string): string {
  return `${dbPath}.redo`;
}

/** The key, lease and counter tables as the journal's overlay sees them. */
function backingRows(db: Database.Database, q: Statements): BackingRows {
  const applyTx = db.transaction((ops: JournalOp[]) => {
    for (const op of ops) {
      if (op[0] === 't') q.putTokenCeiling.run(op[1]);
      else if (op[0] === 'k') {
        const [, scope, r] = op;
        if (r === null) q.deleteKey.run(scope);
        else
          q.putKey.run(scope, r.state, r.fingerprint, r.owner, r.fence, r.result ?? null, r.expiresAt, r.unknownTtlMs);
      } else {
        const [, scope, r] = op;
        if (r === null) q.deleteLease.run(scope);
        else q.putLease.run(scope, r.holder, r.token, r.expiresAt);
      }
    }
  });
  return {
    getKey: (scope) => toStored(q.getKey.get(scope)),
    allLeases: () => q.allLeases.all().map(({ scope, ...row }) => [scope, row] as [string, LeaseRow]),
    tokenCeiling: () => q.getTokenCeiling.get()?.value ?? 0,
    // The journal is emptied after this returns, so this one commit waits for the WAL's fsync (synchronous=FULL):
    // a power loss must not be able to keep the emptied journal and lose the rows. One fsync per drain, off the
    // calls' path, instead of one per call.
    apply: (ops) => {
      db.pragma('synchronous = FULL');
      try {
        applyTx(ops);
      } finally {
        db.pragma('synchronous = NORMAL');
      }
    },
  };
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
  /** What the redo journal replayed at open (set by openSqliteStore; the bus logs a line cut short). */
  journalReplay: JournalReplay = { lines: 0, droppedBytes: 0 };
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
      get: (scope) => this.guard(() => rows.getLease(scope)),
      grant: (scope, holder, expiresAt) => this.guard(() => rows.atomically(() => grant(scope, holder, expiresAt))),
      put: (scope, row) => this.guard(() => rows.atomically(() => rows.putLease(scope, row))),
      remove: (scope) => this.guard(() => rows.atomically(() => rows.putLease(scope, null))),
      all: () => this.guard(() => rows.allLeases()),
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
