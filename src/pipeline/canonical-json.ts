// Canonical JSON (keys sorted at every level, no whitespace; values as JSON.stringify writes them) and the SHA-256
// fingerprint of a call's arguments, which the store keeps beside a key: its bytes may never change between versions
// (test/unit/canonical-json.test.ts pins them). safe-stable-stringify does the writing.
import { createHash } from 'node:crypto';
import stableStringify from 'safe-stable-stringify';

export function canonicalJson(value: unknown): string {
  return stableStringify(value) ?? 'null';
}

export function fingerprint(args: unknown): string {
  return createHash('sha256').update(canonicalJson(args)).digest('hex');
}
