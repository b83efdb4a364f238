// Stage 4. Arguments against the tightened schema (Ajv), and the idempotency key against its rule. It stands before
// idempotency so a malformed call never claims a key: the corrected retry may reuse it (nothing is stored for a
// request that failed validation). The arguments' shape (depth, size, finite numbers) is checked first, in one
// linear pass, so Ajv never walks a hostile structure and nothing JSON cannot carry is ever forwarded.
import { argumentProblem } from '../../agents/request-shape.js';
import { KEY_META, KEY_PATTERN, KEY_PROPERTY } from '../../catalog/catalog.js';
import { describeErrors } from '../../catalog/schema-tools.js';
import { BusError } from '../../errors.js';
import { isModernMeta } from '../../upstreams/eras.js';
import type { Stage } from '../compose.js';
import type { PipelineServices } from '../services.js';

export function validate(services: PipelineServices): Stage {
  return function validateStage(ctx, next) {
    const tool = ctx.tool!;
    const { maxArgumentDepth, maxArgumentBytes } = services.config().limits;
    const shape = argumentProblem(ctx.args, { maxDepth: maxArgumentDepth, maxBytes: maxArgumentBytes });
    if (shape !== null)
      throw new BusError('validation', 'invalid_arguments', `Arguments of ${tool.name} cannot be used: ${shape}`);
    // A tool that runs only as a task, called without asking for one (2025-11-25 `params.task`): the upstream would
    // refuse it, and that refusal would be recorded under the key; refused here instead, before the key is claimed.
    const execution = tool.definition.execution as { taskSupport?: unknown } | undefined;
    if (execution?.taskSupport === 'required' && ctx.task === undefined && !isModernMeta(ctx.meta)) {
      throw new BusError(
        'validation',
        'task_required',
        `${tool.name} runs only as a task: call it with params.task (for example {"ttl": 60000}), then poll tasks/get and read tasks/result.`,
      );
    }
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
    let valid: boolean;
    try {
      valid = tool.validate(args) as boolean;
    } catch (err) {
      // A schema that cannot be evaluated (one that recurses forever) is the upstream's fault, not the agent's.
      services.logger.warn({ tool: tool.name, err: (err as Error).message }, 'input schema could not be evaluated');
      throw new BusError(
        'upstream_error',
        'schema_unusable',
        `The input schema of ${tool.name} cannot be evaluated, so the call is refused; the operator should fix or override it.`,
      );
    }
    if (!valid) problems.push(...describeErrors(tool.validate.errors));
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
