// Tokens at rest: sealed with AES-256-GCM (node:crypto) before they reach the state store, so the store, its backups
// and anyone reading Redis see only ciphertext. The additional data binds a sealed blob to its upstream's name: a
// blob copied under another name does not open.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { UpstreamOAuthConfig } from './schema.js';

const FORMAT = 'v1';

/** Where the sealing key comes from: the config (`key`, usually a reference) or a 0600 key file. */
export interface KeySource {
  key?: string | undefined;
  keyFile: string;
  /** Relative key files are resolved against the config file's directory. */
  baseDir: string;
}

export function keySource(oauth: UpstreamOAuthConfig, baseDir: string): KeySource {
  return { key: oauth.key, keyFile: oauth.keyFile, baseDir };
}

export class SealingKeyMissing extends Error {
  constructor(readonly path: string) {
    super(`no token sealing key at ${path} (it is created by the first toolbus login)`);
    this.name = 'SealingKeyMissing';
  }
}

function parseKey(text: string, where: string): Buffer {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  if (key.length !== 32) throw new Error(`${where}: the token sealing key must be 32 bytes (base64 or hex)`);
  return key;
}

/** Loads the key; with `create`, a missing key file is made (32 random bytes, mode 0600). */
export function loadSealingKey(src: KeySource, opts: { create: boolean }): Buffer {
  if (src.key !== undefined) return parseKey(src.key, 'oauth.key');
  const path = isAbsolute(src.keyFile) ? src.keyFile : resolve(src.baseDir, src.keyFile);
  if (!existsSync(path)) {
    if (!opts.create) throw new SealingKeyMissing(path);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  }
  chmodSync(path, 0o600);
  return parseKey(readFileSync(path, 'utf8'), path);
}

export function seal(key: Buffer, label: string, plain: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(label));
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return `${FORMAT}.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
}

/** Throws when the blob was sealed with another key or label, or was tampered with. */
export function unseal(key: Buffer, label: string, sealed: string): string {
  if (!sealed.startsWith(`${FORMAT}.`)) throw new Error('unknown sealed-blob format');
  const raw = Buffer.from(sealed.slice(FORMAT.length + 1), 'base64');
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  decipher.setAAD(Buffer.from(label));
  decipher.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
}
