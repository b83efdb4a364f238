// Reading the lab upstream's call log, and starting the lab upstream in HTTP mode (test/fixtures/lab-server.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { LAB_SERVER } from './bus-process.js';

export interface LabEntry {
  /** Epoch ms (fractional) when the lab saw the phase. */
  t: number;
  pid: number;
  tool: string;
  phase: 'start' | 'end' | 'cancelled';
  args?: Record<string, unknown>;
  meta?: Record<string, unknown>;
  /** Calls in flight in that lab process at that moment. */
  inflight: number;
}

export function readLabLog(file: string): LabEntry[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LabEntry);
}

/** Calls of `tool` that reached the lab (phase start), optionally only those whose arguments have `tag`. */
export function labStarts(file: string, tool: string, tag?: string): LabEntry[] {
  return readLabLog(file).filter(
    (e) => e.tool === tool && e.phase === 'start' && (tag === undefined || e.args?.tag === tag),
  );
}

/** Starts `lab-server --http` on a port and resolves once it listens. */
export function startLabHttp(port: number, env: NodeJS.ProcessEnv = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, [LAB_SERVER, '--http', '--port', String(port)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`lab --http exited with ${code}`)));
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) resolve(child);
    });
  });
}
