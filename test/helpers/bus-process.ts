// Starts the real toolbus process (the built CLI) on port 0 from inline YAML, and stops it. Tests use this rather
// than importing the Bus class, so they exercise exactly what a user runs.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/src/cli/main.js');
export const TICKETS_SERVER = join(ROOT, 'dist/examples/tickets/server.js');
export const LAB_SERVER = join(ROOT, 'dist/test/fixtures/lab-server.js');
export const HOSTILE_SERVER = join(ROOT, 'dist/test/fixtures/hostile-server.js');

export function tempDir(prefix = 'toolbus-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface BusProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything the process printed so far. */
  stdout: () => string;
  stderr: () => string;
  /** SIGTERM and wait for exit (SIGKILL after 5 s). */
  stop: () => Promise<number | null>;
  /** Sends a signal and waits for the exit. */
  kill: (signal: NodeJS.Signals) => Promise<void>;
}

export interface StartOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  args?: string[];
  timeoutMs?: number;
}

/** Writes YAML to a temp file and starts `toolbus serve --config FILE --port 0`. */
export async function startBus(yaml: string, opts: StartOptions = {}): Promise<BusProcess> {
  const dir = opts.cwd ?? tempDir();
  const file = join(dir, `toolbus-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  return startBusWithConfig(file, { ...opts, cwd: dir });
}

export async function startBusWithConfig(file: string, opts: StartOptions = {}): Promise<BusProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--port', '0', ...(opts.args ?? [])], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`bus did not start in time.\nstdout: ${out}\nstderr: ${err}`)),
      opts.timeoutMs ?? 20_000,
    );
    const onData = () => {
      const m = /toolbus listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`bus exited with ${code} before listening.\nstdout: ${out}\nstderr: ${err}`));
    });
  });
  const port = Number(new URL(url).port);
  return {
    url,
    port,
    child,
    stdout: () => out,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
    kill: async (signal) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
  };
}
