// SEP-2243's `Mcp-Param-*` headers: which tool arguments a schema marks with `x-mcp-header`, and how a value is
// written in a header (literal, or `=?base64?…?=`) and read back. Used by the front to check what agents send and by
// the forward stage to send the same headers to a 2026-07-28 upstream.
const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
const SENTINEL_PREFIX = '=?base64?';
const SENTINEL_SUFFIX = '?=';
const CANONICAL_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** What may go in a header value as it is: visible ASCII and inner spaces. */
const LITERAL_SAFE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

export interface HeaderDeclaration {
  /** The property path from the arguments object. */
  path: string[];
  header: string;
  type: string | undefined;
}

/** The `x-mcp-header` declarations of a tool's input schema, on properties reachable through `properties` alone. */
export function headerDeclarations(schema: unknown, path: string[] = []): HeaderDeclaration[] {
  const props = (schema as { properties?: unknown } | null)?.properties;
  if (props === null || typeof props !== 'object') return [];
  const out: HeaderDeclaration[] = [];
  for (const [key, sub] of Object.entries(props as Record<string, unknown>)) {
    if (sub === null || typeof sub !== 'object') continue;
    const s = sub as Record<string, unknown>;
    const header = s['x-mcp-header'];
    // Only a valid header-name token is used (RFC 9110); a schema that names something else is ignored for headers.
    if (typeof header === 'string' && HEADER_TOKEN.test(header))
      out.push({ path: [...path, key], header, type: typeof s.type === 'string' ? s.type : undefined });
    if (path.length < 8) out.push(...headerDeclarations(s, [...path, key]));
  }
  return out;
}

/** A header value as the revision encodes it: literal when it can be, else `=?base64?{UTF-8 as Base64}?=`. */
export function encodeParamValue(value: string): string {
  return LITERAL_SAFE.test(value)
    ? value
    : `${SENTINEL_PREFIX}${Buffer.from(value, 'utf8').toString('base64')}${SENTINEL_SUFFIX}`;
}

/** The value a header carries (Base64 sentinel decoded), or undefined when the sentinel's payload is not valid. */
export function decodeParamValue(raw: string): string | undefined {
  if (!(raw.startsWith(SENTINEL_PREFIX) && raw.endsWith(SENTINEL_SUFFIX) && raw.length >= 11)) return raw;
  const b64 = raw.slice(SENTINEL_PREFIX.length, raw.length - SENTINEL_SUFFIX.length);
  if (!CANONICAL_BASE64.test(b64)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(b64, 'base64'));
  } catch {
    return undefined;
  }
}

export function atPath(root: unknown, path: readonly string[]): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

export function primitiveText(v: unknown): string | undefined {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
}

/** The `Mcp-Param-*` headers for a forwarded call's arguments. */
export function paramHeaders(decls: readonly HeaderDeclaration[], args: unknown): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const d of decls) {
    const text = primitiveText(atPath(args, d.path));
    if (text === undefined) continue;
    out ??= {};
    out[`Mcp-Param-${d.header}`] = encodeParamValue(text);
  }
  return out;
}
