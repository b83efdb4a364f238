// An upstream's own words: the last lines it wrote on stderr and its last connection error, kept so an operator sees
// why it fails (`toolbus check`, the dashboard) without turning on debug logs. It is fed through the logger the
// connection already writes to: `loggerFor` gives a connection a debug-level logger whose lines are remembered here
// and passed on to the bus's own log only at the bus's level. Everything passes the secret redactor first.
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: 100 };

export interface UpstreamTrail {
  /** Last stderr lines, oldest first (at most `lines`). */
  stderr: string[];
  lastError: { at: number; message: string } | undefined;
}

export class UpstreamTrails {
  private readonly trails = new Map<string, UpstreamTrail>();

  constructor(
    private readonly opts: {
      redact: (text: string) => string;
      /** Where lines at or above `level` go (the bus's log stream); none: nowhere. */
      forward?: NodeJS.WritableStream;
      level: string;
      lines?: number;
    },
  ) {}

  get(upstream: string): UpstreamTrail {
    let t = this.trails.get(upstream);
    if (!t) {
      t = { stderr: [], lastError: undefined };
      this.trails.set(upstream, t);
    }
    return t;
  }

  loggerFor(upstream: string): Logger {
    const trail = this.get(upstream);
    const keep = this.opts.lines ?? 20;
    const threshold = LEVELS[this.opts.level] ?? 30;
    const forward = this.opts.forward;
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        const line = chunk.toString('utf8');
        try {
          const rec = JSON.parse(line) as {
            level: number;
            msg?: string;
            stderr?: string;
            err?: unknown;
            time?: number;
          };
          if (typeof rec.stderr === 'string') {
            for (const l of rec.stderr.split('\n')) if (l.trim()) trail.stderr.push(l.slice(0, 500));
            trail.stderr.splice(0, Math.max(0, trail.stderr.length - keep));
          }
          if (rec.level >= 40 && rec.msg) {
            const detail = typeof rec.err === 'string' ? `: ${rec.err}` : '';
            trail.lastError = { at: rec.time ?? Date.now(), message: `${rec.msg}${detail}`.slice(0, 500) };
          }
          if (forward && rec.level >= threshold) forward.write(line);
        } catch {
          if (forward) forward.write(line);
        }
        done();
      },
    });
    return pino(
      {
        level: 'debug',
        base: { service: 'toolbus', upstream },
        redact: {
          paths: ['*.headers', '*.env', 'headers', 'env', '*.authorization', 'authorization'],
          censor: '[redacted]',
        },
        hooks: { streamWrite: (line) => this.opts.redact(line) },
      },
      sink,
    );
  }
}
