/**
 * GET, DROP and STAT: one handler, since they share their checks and lookup (by id or by name,
 * waiting for a name with the wait flag, consulting the cluster tier by name).
 *
 * @module
 */

import { type AuditOp, blankRecord } from "../audit.ts";
import { toBinary } from "../../protocol/bytes.ts";
import { formatStat } from "../../protocol/stat.ts";
import { checkJobClaim, droppable, visible } from "../policy.ts";
import type { StoredObject } from "../store.ts";
import type { RemoteAnswer } from "../remote.ts";
import {
  Cmd,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  JOB_MAX,
  NAME_HARD_MAX,
  requestBytes,
  Text,
} from "../../protocol/wire.ts";
import { Status } from "../../errors.ts";
import {
  type Handler,
  JOB_TEXTS,
  type Outcome,
  READ,
  readJob,
  type RequestContext,
  type Step,
  type StepInput,
} from "./context.ts";
import { errorOutcome, headerOnly, pieces, replyBytes, textOutcome } from "./reply.ts";

/**
 * A GET's reply (header, name, digest) and the pieces it is sent in. Built for each GET, in a
 * piece of a reply slab (see `replyBytes`): an object is usually fetched once or a few times, and
 * building these few bytes costs less than a typed array of their own would, kept or not.
 */
function getReplyOf(obj: StoredObject): Pick<Outcome, "wire" | "segments"> {
  const name = obj.name;
  const digest = obj.digest;
  const wire = replyBytes(HEADER_SIZE + name.length + DIGEST_LEN);
  encodeHeader({
    cmd: Cmd.GET,
    objectId: BigInt(obj.id),
    size: BigInt(obj.size),
    nameLen: name.length,
    textLen: DIGEST_LEN,
  }, wire);
  // Names and digests are binary strings: one byte per character.
  for (let i = 0; i < name.length; i++) wire[HEADER_SIZE + i] = name.charCodeAt(i);
  const at = HEADER_SIZE + name.length;
  for (let i = 0; i < DIGEST_LEN; i++) wire[at + i] = digest.charCodeAt(i);
  const segments = pieces(
    wire,
    [HEADER_SIZE, Text.sendObject],
    [name.length, Text.sendName],
    [DIGEST_LEN, Text.sendDigest],
  );
  return { wire, segments };
}

