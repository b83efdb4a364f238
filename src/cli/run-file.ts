// The run file: `toolbus serve --config F` records where it listens (pid and URL) in .toolbus/run/ beside F, so
// commands run later against the same config (client-config) print the port the bus really uses, not the config's
// (which may be 0, or overridden with --port). Best effort: a read-only directory only loses the convenience.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

export function runFilePath(configFile: string): string {
  const abs = resolve(configFile);
  return join(dirname(abs), '.toolbus', 'run', `${basename(abs)}.json`);
}

export function writeRunFile(configFile: string, url: string): () => void {
  const path = runFilePath(configFile);
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(path, JSON.stringify({ pid: process.pid, url }));
  } catch {
    return () => {};
  }
  return () => rmSync(path, { force: true });
}

/** The URL of a bus running from this config, if its run file names a live process. */
export function runningUrl(configFile: string): string | undefined {
  try {
    const { pid, url } = JSON.parse(readFileSync(runFilePath(configFile), 'utf8')) as { pid: number; url: string };
    process.kill(pid, 0);
    return url;
  } catch {
    return undefined;
  }
}
