// The redo journal in front of the SQLite store's key and lease tables.
//
// A keyed write changes its key row twice (claimed+dispatched, then completed) and its lease rows twice, and each
// change must be durable before the call moves on: `dispatched` before the first byte goes upstream, `completed`
// before the agent is answered. Committed straight to SQLite that is a WAL transaction per step: a dozen lock and
// page-write syscalls and a checksum over each 4 KiB page, several times the cost of the rest of the write (see
// docs/performance.md, "Fourth pass"). Here a step is one line appended to PATH.redo instead (one write(2) of a few
// hundred bytes), and the rows it changed stay in memory, in an overlay that reads consult before SQLite, until a
// drain writes the overlay's latest rows to SQLite in one transaction and empties the journal. The lease table is
// small (held and lock-delayed leases only), so it is kept in memory whole and SQLite is never read for a lease.
//
// Durability is the same as SQLite's WAL with synchronous=NORMAL: a line is in the kernel's page cache when write(2)
// returns, so a killed process loses nothing; a power loss may lose the last lines. A process cannot die halfway
// through one write(2) to a regular file; a write cut short (a full disk) is cut off the file again and the step
// fails; a line cut short by a power loss does not parse and ends the replay. A drain commits with an fsync of the
// WAL (synchronous=FULL for that one transaction) before it empties the journal, so no power loss can keep the
// emptied journal and lose the drained rows. Opening the store replays the journal into SQLite (every op sets a row
// to a value, so replaying twice is harmless: a crash between a drain's commit and the journal's truncation costs
// nothing) and truncates it.
//
// A step that throws has its changes to the overlay undone; if the append fails, every step since the last line is
// undone and the caller told so. SQLite itself is written only by the drain, so it never holds half of a step.

import {
  closeSync,
  existsSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { StoreUnavailable } from './contract.js';
import type { StoredKey } from './key-rules.js';
import type { LeaseRow } from './local-leases.js';

/** One change of a row, as journaled and as drained: a key row, a lease row (null deletes), the token ceiling. */
export type JournalOp = ['k', string, StoredKey | null] | ['l', string, LeaseRow | null] | ['t', number];

/** What SQLite offers the overlay: key reads for misses, the lease table, and one transaction for a batch of changes. */
export interface BackingRows {
  getKey(scope: string): StoredKey | undefined;
  allLeases(): [string, LeaseRow][];
  tokenCeiling(): number;
  /** Writes every op, in order, in one transaction, durable against a power loss when it returns. */
  apply(ops: JournalOp[]): void;
}

/** The overlay drains this long after its first change, or at once when it holds this many rows. */
const DRAIN_AFTER_MS = 100;
const DRAIN_AT_ROWS = 4096;
/** After a failed drain, the next try waits twice as long as the last, up to this. */
const DRAIN_RETRY_MAX_MS = 5000;

export interface JournalReplay {
  lines: number;
  /** Bytes after the first line that did not parse (a power loss cut it short), left out of the replay. */
  droppedBytes: number;
}

/** Replays a journal left by a previous run into SQLite and empties it. */
export function replayJournal(path: string, backing: BackingRows): JournalReplay {
  if (!existsSync(path)) return { lines: 0, droppedBytes: 0 };
  const text = readFileSync(path, 'utf8');
  const ops: JournalOp[] = [];
  let lines = 0;
  let start = 0;
  for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n', start)) {
    let line: JournalOp[];
    try {
      line = JSON.parse(text.slice(start, end)) as JournalOp[];
    } catch {
      break; // cut short by a power loss: nothing after it can have been written
    }
    for (const op of line) ops.push(op);
    lines++;
    start = end + 1;
  }
  if (ops.length > 0) backing.apply(ops);
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
  return { lines, droppedBytes: Buffer.byteLength(text.slice(start)) };
}

type Undo = ['k' | 'l', string, boolean, StoredKey | LeaseRow | null | undefined] | ['t', number, boolean];

