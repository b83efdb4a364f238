// Checks of a request's shape that run before any of its content is used: nesting depth of the raw body, the form of
// a JSON-RPC id, and the shape of tool arguments (depth, size, numbers JSON can carry). Each is a single linear pass
// with no recursion, so a hostile input costs what its bytes cost and can never overflow the stack.

/**
 * True when the JSON text nests objects/arrays deeper than `max`. Scans the raw text (strings skipped, escapes
 * honoured) so a 10,000-deep id is refused before JSON.parse builds it.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
  }
  return false;
}

/** A JSON-RPC request id toolbus accepts: an integer, or a string of at most `maxLength` characters. */
export function validRequestId(id: unknown, maxLength: number): id is string | number {
  if (typeof id === 'string') return id.length <= maxLength;
  return typeof id === 'number' && Number.isSafeInteger(id);
}

export interface ArgumentLimits {
  maxDepth: number;
  maxBytes: number;
}

/**
 * Why tool arguments cannot be forwarded, or null. Walks the value iteratively: depth over the cap, an estimate of
 * the JSON size over the cap, or a number JSON cannot carry (JSON.parse turns `1e400` into Infinity, and
 * JSON.stringify would send it upstream as `null`).
 */
export function argumentProblem(args: unknown, limits: ArgumentLimits): string | null {
  const stack: { value: unknown; depth: number; path: string }[] = [{ value: args, depth: 0, path: '' }];
  let bytes = 0;
  while (stack.length > 0) {
    const { value, depth, path } = stack.pop()!;
    if (typeof value === 'number') {
      if (!Number.isFinite(value))
        return `${path || '(arguments)'}: ${value} is not a finite number JSON can carry (rule: finite)`;
      bytes += 8;
    } else if (typeof value === 'string') {
      bytes += value.length + 2;
    } else if (value !== null && typeof value === 'object') {
      if (depth >= limits.maxDepth)
        return `${path || '(arguments)'}: nests deeper than ${limits.maxDepth} levels (rule: maxArgumentDepth)`;
      bytes += 2;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) stack.push({ value: value[i], depth: depth + 1, path: `${path}[${i}]` });
      } else {
        for (const [k, v] of Object.entries(value)) {
          bytes += k.length + 4;
          stack.push({ value: v, depth: depth + 1, path: path ? `${path}.${k}` : k });
        }
      }
    } else {
      bytes += 5;
    }
    if (bytes > limits.maxBytes) return `(arguments): larger than ${limits.maxBytes} bytes (rule: maxArgumentBytes)`;
  }
  return null;
}
