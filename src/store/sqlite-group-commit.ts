// Group commit for the SQLite store: write operations issued in the same turn of the event loop (16 writers whose
// requests arrived together) run in one transaction, each in a savepoint of its own, and are answered after the
// one COMMIT. A commit is the dearest part of a write (WAL frames for every page touched, and now and then a
// checkpoint); a lone writer pays one setImmediate for it, a busy bus commits once per turn instead of once per call.
// Nothing is answered before it is committed, so `dispatched` is still on disk before the first byte goes upstream.
import type Database from 'better-sqlite3';

interface Pending {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export class GroupCommit {
  private queue: Pending[] = [];
  private readonly inSavepoint: (fn: () => unknown) => unknown;

  constructor(
    private readonly db: Database.Database,
    /** Maps an unusable file to StoreUnavailable (SqliteStore.guard). */
    private readonly guard: <T>(fn: () => T) => T,
  ) {
    // Called inside the batch's transaction, better-sqlite3 makes this a savepoint: a failing operation is undone
    // alone.
    this.inSavepoint = db.transaction((fn: () => unknown) => fn());
  }

  run<T>(op: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run: op, resolve: resolve as (value: unknown) => void, reject });
      if (this.queue.length === 1) setImmediate(this.flush);
    });
  }

  /** Runs and commits whatever is queued (also called before the store closes). */
  readonly flush = (): void => {
    const ops = this.queue;
    if (ops.length === 0) return;
    this.queue = [];
    const results: { ok: boolean; value: unknown }[] = [];
    try {
      this.guard(() =>
        this.db.transaction(() => {
          for (const op of ops) {
            try {
              results.push({ ok: true, value: this.inSavepoint(op.run) });
            } catch (err) {
              results.push({ ok: false, value: err });
            }
          }
        })(),
      );
    } catch (err) {
      for (const op of ops) op.reject(err);
      return;
    }
    ops.forEach((op, i) => {
      const r = results[i]!;
      if (r.ok) op.resolve(r.value);
      else op.reject(r.value);
    });
  };
}
