// The reference upstream (test/fixtures/reference-server.ts, official SDK v2, both protocol eras) over Streamable HTTP
// on a free loopback port, for tests that need a real server of either era.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './bus-process.js';

const REFERENCE = join(ROOT, 'dist/test/fixtures/reference-server.js');

/** Starts it and resolves with its process and MCP URL once it listens (10 s at most). */
export function startReference(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [REFERENCE, '--http', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('reference server did not start'));
    }, 10_000);
    child.stdout!.on('data', (d: Buffer) => {
      const m = /listening on (\d+)/.exec(String(d));
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://127.0.0.1:${m[1]}/mcp` });
      }
    });
  });
}
