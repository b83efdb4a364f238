// Test helpers for upstream OAuth: the loopback authorization server + protected MCP fixture as a real process, and
// `toolbus login` driven the way an operator would (read the printed URL, open it, follow the redirect).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { CLI, ROOT } from './bus-process.js';

export const OAUTH_UPSTREAM = join(ROOT, 'dist/test/fixtures/oauth-upstream.js');

export interface OAuthStats {
  registrations: number;
  codeExchanges: number;
  refreshes: number;
  clientCredentials: number;
  reuseDetections: number;
  refusedRefreshes: number;
  unauthorized: number;
  insufficientScope: number;
  calls: number;
}

export interface OAuthUpstream {
  base: string;
  mcpUrl: string;
  stats: () => Promise<OAuthStats>;
  /** Every access and refresh token the server ever issued. */
  issued: () => Promise<string[]>;
  admin: (what: 'revoke-all' | 'expire-access') => Promise<void>;
  stop: () => Promise<void>;
}

export async function startOAuthUpstream(env: Record<string, string> = {}): Promise<OAuthUpstream> {
  const child = spawn(process.execPath, [OAUTH_UPSTREAM], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const base = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`fixture did not start: ${out}`)), 10_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`fixture exited with ${code}`)));
  });
  const json = async <T>(path: string, method = 'GET'): Promise<T> => {
    const res = await fetch(`${base}${path}`, { method, signal: AbortSignal.timeout(5000) });
    return (await res.json()) as T;
  };
  return {
    base,
    mcpUrl: `${base}/mcp`,
    stats: () => json<OAuthStats>('/stats'),
    issued: () => json<string[]>('/admin/issued'),
    admin: async (what) => {
      await json(`/admin/${what}`, 'POST');
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Runs `toolbus login NAME --no-browser` in `cwd`, takes the authorization URL from the line it prints, opens it
 * (the fixture approves at once and redirects), follows the redirect to the loopback listener, and waits for exit.
 */
export async function loginViaCli(
  cwd: string,
  config: string,
  name: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, 'login', name, '--config', config, '--no-browser', '--timeout', '20'], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = await new Promise<string | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const line = stdout.split('\n').find((l) => /^https?:\/\/\S+$/.test(l));
      if (line) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    void exited.then(() => resolve(null));
  });
  if (url) {
    const authz = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(5000) });
    const location = authz.headers.get('location');
    if (location) await (await fetch(location, { signal: AbortSignal.timeout(5000) })).text();
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await exited;
  clearTimeout(timer);
  return { code, stdout, stderr };
}
