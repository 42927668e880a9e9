/**
 * LIST: the caller's visible objects as tab-separated lines, or the cluster's latest versions.
 *
 * @module
 */

import { type AuditRecord, blankRecord } from "../audit.ts";
import { fromBinary } from "../../protocol/bytes.ts";
import { formatListLine, listLineLength } from "../../protocol/list.ts";
import { checkJobClaim, visible } from "../policy.ts";
import type { Store, StoredObject } from "../store.ts";
import { clusterListLineLength, formatClusterListLine, type RemoteAnswer } from "../remote.ts";
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
import {
  type Handler,
  JOB_TEXTS,
  type Outcome,
  readJob,
  type ReplyStream,
  type RequestContext,
} from "./context.ts";
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
    const rows = a.versions.filter((v) => visible(v, caller));
    const stream = ListStream.of(rows, clusterListLineLength, formatClusterListLine);
    if (stream.total > options.maxListBytes) return tooLarge(rec);
    return listReply(rec, stream, Flag.CLUSTER);
  }
  // A snapshot of references to the visible objects: what a line shows of an object never
  // changes, so an object dropped before its line is formatted still gets exactly the bytes the
  // header announced.
  const rows: StoredObject[] = [];
  for (const obj of store.values()) if (visible(obj, caller)) rows.push(obj);
  const stream = ListStream.of(rows, listLineLength, formatListLine);
  if (stream.total > options.maxListBytes) return tooLarge(rec);
  return listReply(rec, stream, 0);
}

function tooLarge(rec: AuditRecord): Outcome {
  rec.size = 0;
  rec.count = 0;
  return errorOutcome(Cmd.LIST, Status.ERR, Text.listTooLarge, rec);
}

/** The most body bytes one LIST chunk holds (a chunk is whole lines, at least one). */
export const LIST_CHUNK = 64 * 1024;

/**
 * A LIST body produced chunk by chunk from a snapshot of rows: the total length is computed
 * first (lengths only, no strings), then lines are formatted as the socket takes them.
 */
export class ListStream<T> implements ReplyStream {
  readonly total: number;
  readonly heldBytes: number;
  readonly failText = "failed to send object list payload";
  #rows: T[] | null;
  #next = 0;
  #produced = 0;
  readonly #format: (row: T) => string;

  /** A stream over `rows`; its total is the sum of `length(row)`. */
  static of<T>(rows: T[], length: (row: T) => number, format: (row: T) => string): ListStream<T> {
    let total = 0;
    for (const r of rows) total += length(r);
    return new ListStream(rows, total, format);
  }

  private constructor(rows: T[], total: number, format: (row: T) => string) {
    this.#rows = rows;
    this.total = total;
    this.heldBytes = rows.length * 8;
    this.#format = format;
  }

  /** Rows in the snapshot. */
  get count(): number {
    return this.#rows?.length ?? 0;
  }

  next(max: number): Uint8Array | null {
    const rows = this.#rows;
    if (rows === null) return null;
    let text = "";
    while (this.#next < rows.length && (text.length === 0 || text.length < max)) {
      const line = this.#format(rows[this.#next] as T);
      if (text.length > 0 && text.length + line.length > max) break;
      text += line;
      this.#next++;
    }
    this.#produced += text.length;
    if (this.#next >= rows.length) this.#rows = null; // the snapshot is no longer needed
    if (this.#produced > this.total || (this.#rows === null && this.#produced !== this.total)) {
      throw new Error(`LIST body of ${this.#produced} bytes, announced ${this.total}`);
    }
    return text.length === 0 ? null : fromBinary(text);
  }
}

function listReply(
  rec: AuditRecord,
  stream: ReplyStream & { readonly count: number },
  flags: number,
): Outcome {
  rec.result = "ok";
  rec.size = stream.count;
  rec.count = stream.count;
  const wire = new Uint8Array(HEADER_SIZE);
  encodeHeader({ cmd: Cmd.LIST, textLen: stream.total }, wire);
  const segments = pieces(wire, [HEADER_SIZE, "failed to send object list response"]);
  const o: Outcome = {
    wire,
    segments,
    fd: -1,
    audit: rec,
    auditAfterSend: true,
    keptFd: false,
    ok: true,
    ...(stream.total > 0 ? { stream } : {}),
  };
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
