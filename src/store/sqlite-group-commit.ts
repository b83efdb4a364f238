// Group commit for the SQLite store: write operations issued in the same turn of the event loop (16 writers whose
// requests arrived together) run as steps of the redo journal and are journaled in one line, with one write(2),
// and answered after it. A lone writer pays one setImmediate for it; a busy bus appends once per turn instead of
// once per call. Nothing is answered before its line is written, so `dispatched` is durable before the first byte
// goes upstream.
//
// An operation that throws has its own changes undone and fails alone; the others of the batch go on. If the append
// fails, every operation of the batch is undone and fails with that error. What an operation does outside the
// store's rows (handing a released lease to a waiter) happens after the append (LocalLeases.release).
import type { JournaledRows } from './sqlite-journal.js';

interface Pending {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export class GroupCommit {
  private queue: Pending[] = [];

  constructor(
    private readonly rows: JournaledRows,
    /** Maps an unusable file to StoreUnavailable (SqliteStore.guard). */
    private readonly guard: <T>(fn: () => T) => T,
  ) {}

  run<T>(op: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run: op, resolve: resolve as (value: unknown) => void, reject });
      if (this.queue.length === 1) setImmediate(this.flush);
    });
  }

  /** Runs and journals whatever is queued (also called before the store closes). */
  readonly flush = (): void => {
    const ops = this.queue;
    if (ops.length === 0) return;
    this.queue = [];
    const results: unknown[] = new Array(ops.length);
    const failed: boolean[] = new Array(ops.length).fill(false);
    for (let i = 0; i < ops.length; i++) {
      try {
        results[i] = this.guard(() => this.rows.step(ops[i]!.run));
      } catch (err) {
        results[i] = err;
        failed[i] = true;
      }
    }
    try {
      this.guard(() => this.rows.commit());
    } catch (err) {
      for (let i = 0; i < ops.length; i++) ops[i]!.reject(failed[i] ? results[i] : err);
      return;
    }
    for (let i = 0; i < ops.length; i++) {
      if (failed[i]) ops[i]!.reject(results[i]);
      else ops[i]!.resolve(results[i]);
    }
  };
}
