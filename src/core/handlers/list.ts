/**
 * LIST: the caller's visible objects as tab-separated lines, or the cluster's latest versions.
 *
 * @module
 */

import { type AuditRecord, blankRecord } from "../audit.ts";
import { fromBinary } from "../../protocol/bytes.ts";
import { formatListLine } from "../../protocol/list.ts";
import { checkJobClaim, visible } from "../policy.ts";
import type { Store } from "../store.ts";
import { formatClusterListLine, type RemoteAnswer } from "../remote.ts";
import {
  Cmd,
  encodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  JOB_MAX,
  requestBytes,
  Text,
} from "../../protocol/wire.ts";
import { Status } from "../../errors.ts";
import { type Handler, JOB_TEXTS, type Outcome, readJob, type RequestContext } from "./context.ts";
import { errorOutcome, pieces } from "./reply.ts";

/** The LIST handler. */
export function* list(h: Header, ctx: RequestContext): Handler {
  const { options, store } = ctx;
  const rec = blankRecord("list", "bad_request", null);
  const fail = (status: number, text: string): Outcome => errorOutcome(Cmd.LIST, status, text, rec);

  if (h.jobLen > JOB_MAX) return fail(Status.BAD_REQUEST, Text.jobTooLong);
  if (requestBytes(h) > options.maxRequestBytes) {
    return fail(Status.BAD_REQUEST, Text.requestTooLarge);
  }
  let caller: string | null = null;
  if (h.jobLen > 0) {
    const job = yield* readJob(h.jobLen, JOB_TEXTS);
    if (typeof job !== "string") return fail(Status.BAD_REQUEST, job.error);
    caller = job;
  }
  const refusal = checkJobClaim(options.policy, caller, ctx.peer);
  if (refusal !== null) {
    rec.jobId = caller;
    return fail(Status.FORBIDDEN, refusal);
  }

  rec.jobId = caller;
  if ((extFlags(h.reserved) & Flag.CLUSTER) !== 0) {
    // The cluster listing: the latest version of every name the caller may read.
    if (!ctx.cluster) return fail(Status.ERR, Text.noCluster);
    const a = (yield { kind: "remote", op: "list", name: "", caller }) as RemoteAnswer;
    if (a.kind !== "list") return fail(Status.ERR, a.kind === "error" ? a.text : Text.listBuild);
    let text = "";
    let count = 0;
    for (const v of a.versions) {
      if (!visible(v, caller)) continue;
      const line = formatClusterListLine(v);
      if (text.length + line.length > options.maxListBytes) {
        rec.size = 0;
        rec.count = 0;
        return fail(Status.ERR, Text.listTooLarge);
      }
      text += line;
      count++;
    }
    return listReply(rec, text, count, Flag.CLUSTER);
  }
  const built = buildListText(store, caller, options.maxListBytes);
  if (built === null) {
    rec.size = 0;
    rec.count = 0;
    return fail(Status.ERR, Text.listTooLarge);
  }
  return listReply(rec, built.text, built.count, 0);
}

function listReply(rec: AuditRecord, text: string, count: number, flags: number): Outcome {
  rec.result = "ok";
  rec.size = count;
  rec.count = count;
  const body = fromBinary(text);
  const wire = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader({ cmd: Cmd.LIST, textLen: body.length }, wire);
  wire.set(body, HEADER_SIZE);
  const segments = pieces(
    wire,
    [HEADER_SIZE, "failed to send object list response"],
    [body.length, "failed to send object list payload"],
  );
  const o = { wire, segments, fd: -1, audit: rec, auditAfterSend: true, keptFd: false, ok: true };
  return flags === 0 ? o : { ...o, extFlags: flags };
}

/**
 * The LIST text for `caller`: one tab-separated line per visible object in id order, or null
 * when it would exceed `maxBytes` (a text of exactly `maxBytes` is allowed).
 */
export function buildListText(
  store: Store,
  caller: string | null,
  maxBytes: number,
): { text: string; count: number } | null {
  let text = "";
  let count = 0;
  for (const obj of store.values()) {
    if (!visible(obj, caller)) continue;
    const line = formatListLine(obj);
    if (text.length + line.length > maxBytes) return null;
    text += line;
    count++;
  }
  return { text, count };
}
