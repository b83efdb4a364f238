// The SQLite store's file: its schema and pragmas, the statements the store runs, and its key, lease and counter
// tables as the redo journal's overlay sees them (sqlite-journal.ts). The store's behaviour is in sqlite.ts.
import type Database from 'better-sqlite3';
import type { BucketState } from './gcra.js';
import type { StoredKey } from './key-rules.js';
import type { LeaseRow } from './local-leases.js';
import type { BackingRows, JournalOp } from './sqlite-journal.js';

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

/**
 * WAL with synchronous=NORMAL: a committed transaction is in the WAL before the call returns (safe against a killed
 * process; see sqlite.ts). Creates the tables, and moves a version 1 file over.
 */
export function prepareFile(db: Database.Database): void {
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 1000');
  db.exec(SCHEMA);
  const v1 = db.prepare(`SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'keys_v1'`).get() as {
    n: number;
  };
  if (v1.n > 0) db.transaction(() => db.exec(MIGRATE_V1))();
}

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

export type Statements = ReturnType<typeof prepareStatements>;

export function prepareStatements(db: Database.Database) {
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

export function journalPath(dbPath: string): string {
  return `${dbPath}.redo`;
}

/** The key, lease and counter tables as the journal's overlay sees them. */
export function backingRows(db: Database.Database, q: Statements): BackingRows {
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
