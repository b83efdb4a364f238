// JSON Schema handling for the catalog: tightening (config rules merged over the upstream's inputSchema), the guard
// against pathological upstream schemas, and one Ajv validator per distinct schema (compiled once, cached).
// Patterns run on RE2 (re2js), whose matching time is linear in the input: an upstream's `^(a+)+$` cannot stall the
// event loop. A pattern RE2 cannot run (lookaround, backreferences) is dropped from validation with a warning.
import { createHash } from 'node:crypto';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { LRUCache } from 'lru-cache';
import { RE2JS } from 're2js';

type JsonObject = Record<string, unknown>;

// ajv-formats is CommonJS with a default export; under NodeNext its default import may be the module object.
type FormatPlugin = (ajv: unknown) => unknown;
const formatsExport = addFormatsModule as unknown as FormatPlugin | { default: FormatPlugin };
const applyFormats: FormatPlugin = typeof formatsExport === 'function' ? formatsExport : formatsExport.default;

// Ajv keys its cache of compiled patterns by the engine object's toString(): it must name the pattern.
function re2Engine(pattern: string): { test: (s: string) => boolean; toString: () => string } {
  const name = () => `re2:${pattern}`;
  let re: RE2JS;
  try {
    re = RE2JS.compile(RE2JS.translateRegExp(pattern));
  } catch {
    engines.unsupported.add(pattern);
    return { test: () => true, toString: name };
  }
  return { test: (s) => re.matcher(s).find(), toString: name };
}
re2Engine.code = 're2js';

// No loadSchema: a remote $ref is never fetched (and schemaProblem refuses it before compiling).
const ajvOptions = {
  allErrors: true,
  strict: false,
  validateFormats: true,
  code: { regExp: re2Engine as ((pattern: string, u: string) => { test: (s: string) => boolean }) & { code: string } },
} as const;

/**
 * At most this many compiled validators are kept (the least recently used goes first), and a pair of Ajv engines
 * compiles at most this many before a fresh pair takes over: Ajv keeps every pattern it compiled for the engine's
 * lifetime, so an upstream that keeps changing its schemas would otherwise grow memory without bound. An old pair is
 * freed once the last of its validators is forgotten. (A catalog with more distinct schemas than this recompiles some
 * of them at each refresh: correct, only slower.)
 */
export const MAX_VALIDATORS = 2048;

interface Engines {
  ajv2020: Ajv2020;
  ajv07: Ajv;
  /** Every pattern RE2 refused on this pair (dropped patterns are reported per schema from this set). */
  unsupported: Set<string>;
  compiled: number;
}

function newEngines(): Engines {
  const pair = { ajv2020: new Ajv2020(ajvOptions), ajv07: new Ajv(ajvOptions), unsupported: new Set<string>() };
  applyFormats(pair.ajv2020);
  applyFormats(pair.ajv07);
  return { ...pair, compiled: 0 };
}

let engines = newEngines();

const MAX_SCHEMA_BYTES = 256 * 1024;
const MAX_SCHEMA_DEPTH = 48;

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Merges config rules over an upstream schema: properties merge per property, `required` is a union. */
export function tightenSchema(base: JsonObject, rules: JsonObject | undefined): JsonObject {
  if (!rules) return base;
  const out: JsonObject = { ...base };
  for (const [key, rule] of Object.entries(rules)) {
    const current = out[key];
    if (key === 'required' && Array.isArray(rule)) {
      const have = Array.isArray(current) ? (current as unknown[]) : [];
      out.required = [...new Set([...have, ...rule])];
    } else if (key === 'properties' && isObject(rule)) {
      const props: JsonObject = isObject(current) ? { ...current } : {};
      for (const [name, sub] of Object.entries(rule)) {
        const prev = props[name];
        props[name] = isObject(prev) && isObject(sub) ? tightenSchema(prev, sub) : sub;
      }
      out.properties = props;
    } else if (isObject(current) && isObject(rule)) {
      out[key] = tightenSchema(current, rule);
    } else {
      out[key] = rule;
    }
  }
  return out;
}

function depthOf(v: unknown, depth = 0): number {
  if (depth > MAX_SCHEMA_DEPTH) return depth;
  if (Array.isArray(v)) return v.reduce<number>((m, x) => Math.max(m, depthOf(x, depth + 1)), depth);
  if (isObject(v)) return Object.values(v).reduce<number>((m, x) => Math.max(m, depthOf(x, depth + 1)), depth);
  return depth;
}

