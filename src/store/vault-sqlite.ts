// The vault of the SQLite store: two tables of its own in the same database file. It needs only a better-sqlite3
// handle, so `toolbus login` can open it beside a running bus (which holds the store's exclusive file lock): SQLite
// itself serialises the two processes' writes (WAL, busy timeout).
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { VaultBlob, VaultStore } from './contract.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS vault_blobs_v1 (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vault_seq_v1 (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vault_locks_v1 (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
`;

export class SqliteVault implements VaultStore {
  private readonly putTx: Database.Transaction<(name: string, value: string, expected: number) => number | null>;
  private readonly lockTx: Database.Transaction<(name: string, holder: string, ttlMs: number) => boolean>;
  private readonly getStmt: Database.Statement<[string], { value: string; version: number }>;
  private readonly deleteStmt: Database.Statement<[string]>;
  private readonly unlockStmt: Database.Statement<[string, string]>;

  constructor(
    db: Database.Database,
    private readonly now: () => number = Date.now,
  ) {
    db.exec(SCHEMA);
    this.getStmt = db.prepare('SELECT value, version FROM vault_blobs_v1 WHERE name = ?');
    this.deleteStmt = db.prepare('DELETE FROM vault_blobs_v1 WHERE name = ?');
    this.unlockStmt = db.prepare('DELETE FROM vault_locks_v1 WHERE name = ? AND holder = ?');
    const upsert = db.prepare(
      'INSERT INTO vault_blobs_v1 (name, value, version) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value, version = excluded.version',
    );
    // Versions grow across deletes too: a blob written after a logout never reuses an old version number.
    const lastVersion = db.prepare<[], { value: number }>('SELECT value FROM vault_seq_v1 WHERE id = 1');
    const setVersion = db.prepare(
      'INSERT INTO vault_seq_v1 (id, value) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET value = excluded.value',
    );
    const getLock = db.prepare<[string], { holder: string; expires_at: number }>(
      'SELECT holder, expires_at FROM vault_locks_v1 WHERE name = ?',
    );
    const putLock = db.prepare(
      'INSERT INTO vault_locks_v1 (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at',
    );
    this.putTx = db.transaction((name: string, value: string, expected: number) => {
      const cur = this.getStmt.get(name)?.version ?? 0;
      if (cur !== expected) return null;
      const version = Math.max(lastVersion.get()?.value ?? 0, cur) + 1;
      setVersion.run(version);
      upsert.run(name, value, version);
      return version;
    });
    this.lockTx = db.transaction((name: string, holder: string, ttlMs: number) => {
      const now = this.now();
      const cur = getLock.get(name);
      if (cur && cur.expires_at > now && cur.holder !== holder) return false;
      putLock.run(name, holder, now + ttlMs);
      return true;
    });
  }

  async getBlob(name: string): Promise<VaultBlob | null> {
    const row = this.getStmt.get(name);
    return row ? { value: row.value, version: row.version } : null;
  }

  async putBlob(name: string, value: string, expectedVersion: number): Promise<number | null> {
    return this.putTx.immediate(name, value, expectedVersion);
  }

  async deleteBlob(name: string): Promise<void> {
    this.deleteStmt.run(name);
  }

  async tryLock(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.lockTx.immediate(name, holder, ttlMs);
  }

  async unlock(name: string, holder: string): Promise<void> {
    this.unlockStmt.run(name, holder);
  }
}

/**
 * Opens only the vault of a SQLite state file, without the store's exclusive lock: for `toolbus login`/`logout`
 * while a bus is running on the same file.
 */
export function openSqliteVault(path: string): { vault: SqliteVault; close: () => void } {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  return { vault: new SqliteVault(db), close: () => db.close() };
}
