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
  // Each entry links to its parent, so the path of a value is spelled out only when it is reported: the walk runs on
  // every call and should not build a string per node.
  type Node = { value: unknown; depth: number; key: string | number | undefined; parent: Node | undefined };
  const pathOf = (n: Node): string => {
    const parts: string[] = [];
    for (let at: Node | undefined = n; at?.key !== undefined; at = at.parent)
      parts.push(typeof at.key === 'number' ? `[${at.key}]` : `.${at.key}`);
    const path = parts.reverse().join('').replace(/^\./, '');
    return path || '(arguments)';
  };
  const stack: Node[] = [{ value: args, depth: 0, key: undefined, parent: undefined }];
  let bytes = 0;
  while (stack.length > 0) {
    const node = stack.pop()!;
    const { value, depth } = node;
    if (typeof value === 'number') {
      if (!Number.isFinite(value))
        return `${pathOf(node)}: ${value} is not a finite number JSON can carry (rule: finite)`;
      bytes += 8;
    } else if (typeof value === 'string') {
      bytes += value.length + 2;
    } else if (value !== null && typeof value === 'object') {
      if (depth >= limits.maxDepth)
        return `${pathOf(node)}: nests deeper than ${limits.maxDepth} levels (rule: maxArgumentDepth)`;
      bytes += 2;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) stack.push({ value: value[i], depth: depth + 1, key: i, parent: node });
      } else {
        for (const [k, v] of Object.entries(value)) {
          bytes += k.length + 4;
          stack.push({ value: v, depth: depth + 1, key: k, parent: node });
        }
      }
    } else {
      bytes += 5;
    }
    if (bytes > limits.maxBytes) return `(arguments): larger than ${limits.maxBytes} bytes (rule: maxArgumentBytes)`;
  }
  return null;
}