export class JournaledRows {
  /** Key rows changed since the last drain; null marks a deleted row. */
  private readonly keys = new Map<string, StoredKey | null>();
  /** Every lease row, and the scopes whose row changed since the last drain. */
  private leases = new Map<string, LeaseRow>();
  private readonly leasesChanged = new Set<string>();
  private ceiling: number;
  private ceilingChanged = false;
  /** Changes made since the last line was appended, and how to undo them. */
  private ops: JournalOp[] = [];
  private undo: Undo[] = [];
  private depth = 0;
  /** Undefined for a store opened read-only, which journals nothing. */
  private readonly fd: number | undefined;
  /** The journal's length, so a write cut short can be cut off again. */
  private size = 0;
  /** Set when a cut-short write could not be cut off: nothing more is appended until a drain empties the file. */
  private torn = false;
  private drainTimer: NodeJS.Timeout | undefined;
  private drainFailures = 0;
  /** The last drain's failure, reported by the store's ping until a drain succeeds. */
  drainError: Error | undefined;

  constructor(
    private readonly path: string | undefined,
    private readonly backing: BackingRows,
  ) {
    this.ceiling = backing.tokenCeiling();
    this.reloadLeases();
    this.fd = path === undefined ? undefined : openSync(path, 'a');
    if (this.fd !== undefined) this.size = fstatSync(this.fd).size;
  }

  getKey(scope: string): StoredKey | undefined {
    const row = this.keys.get(scope);
    return row === undefined ? this.backing.getKey(scope) : (row ?? undefined);
  }

  getLease(scope: string): LeaseRow | undefined {
    return this.leases.get(scope);
  }

  allLeases(): [string, LeaseRow][] {
    return [...this.leases];
  }

  /** Reads the lease table again, after statements that changed it in SQLite (a drain comes first). */
  reloadLeases(): void {
    this.leases = new Map(this.backing.allLeases());
  }

  /** Forgets lease rows that expired before `now` (the sweep deletes them from the table too). */
  forgetLeasesBefore(now: number): void {
    for (const [scope, row] of this.leases) if (row.expiresAt <= now) this.leases.delete(scope);
  }

  get tokenCeiling(): number {
    return this.ceiling;
  }

  putKey(scope: string, row: StoredKey | null): void {
    this.undo.push(['k', scope, this.keys.has(scope), this.keys.get(scope)]);
    this.keys.set(scope, row);
    this.ops.push(['k', scope, row]);
  }

  putLease(scope: string, row: LeaseRow | null): void {
    this.undo.push(['l', scope, this.leases.has(scope), this.leases.get(scope)]);
    if (row === null) this.leases.delete(scope);
    else this.leases.set(scope, row);
    // Undone or not, the drain writes the scope's row as it then is.
    this.leasesChanged.add(scope);
    this.ops.push(['l', scope, row]);
  }

  setTokenCeiling(value: number): void {
    this.undo.push(['t', this.ceiling, this.ceilingChanged]);
    this.ceiling = value;
    this.ceilingChanged = true;
    this.ops.push(['t', value]);
  }

  /**
   * Runs `fn` as one step: if it throws, what it changed is undone. The changes are not yet journaled; `commit`
   * appends every step's since the last line.
   */
  step<T>(fn: () => T): T {
    const mark = this.undo.length;
    this.depth++;
    try {
      return fn();
    } catch (err) {
      this.rollBackTo(mark);
      throw err;
    } finally {
      this.depth--;
    }
  }

  /** A step that is journaled before it returns; inside another step, part of that one. */
  atomically<T>(fn: () => T): T {
    if (this.depth > 0) return fn();
    const value = this.step(fn);
    this.commit();
    return value;
  }

