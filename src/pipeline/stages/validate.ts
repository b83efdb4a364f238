// Stage 4. Arguments against the tightened schema (Ajv), and the idempotency key against its rule. It stands before
// idempotency so a malformed call never claims a key: the corrected retry may reuse it (nothing is stored for a
// request that failed validation).
import { KEY_META, KEY_PATTERN, KEY_PROPERTY } from '../../catalog/catalog.js';
import { describeErrors } from '../../catalog/schema-tools.js';
import { BusError } from '../../errors.js';
import type { Stage } from '../compose.js';

export function validate(): Stage {
  return function validateStage(ctx, next) {
    const tool = ctx.tool!;
    const problems: string[] = [];
    let args = ctx.args;
    let key: unknown;
    if (tool.keyRule !== 'off') {
      if (Object.hasOwn(args, KEY_PROPERTY)) {
        const { [KEY_PROPERTY]: fromArgs, ...rest } = args;
        key = fromArgs;
        args = rest;
      }
      key ??= ctx.meta?.[KEY_META];
      if (key === undefined) {
        if (tool.keyRule === 'required')
          problems.push(`${KEY_PROPERTY}: is required for this write tool (rule: required)`);
      } else if (typeof key !== 'string' || !KEY_PATTERN.test(key)) {
        problems.push(`${KEY_PROPERTY}: must be 8-255 characters of A-Z a-z 0-9 . _ : - (rule: pattern)`);
      }
    }
    if (!tool.validate(args)) problems.push(...describeErrors(tool.validate.errors));
    if (problems.length > 0) {
      throw new BusError(
        'validation',
        'invalid_arguments',
        `Arguments do not match the schema of ${tool.name}: ${problems.join('; ')}`,
      );
    }
    ctx.args = args;
    ctx.key = typeof key === 'string' ? key : undefined;
    return next();
  };
}
