// The stdio transport to an upstream process: spawn, newline-delimited JSON-RPC both ways, close. Written here rather
// than taken from the SDK because the SDK's transport closes the whole process when one message exceeds its buffer
// (and re-validates every message with zod): behind a shared connection that would turn one agent's oversized result
// into every agent's lost write. Here an oversized line is skipped alone, and the request it answered (its id is read
// from the line's head or tail) fails by itself.
import { type ChildProcess, spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';

export interface StdioLinkOptions {
  command: string;
  args: readonly string[];
  env: Record<string, string>;
  cwd?: string;
  /** A line from the upstream longer than this is dropped, and its request (if identifiable) fails alone. */
  maxMessageBytes: number;
}

/** Thrown by send when the message cannot be serialized: nothing was written. */
export class LocalSendError extends Error {
  constructor(cause: unknown) {
    super(`the request could not be serialized (${(cause as Error)?.message ?? 'unknown'})`);
    this.name = 'LocalSendError';
  }
}

const EDGE = 512;

/** The JSON-RPC id of a response whose body was too large to keep, from its first or last bytes. */
function idOfOversized(head: string, tail: string): number | undefined {
  const atEnd = /"id"\s*:\s*(\d{1,15})\s*\}\s*$/.exec(tail);
  if (atEnd) return Number(atEnd[1]);
  const atStart = /^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(\d{1,15})\s*,/.exec(head);
  return atStart ? Number(atStart[1]) : undefined;
}

export class StdioLink {
  onmessage: ((msg: unknown) => void) | undefined;
  onclose: (() => void) | undefined;
  onerror: ((err: Error) => void) | undefined;
  /** A message over the cap was dropped; `id` is the request it answered, when it could be read. */
  onoversized: ((id: number | undefined, bytes: number) => void) | undefined;
  readonly stderr = new PassThrough();
  private child: ChildProcess | undefined;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** While skipping an oversized line: its first bytes, its last bytes, and its size so far. */
  private skipping: { head: string; tail: string; bytes: number } | undefined;

  constructor(private readonly opts: StdioLinkOptions) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.opts.command, [...this.opts.args], {
        env: this.opts.env,
        stdio: ['pipe', 'pipe', 'pipe'],
        shell: false,
        ...(this.opts.cwd ? { cwd: this.opts.cwd } : {}),
      });
      this.child = child;
      child.once('error', (err) => {
        reject(err);
        this.onerror?.(err);
      });
      child.once('spawn', () => resolve());
      child.once('close', () => {
        this.child = undefined;
        this.onclose?.();
      });
      child.stdin!.on('error', (err) => this.onerror?.(err));
      child.stdout!.on('data', (chunk: Buffer) => this.receive(chunk));
      child.stderr!.pipe(this.stderr);
    });
  }

  private receive(chunk: Buffer): void {
    let from = 0;
    while (from < chunk.length) {
      const nl = chunk.indexOf(0x0a, from);
      const end = nl === -1 ? chunk.length : nl;
      this.take(chunk.subarray(from, end));
      if (nl === -1) return;
      this.endLine();
      from = nl + 1;
    }
  }

  private take(part: Buffer): void {
    if (part.length === 0) return;
    if (this.skipping) {
      this.skipping.bytes += part.length;
      this.skipping.tail = (this.skipping.tail + part.toString('latin1')).slice(-EDGE);
      return;
    }
    if (this.buffered + part.length > this.opts.maxMessageBytes) {
      const all = Buffer.concat([...this.chunks, part]);
      this.skipping = {
        head: all.subarray(0, EDGE).toString('latin1'),
        tail: all.subarray(-EDGE).toString('latin1'),
        bytes: all.length,
      };
      this.chunks = [];
      this.buffered = 0;
      return;
    }
    this.chunks.push(part);
    this.buffered += part.length;
  }

  private endLine(): void {
    if (this.skipping) {
      const { head, tail, bytes } = this.skipping;
      this.skipping = undefined;
      this.onoversized?.(idOfOversized(head, tail), bytes);
      return;
    }
    if (this.buffered === 0) return;
    const line = (this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks)).toString('utf8');
    this.chunks = [];
    this.buffered = 0;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      // A line that is not JSON (a stray log line on stdout) is ignored, as the SDK does.
      return;
    }
    if (msg !== null && typeof msg === 'object') this.onmessage?.(msg);
  }

  send(message: unknown): Promise<void> {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed) return Promise.reject(new Error('not connected'));
    let text: string;
    try {
      text = `${JSON.stringify(message)}\n`;
    } catch (err) {
      return Promise.reject(new LocalSendError(err));
    }
    // The write callback fires once the bytes are handed to the OS, or with the error (EPIPE when the process died):
    // a send never hangs on a 'drain' that will not come.
    // Writes made while the event loop handles one round of I/O go out as one (corked until setImmediate): under
    // load, one pipe write for many requests instead of one each (bench/run.mjs front).
    if (!this.corked) {
      this.corked = true;
      stdin.cork();
      setImmediate(() => {
        this.corked = false;
        stdin.uncork();
      });
    }
    return new Promise((resolve, reject) => {
      stdin.write(text, (err) => (err ? reject(err) : resolve()));
    });
  }

  private corked = false;

  /** Ends stdin, then SIGTERM, then SIGKILL, each after a grace period. */
  async close(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const within = (ms: number) =>
      Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    try {
      child.stdin?.end();
    } catch {
      // already gone
    }
    if (await within(2000)) return;
    child.kill('SIGTERM');
    if (await within(2000)) return;
    child.kill('SIGKILL');
    await closed;
  }
}
