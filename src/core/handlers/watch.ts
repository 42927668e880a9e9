/**
 * WATCH: check the selector and the caller; once accepted, the connection carries events.
 *
 * @module
 */

import { blankRecord } from "../audit.ts";
import { toBinary } from "../../protocol/bytes.ts";
import { checkJobClaim } from "../policy.ts";
import { checkWatchHeader, watchSelectorOf } from "../../protocol/watch.ts";
import { Cmd, type Header, Text } from "../../protocol/wire.ts";
import { Status } from "../../errors.ts";
import {
  type Handler,
  JOB_TEXTS,
  type Outcome,
  READ,
  readJob,
  type RequestContext,
} from "./context.ts";
import { errorOutcome, headerOnly } from "./reply.ts";

/** The WATCH handler. */
export function* watch(h: Header, ctx: RequestContext): Handler {
  const { options, store } = ctx;
  const rec = blankRecord("watch", "bad_request", null);
  const fail = (status: number, text: string): Outcome =>
    errorOutcome(Cmd.WATCH, status, text, rec);
  const bad = checkWatchHeader(h, options);
  if (bad !== null) return fail(Status.BAD_REQUEST, bad);
  let name = "";
  if (h.nameLen > 0) {
    const nameBytes = (yield READ(h.nameLen)) as Uint8Array | null;
    if (nameBytes === null) return fail(Status.BAD_REQUEST, Text.readName);
    name = toBinary(nameBytes);
    rec.name = name;
  }
  let caller: string | null = null;
  if (h.jobLen > 0) {
    const job = yield* readJob(h.jobLen, JOB_TEXTS);
    if (typeof job !== "string") return fail(Status.BAD_REQUEST, job.error);
    caller = job;
  }
  rec.jobId = caller;
  const refusal = checkJobClaim(options.policy, caller, ctx.peer);
  if (refusal !== null) return fail(Status.FORBIDDEN, refusal);
  const selector = watchSelectorOf(h, name);
  if ("error" in selector) return fail(Status.BAD_REQUEST, selector.error);
  const full = ctx.watchShare?.() ?? null;
  if (full !== null) return fail(Status.ERR, full);
  rec.result = "ok";
  rec.selector = selector.kind === "all" ? null : selector.kind;
  const newest = store.nextId - 1;
  const o = headerOnly(
    {
      cmd: Cmd.WATCH,
      objectId: BigInt(newest),
      size: BigInt(ctx.watchQueueLength ?? 0),
    },
    rec,
    false,
  );
  return { ...o, watch: { selector, caller } };
}