function hasRemoteRef(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasRemoteRef);
  if (!isObject(v)) return false;
  for (const [k, x] of Object.entries(v)) {
    if ((k === '$ref' || k === '$dynamicRef') && typeof x === 'string' && !x.startsWith('#')) return true;
    if (hasRemoteRef(x)) return true;
  }
  return false;
}

/** Why a schema is refused, or null when it may be compiled. */
export function schemaProblem(schema: JsonObject): string | null {
  const text = JSON.stringify(schema);
  if (text.length > MAX_SCHEMA_BYTES) return `schema is larger than ${MAX_SCHEMA_BYTES} bytes`;
  if (depthOf(schema) > MAX_SCHEMA_DEPTH) return `schema nests deeper than ${MAX_SCHEMA_DEPTH} levels`;
  if (hasRemoteRef(schema)) return 'schema uses a remote $ref (only local "#..." references are allowed)';
  return null;
}

export interface CompiledValidator {
  validate: ValidateFunction;
  /** Patterns RE2 cannot run, dropped from validation (each deserves a `check` warning). */
  droppedPatterns: readonly string[];
}

const cache = new LRUCache<string, CompiledValidator & { release: () => void }>({
  max: MAX_VALIDATORS,
  dispose: (v) => v.release(),
});

/** Compiled validators kept now (for tests). */
export function validatorsKept(): number {
  return cache.size;
}

/** One compiled validator per distinct schema text and draft; throws with a readable reason on a bad schema. */
export function compileValidator(schema: JsonObject): CompiledValidator {
  const text = JSON.stringify(schema);
  const id = createHash('sha256').update(text).digest('base64url');
  const hit = cache.get(id);
  if (hit) return hit;
  const problem = schemaProblem(schema);
  if (problem) throw new Error(problem);
  if (engines.compiled >= MAX_VALIDATORS) engines = newEngines();
  const pair = engines;
  pair.compiled++;
  const draft = typeof schema.$schema === 'string' ? schema.$schema : '';
  // The $schema/$id keys are dropped so Ajv never tries to resolve a meta-schema or register ids across tools.
  const { $schema: _s, $id: _i, ...body } = schema;
  const engine =
    draft.includes('draft-07') || draft.includes('draft-06') || draft.includes('draft-04') ? pair.ajv07 : pair.ajv2020;
  const fn = engine.compile(body);
  const release = () => engine.removeSchema(body);
  // A schema that refers to itself without consuming input ({"$ref": "#"}) recurses until the stack overflows.
  try {
    fn({});
  } catch {
    release();
    throw new Error('schema recurses without end (a $ref that refers back to itself)');
  }
  const droppedPatterns = [...pair.unsupported].filter((p) => text.includes(JSON.stringify(p)));
  const compiled = { validate: fn, droppedPatterns, release };
  cache.set(id, compiled);
  return compiled;
}

function describeError(e: ErrorObject): string {
  const where = e.instancePath === '' ? '(arguments)' : e.instancePath.slice(1).replace(/\//g, '.');
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return `${where === '(arguments)' ? '' : `${where}.`}${String(p.missingProperty)}: is required (rule: required)`;
    case 'additionalProperties':
      return `${where === '(arguments)' ? '' : `${where}.`}${String(p.additionalProperty)}: is not allowed (rule: additionalProperties: false)`;
    case 'enum':
      return `${where}: must be one of ${JSON.stringify(p.allowedValues)} (rule: enum)`;
    case 'type':
      return `${where}: must be ${String(p.type)} (rule: type)`;
    case 'maxLength':
    case 'minLength':
    case 'maximum':
    case 'minimum':
    case 'maxItems':
    case 'minItems':
      return `${where}: ${e.message ?? 'is out of range'} (rule: ${e.keyword})`;
    case 'pattern':
      return `${where}: must match pattern ${String(p.pattern)} (rule: pattern)`;
    default:
      return `${where}: ${e.message ?? 'is invalid'} (rule: ${e.keyword})`;
  }
}

export function describeErrors(errors: ErrorObject[] | null | undefined): string[] {
  if (!errors) return [];
  return [...new Set(errors.map(describeError))];
}
