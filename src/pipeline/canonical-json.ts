// Canonical JSON (keys sorted at every level, RFC 8785 style for the values JSON.stringify already writes
// canonically) and the SHA-256 fingerprint of a call's arguments.
import { createHash } from 'node:crypto';

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value as Record<string, unknown>).sort();
  const parts: string[] = [];
  for (const k of keys) {
    const v = (value as Record<string, unknown>)[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

export function fingerprint(args: unknown): string {
  return createHash('sha256').update(canonicalJson(args)).digest('hex');
}
