// The bus's structured logger (pino). Every line passes through the secret redactor, which knows each configured
// secret in raw, JSON-escaped, URL-encoded and base64 forms, so a secret hidden in any field of any line is replaced.
import pino, { type Logger } from 'pino';
import type { SecretRedactor } from './redact.js';

export function createLogger(level: string, redactor: SecretRedactor, stream?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'toolbus' },
      redact: {
        paths: ['*.headers', '*.env', 'headers', 'env', '*.authorization', 'authorization', '*.token', 'token'],
        censor: '[redacted]',
      },
      hooks: { streamWrite: (line) => redactor.redact(line) },
    },
    (stream ?? process.stderr) as pino.DestinationStream,
  );
}
