// Secret redaction for everything that leaves the process: replies to agents, notifications, the dashboard and log
// lines. A configured secret can come back from an upstream in any encoding (echoed raw, inside a JSON string, in a
// URL, base64-encoded inside a Basic header), so each secret is searched for in all of those forms at once, with one
// regular expression, and replaced by a marker that is valid inside JSON strings.

export const REDACTED = '[redacted]';

/** Secrets shorter than this are not searched for: they would match ordinary text. */
const MIN_SECRET_LENGTH = 4;
/** A base64 fragment of a secret embedded in a longer encoded value must be at least this long to be searched for. */
const MIN_FRAGMENT_LENGTH = 8;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * The base64 texts a secret can show up as. Encoded alone it starts on a 3-byte boundary; inside a longer encoded
 * value (`user:secret`) it may start one or two bytes later, which shifts every character: for each shift the
 * characters that depend only on the secret's own bytes are kept.
 */
function base64Forms(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const forms = new Set<string>();
  for (const alphabet of ['base64', 'base64url'] as const) {
    const whole = bytes.toString(alphabet).replace(/=+$/, '');
    forms.add(whole);
    for (let shift = 0; shift < 3; shift++) {
      const padded = Buffer.concat([Buffer.alloc(shift), bytes])
        .toString(alphabet)
        .replace(/=+$/, '');
      // Characters that mix pad bits with the secret's first byte, and the last group (it mixes in what follows).
      const first = shift === 0 ? 0 : Math.ceil((shift * 8) / 6);
      const last = Math.floor(((shift + bytes.length) * 8) / 6);
      const fragment = padded.slice(first, last);
      if (fragment.length >= MIN_FRAGMENT_LENGTH) forms.add(fragment);
    }
  }
  return [...forms];
}

/** Every form of one secret that could appear in text the bus sends or logs. */
export function secretForms(secret: string): string[] {
  if (secret.length < MIN_SECRET_LENGTH) return [];
  const forms = new Set<string>([secret]);
  const json = JSON.stringify(secret).slice(1, -1);
  forms.add(json);
  // Inside a JSON string inside a JSON string (an error message quoting an upstream's JSON body, a log line).
  forms.add(JSON.stringify(json).slice(1, -1));
  forms.add(encodeURIComponent(secret));
  forms.add(encodeURIComponent(secret).replace(/%20/g, '+'));
  for (const b of base64Forms(secret)) forms.add(b);
  return [...forms].filter((f) => f.length >= MIN_SECRET_LENGTH);
}

export class SecretRedactor {
  private pattern: RegExp | null = null;
  private readonly known = new Set<string>();

  constructor(secrets: Iterable<string> = []) {
    this.add(secrets);
  }

  /**
   * Adds secrets (a reload adds the new ones; old ones stay: a rotated-out credential is still a credential). Longer
   * forms come first in the alternation so a secret that contains another is replaced whole.
   */
  add(secrets: Iterable<string>): void {
    let changed = false;
    for (const s of secrets) {
      for (const form of secretForms(s)) {
        if (this.known.has(form)) continue;
        this.known.add(form);
        changed = true;
      }
    }
    if (!changed) return;
    const forms = [...this.known].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.pattern = forms.length === 0 ? null : new RegExp(forms.join('|'), 'g');
  }

  /** The text with every secret form replaced; the same string when there is nothing to replace (the common case). */
  redact(text: string): string {
    const re = this.pattern;
    if (re === null) return text;
    re.lastIndex = 0;
    if (!re.test(text)) return text;
    re.lastIndex = 0;
    return text.replace(re, REDACTED);
  }
}