/** The GET, DROP or STAT handler (`op`). */
export function* getOrDrop(
  h: Header,
  ctx: RequestContext,
  op: AuditOp & ("get" | "drop" | "stat"),
): Handler {
  const { options, store } = ctx;
  const cmd = op === "get" ? Cmd.GET : op === "drop" ? Cmd.DROP : Cmd.STAT;
  const selector = h.nameLen > 0 ? "name" : h.objectId !== 0n ? "id" : null;
  const rec = blankRecord(op, "bad_request", null);
  const fail = (status: number, text: string): Outcome => errorOutcome(cmd, status, text, rec);

  if (h.objectId !== 0n && h.nameLen > 0) {
    rec.objectId = h.objectId;
    return fail(Status.BAD_REQUEST, Text.bothSelectors);
  }
  if (h.objectId === 0n && h.nameLen === 0) return fail(Status.BAD_REQUEST, Text.noSelector);
  if (h.nameLen > NAME_HARD_MAX) {
    rec.selector = "name";
    return fail(Status.BAD_REQUEST, Text.nameTooLong);
  }
  if (h.jobLen > JOB_MAX) {
    rec.selector = selector;
    return fail(Status.BAD_REQUEST, Text.jobTooLong);
  }
  // The C broker labels these two "name" even for by-id requests (defect D19, kept as is).
  if (requestBytes(h) > options.maxRequestBytes) {
    rec.selector = "name";
    return fail(Status.BAD_REQUEST, Text.requestTooLarge);
  }
  if (h.nameLen > options.maxNameBytes) {
    rec.selector = "name";
    return fail(Status.BAD_REQUEST, Text.nameOverLimit);
  }

  let lookupName: string | null = null;
  if (h.nameLen > 0) {
    const nameBytes = (yield READ(h.nameLen)) as Uint8Array | null;
    if (nameBytes === null) {
      rec.selector = "name";
      return fail(Status.BAD_REQUEST, Text.readName);
    }
    lookupName = toBinary(nameBytes);
  }

  let caller: string | null = null;
  if (h.jobLen > 0) {
    const job = yield* readJob(h.jobLen, JOB_TEXTS);
    if (typeof job !== "string") {
      rec.selector = selector;
      rec.objectId = h.objectId;
      rec.name = lookupName;
      return fail(Status.BAD_REQUEST, job.error);
    }
    caller = job;
  }
  const refusal = checkJobClaim(options.policy, caller, ctx.peer);
  if (refusal !== null) {
    rec.selector = selector;
    rec.objectId = h.objectId;
    rec.name = lookupName;
    rec.jobId = caller;
    return fail(Status.FORBIDDEN, refusal);
  }

  // The C broker looks the object up before reading the job id; here other requests run while
  // the job id arrives, so the lookup waits until the request is complete. Names are compared as
  // whole byte strings: one holding a NUL byte is never cut short (defect D11), and since no
  // stored name holds one, it is simply not found.
  let obj = lookupName !== null ? store.newestByName(lookupName) : store.byId(h.objectId);
  const waits = lookupName !== null && op !== "drop" && (extFlags(h.reserved) & Flag.WAIT) !== 0;
  // The cluster tier, by name only (ids are host-local): a DROP drops the cluster's newest
  // version; a GET or STAT whose name is missing here, or newer in the cluster, pulls it first.
  const cluster = lookupName !== null ? ctx.cluster ?? null : null;
  const remote = function* (name: string): Generator<Step, Outcome | null, StepInput> {
    if (cluster === null || !cluster.stale(name, obj)) return null;
    const a = (yield { kind: "remote", op: "fetch", name, caller }) as RemoteAnswer;
    if (a.kind === "object") obj = a.obj;
    else if (a.kind === "denied") {
      Object.assign(rec, { selector, jobId: caller, objectId: 0, name, size: a.version.size });
      rec.digest = a.version.digest;
      return fail(Status.FORBIDDEN, Text.accessDenied);
    } else if (a.kind === "error" && obj === undefined && !waits) {
      // Nothing local to fall back on: say why at once rather than "not found".
      Object.assign(rec, { selector, jobId: caller, objectId: h.objectId, name });
      return fail(Status.ERR, a.text);
    }
    return null;
  };
  if (lookupName !== null && cluster !== null && op === "drop" && cluster.shared(lookupName, obj)) {
    const a = (yield { kind: "remote", op: "drop", name: lookupName, caller }) as RemoteAnswer;
    Object.assign(rec, { selector, jobId: caller, name: lookupName });
    if (a.kind === "error") {
      rec.objectId = h.objectId;
      return fail(Status.ERR, a.text);
    }
    if (a.kind === "denied" || a.kind === "dropped") {
      rec.objectId = a.kind === "dropped" ? a.local?.id ?? 0 : 0;
      rec.size = a.version.size;
      rec.digest = a.version.digest;
      if (a.kind === "denied") return fail(Status.FORBIDDEN, Text.accessDenied);
      rec.result = "ok";
      return headerOnly(
        { cmd, objectId: BigInt(rec.objectId), size: BigInt(a.version.size) },
        rec,
        false,
      );
    }
    // The cluster has no live version: an object only this host has is dropped as usual.
    obj = store.newestByName(lookupName);
  } else if (lookupName !== null && op !== "drop") {
    const refused = yield* remote(lookupName);
    if (refused !== null) return refused;
  }
  if (obj === undefined && lookupName !== null && waits) {
    const published = (yield {
      kind: "wait",
      name: lookupName,
      ms: Number(h.size),
      job: caller,
    }) as boolean;
    if (published) {
      obj = store.newestByName(lookupName);
      const refused = yield* remote(lookupName);
      if (refused !== null) return refused;
    }
  }
  rec.selector = selector;
  rec.jobId = caller;
  if (obj === undefined) {
    rec.objectId = h.objectId;
    rec.name = lookupName;
    return fail(Status.NOT_FOUND, Text.notFound);
  }
  rec.objectId = obj.id;
  rec.name = obj.name;
  rec.size = obj.size;
  rec.digest = obj.digest;
  const allowed = op === "drop" ? droppable(obj, caller) : visible(obj, caller);
  if (!allowed) return fail(Status.FORBIDDEN, Text.accessDenied);

  if (op === "stat") {
    const gov = ctx.governor;
    const text = formatStat({
      ...obj,
      seals: ctx.seals(obj),
      shared: gov === undefined ? undefined : store.isShared(obj),
      ownerUsage: gov === undefined
        ? undefined
        : obj.owner === null
        ? null
        : gov.jobUsage(obj.owner),
    });
    return textOutcome({ cmd, objectId: BigInt(obj.id), size: BigInt(obj.size) }, text, rec);
  }

  if (op === "drop") {
    const last = store.remove(obj);
    ctx.governor?.removed(obj);
    ctx.release(obj, last);
    rec.result = "ok";
    return headerOnly({ cmd, objectId: BigInt(obj.id), size: BigInt(obj.size) }, rec, false);
  }

  const fd = ctx.reopen(obj);
  if (fd < 0) return fail(Status.ERR, Text.reopenFailed);
  store.touch(obj);
  rec.result = "ok";
  const { wire, segments } = getReplyOf(obj);
  return { wire, segments, fd, audit: rec, auditAfterSend: true, keptFd: false, ok: true };
}
