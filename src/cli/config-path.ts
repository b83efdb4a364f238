// Where a command finds its config when --config is not given.
import { existsSync } from 'node:fs';

export function defaultConfigPath(given: string | undefined): string {
  if (given) return given;
  if (existsSync('toolbus.yaml')) return 'toolbus.yaml';
  if (existsSync('toolbus.yml')) return 'toolbus.yml';
  throw new Error('no config: pass --config FILE or create toolbus.yaml (toolbus init writes a starter)');
}
