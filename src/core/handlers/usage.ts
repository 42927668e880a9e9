/**
 * USAGE (an extension): what the broker, jobs and uids hold, next to their limits (see
 * `src/core/usage.ts` for who sees what, `src/protocol/usage.ts` for the body).
 *
 * @module
 */

import { blankRecord } from "../audit.ts";
import { checkJobClaim } from "../policy.ts";
import { formatUsage } from "../../protocol/usage.ts";
import { Cmd, type Header, JOB_MAX, Text } from "../../protocol/wire.ts";
import { Status } from "../../errors.ts";
import { type Handler, JOB_TEXTS, type Outcome, readJob, type RequestContext } from "./context.ts";
import { errorOutcome, textOutcome, unknownCommandOutcome } from "./reply.ts";

/** The error text of a USAGE request with anything but a job id. */
export const USAGE_BAD_REQUEST = "invalid usage request";

/** The USAGE handler. */
export function* usage(h: Header, ctx: RequestContext): Handler {
  const rec = blankRecord("usage", "bad_request", null);
  const fail = (status: number, text: string): Outcome =>
    errorOutcome(Cmd.USAGE, status, text, rec);
  if (
    h.objectId !== 0n || h.size !== 0n || h.nameLen !== 0 || h.textLen !== 0 || h.allowLen !== 0
  ) {
    return fail(Status.BAD_REQUEST, USAGE_BAD_REQUEST);
  }
  if (h.jobLen > JOB_MAX) return fail(Status.BAD_REQUEST, Text.jobTooLong);
  let caller: string | null = null;
  if (h.jobLen > 0) {
    const job = yield* readJob(h.jobLen, JOB_TEXTS);
    if (typeof job !== "string") return fail(Status.BAD_REQUEST, job.error);
    caller = job;
  }
  rec.jobId = caller;
  const refusal = checkJobClaim(ctx.options.policy, caller, ctx.peer);
  if (refusal !== null) return fail(Status.FORBIDDEN, refusal);
  const report = ctx.usage?.(caller) ?? null;
  if (report === null) return unknownCommandOutcome(h.cmd);
  return textOutcome({ cmd: Cmd.USAGE }, formatUsage(report), rec);
}
