// The toolbus version, read once from package.json (for --version, traces and the dashboard).
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function toolbusVersion(): string {
  if (cached) return cached;
  // dist/src/version.js and src/version.ts sit at different depths below package.json.
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'toolbus' && pkg.version) {
        cached = pkg.version;
        return cached;
      }
    } catch {
      // try the next depth
    }
  }
  cached = 'unknown';
  return cached;
}