  /** Appends the changes since the last line as one line; if that fails, undoes them all and throws. */
  commit(): void {
    if (this.ops.length === 0) return;
    try {
      this.append(Buffer.from(`${JSON.stringify(this.ops)}\n`));
    } catch (err) {
      this.rollBackTo(0);
      throw err;
    }
    this.ops = [];
    this.undo = [];
    if (this.drainError) return; // the retry is already scheduled, with its back-off
    if (this.keys.size + this.leasesChanged.size >= DRAIN_AT_ROWS) this.drainSoon(0);
    else this.drainSoon(DRAIN_AFTER_MS);
  }

  private append(line: Buffer): void {
    if (this.fd === undefined) throw new StoreUnavailable('the state store is open read-only');
    if (this.torn) throw new StoreUnavailable('the state journal ends in a cut-short write (the disk is full?)');
    const written = writeSync(this.fd, line);
    if (written === line.length) {
      this.size += written;
      return;
    }
    // Cut short (a full disk, a file size limit): the fragment must not stay, or the next line would be glued to it
    // and the replay would stop there.
    try {
      ftruncateSync(this.fd, this.size);
    } catch {
      this.torn = true;
    }
    throw new StoreUnavailable(`the state journal took ${written} of ${line.length} bytes (the disk is full?)`);
  }

  /**
   * Writes the overlay's rows to SQLite in one transaction and empties the journal (off any step). False when the
   * tables could not take them: the overlay and the journal keep everything, and a retry is scheduled.
   */
  drain(): boolean {
    clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    if (this.depth > 0 || this.ops.length > 0) {
      this.drainSoon(DRAIN_AFTER_MS); // never reached from a timer; kept safe for a caller inside a step
      return false;
    }
    if (this.keys.size === 0 && this.leasesChanged.size === 0 && !this.ceilingChanged) return true;
    const ops: JournalOp[] = [];
    for (const [scope, row] of this.keys) ops.push(['k', scope, row]);
    for (const scope of this.leasesChanged) ops.push(['l', scope, this.leases.get(scope) ?? null]);
    if (this.ceilingChanged) ops.push(['t', this.ceiling]);
    try {
      this.backing.apply(ops);
    } catch (err) {
      this.drainError = err as Error;
      this.drainFailures++;
      this.drainSoon(Math.min(DRAIN_AFTER_MS * 2 ** this.drainFailures, DRAIN_RETRY_MAX_MS));
      return false;
    }
    this.drainError = undefined;
    this.drainFailures = 0;
    this.keys.clear();
    this.leasesChanged.clear();
    this.ceilingChanged = false;
    try {
      if (this.fd !== undefined) {
        ftruncateSync(this.fd, 0);
        this.size = 0;
        this.torn = false;
      }
    } catch {
      // A journal that could not be emptied replays rows SQLite already holds: harmless, and tried again next time.
    }
    return true;
  }

  /** Drains, and removes the empty journal (a clean close). */
  close(): void {
    if (this.fd === undefined) return;
    try {
      this.drain();
    } finally {
      closeSync(this.fd);
    }
    if (!this.drainError && this.path !== undefined) {
      try {
        unlinkSync(this.path);
      } catch {
        // already gone (the state directory was removed)
      }
    }
  }

  private drainSoon(ms: number): void {
    if (this.fd === undefined) return; // read-only: nothing to drain
    if (this.drainTimer && ms > 0) return;
    clearTimeout(this.drainTimer);
    this.drainTimer = setTimeout(() => this.drain(), ms);
    this.drainTimer.unref();
  }

  private rollBackTo(mark: number): void {
    for (let i = this.undo.length - 1; i >= mark; i--) {
      const u = this.undo[i]!;
      if (u[0] === 't') {
        this.ceiling = u[1];
        this.ceilingChanged = u[2];
        continue;
      }
      const map = (u[0] === 'k' ? this.keys : this.leases) as Map<string, unknown>;
      if (u[2]) map.set(u[1], u[3]);
      else map.delete(u[1]);
    }
    this.undo.length = mark;
    // Every change pushed one undo entry and one op, in step, so the ops since the mark go with them.
    this.ops.length = mark;
  }
}
