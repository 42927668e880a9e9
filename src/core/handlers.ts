/**
 * What the broker does with each request, in the exact order of checks of the C broker.
 *
 * A handler is a generator: it yields a {@link Step} when it needs body bytes or a digest, and
 * returns an {@link Outcome} (the reply, the audit record, and what became of the descriptor).
 * The connection code feeds it. Nothing here makes a system call: what needs one (checking the
 * request's descriptor, reading seals, reopening an object, the clock) comes in through the
 * {@link RequestContext}, so handlers are tested by driving them with byte arrays and real memfds.
 *
 * @module
 */

import { type AuditOp, type AuditRecord, type AuditResult, blankRecord } from "./audit.ts";
import { fromBinary, toBinary } from "../protocol/bytes.ts";
import { type NameKind, nameProblem } from "../protocol/names.ts";
import { formatListLine } from "../protocol/list.ts";
import { formatStat } from "../protocol/stat.ts";
import type { BrokerOptions } from "./options.ts";
import {
  checkJobClaim,
  checkReservation,
  droppable,
  mayPublishName,
  type PeerIdentity,
  PolicyText,
  visible,
} from "./policy.ts";
import type { Store, StoredObject } from "./store.ts";
import type { Governor, Release } from "./governance.ts";
import { checkWatchHeader, type WatchSelector, watchSelectorOf } from "../protocol/watch.ts";
import {
  type ClusterView,
  formatClusterListLine,
  type RemoteAnswer,
  type RemoteStep,
} from "./remote.ts";
import {
  Cmd,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  isValidDigest,
  JOB_MAX,
  NAME_HARD_MAX,
  requestBytes,
  Text,
} from "../protocol/wire.ts";
import { Status } from "../errors.ts";

/** A handler's request for more input. */
export type Step =
  /** `length` more body bytes; resumed with them, or null if they never arrived. */
  | { readonly kind: "read"; readonly length: number }
  /** The SHA-256 of the descriptor; resumed with a {@link DigestAnswer}. */
  | { readonly kind: "digest"; readonly fd: number; readonly size: number }
  /**
   * Wait (at most `ms`, 0: the broker's limit) until an object named `name` is published;
   * resumed with true when one was, false on timeout.
   */
  | { readonly kind: "wait"; readonly name: string; readonly ms: number }
  /** Ask the cluster tier (only with `ctx.cluster`); resumed with a {@link RemoteAnswer}. */
  | RemoteStep;

/** What a digest step resumes with. */
export type DigestAnswer = { readonly digest: string } | { readonly error: string };

/** What a step resumes with. */
export type StepInput = Uint8Array | null | DigestAnswer | boolean | RemoteAnswer;

/** One piece of a reply and the audit error text to use if sending it fails. */
export interface Segment {
  /** The bytes. */
  readonly bytes: Uint8Array;
  /** For replies audited after sending: the error text when this piece cannot be sent. */
  readonly failText: string | null;
}

/** The result of a request. */
export interface Outcome {
  /** The whole reply, header first; sent in one sendmsg. */
  readonly wire: Uint8Array;
  /** The reply's pieces, as views into {@link Outcome.wire}. */
  readonly segments: readonly Segment[];
  /** A descriptor to attach to the header (GET); the connection closes it after sending. */
  readonly fd: number;
  /** The audit record. */
  readonly audit: AuditRecord;
  /** True when the record is written after the reply is sent (GET and LIST successes). */
  readonly auditAfterSend: boolean;
  /** True when the store took ownership of the descriptor that came with the request. */
  readonly keptFd: boolean;
  /** True for a successful request (status 0). */
  readonly ok: boolean;
  /**
   * A PUT stored on the memfd of identical content: the request's descriptor is closed although
   * {@link Outcome.keptFd} says an object was committed.
   */
  readonly deduped?: boolean;
  /** Objects the broker releases once the PUT's reply is recorded (retention, eviction). */
  readonly retire?: readonly Release[];
  /** A WATCH that was accepted: after its reply the connection carries events. */
  readonly watch?: { readonly selector: WatchSelector; readonly caller: string | null };
  /** Extension bits the reply carries besides keep-alive and wait (the cluster listing's). */
  readonly extFlags?: number;
}

/**
 * What checking a PUT's descriptor found: the size of a sealed memfd, or the broker's text for
 * what is wrong with it (for example `size mismatch: expected=5 fd=4`).
 */
export type SealedCheck = { readonly size: bigint } | { readonly problem: string };

/** What handlers need from the broker. */
export interface RequestContext {
  /** The object store. */
  readonly store: Store;
  /** Limits. */
  readonly options: BrokerOptions;
  /** The descriptor that arrived with the header, or -1. */
  readonly fd: number;
  /** True when descriptors were lost in transit (MSG_CTRUNC), e.g. at the descriptor limit. */
  readonly fdLost: boolean;
  /** The peer's credentials when the broker looked them up (identity policy, audit). */
  readonly peer?: PeerIdentity | undefined;
  /** A fresh descriptor for an object (its own open file description), or -errno. */
  reopen(obj: StoredObject): number;
  /**
   * A client dropped `obj` (already out of the store); `last` is what {@link Store.remove}
   * returned: close the broker's descriptor only when true (no other object shares it).
   */
  release(obj: StoredObject, last: boolean): void;
  /**
   * Memory governance (retention, quotas, eviction, dedup). Absent: only the broker's object
   * and byte limits apply, as in the C broker.
   */
  readonly governor?: Governor | undefined;
  /** The per-watcher queue length a WATCH reply announces. */
  readonly watchQueueLength?: number;
  /** Check that `fd` is a sealed memfd of `size` bytes. */
  checkSealed(fd: number, size: bigint): SealedCheck;
  /** The seal bits of a stored object's descriptor, or a negated errno. */
  seals(obj: StoredObject): number;
  /** The current CLOCK_REALTIME in ns. */
  now(): bigint;
  /**
   * The peer's fair share of the store (`src/core/fair_shares.ts`): the refusal text when one
   * more object of `size` bytes would take its uid past it, else null. Absent: no shares.
   */
  storeShare?(size: number): string | null;
  /** The broker's cluster tier, when it runs with `--cluster`. */
  readonly cluster?: ClusterView | null;
}

/** A handler generator. */
export type Handler = Generator<Step, Outcome, StepInput>;

const READ = (length: number): Step => ({ kind: "read", length });

function resultOf(status: number): AuditResult {
  switch (status) {
    case Status.OK:
      return "ok";
    case Status.NOT_FOUND:
      return "not_found";
    case Status.FORBIDDEN:
      return "forbidden";
    case Status.BAD_REQUEST:
      return "bad_request";
    default:
      return "error";
  }
}

/** An error reply `cmd/status/text` with its (already filled) audit record. */
export function errorOutcome(
  cmd: number,
  status: number,
  text: string,
  audit: AuditRecord,
): Outcome {
  audit.result = resultOf(status);
  audit.error = text;
  const body = fromBinary(text);
  const wire = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader({ cmd, status, textLen: body.length }, wire);
  wire.set(body, HEADER_SIZE);
  return {
    wire,
    segments: pieces(wire, [HEADER_SIZE, null], [body.length, null]),
    fd: -1,
    audit,
    auditAfterSend: false,
    keptFd: false,
    ok: false,
  };
}

/** A reply that is only a header. */
function headerOnly(h: Partial<Header>, audit: AuditRecord, keptFd: boolean): Outcome {
  const wire = encodeHeader(h);
  return {
    wire,
    segments: [{ bytes: wire, failText: null }],
    fd: -1,
    audit,
    auditAfterSend: false,
    keptFd,
    ok: true,
  };
}

/** Views into `wire` of the given lengths (empty pieces after the header are left out). */
function pieces(wire: Uint8Array, ...parts: [number, string | null][]): Segment[] {
  const out: Segment[] = [];
  let off = 0;
  for (const [len, failText] of parts) {
    if (len > 0 || off === 0) out.push({ bytes: wire.subarray(off, off + len), failText });
    off += len;
  }
  return out;
}

// Every GET of an object sends the same bytes (header, name, digest): build them once.
const getReplies = new WeakMap<StoredObject, Uint8Array>();

function getReplyOf(obj: StoredObject): Uint8Array {
  let wire = getReplies.get(obj);
  if (wire === undefined) {
    const name = fromBinary(obj.name);
    wire = new Uint8Array(HEADER_SIZE + name.length + DIGEST_LEN);
    encodeHeader({
      cmd: Cmd.GET,
      objectId: BigInt(obj.id),
      size: BigInt(obj.size),
      nameLen: name.length,
      textLen: DIGEST_LEN,
    }, wire);
    wire.set(name, HEADER_SIZE);
    wire.set(fromBinary(obj.digest), HEADER_SIZE + name.length);
    getReplies.set(obj, wire);
  }
  return wire;
}

/** The reply to a header whose magic or version is wrong. */
export function badHeaderOutcome(): Outcome {
  return errorOutcome(
    0,
    Status.BAD_REQUEST,
    Text.badHeader,
    blankRecord("unknown", "bad_request", null),
  );
}

/** The reply to an unknown command (the audit record carries the command number as object_id). */
export function unknownCommandOutcome(cmd: number): Outcome {
  const rec = blankRecord("unknown", "bad_request", null);
  rec.objectId = cmd;
  return errorOutcome(cmd, Status.BAD_REQUEST, Text.unknownCommand, rec);
}

/** The reply to a connection over --max-clients, sent without reading the request. */
export function clientQuotaOutcome(): Outcome {
  return errorOutcome(0, Status.ERR, Text.clientQuota, blankRecord("unknown", "error", null));
}

/** The reply to a connection accepted while the broker had no descriptors to spare. */
export function fdLimitOutcome(): Outcome {
  return errorOutcome(0, Status.ERR, Text.fdLimit, blankRecord("unknown", "error", null));
}

/** Start the handler for a valid header (magic and version already checked). */
export function handle(h: Header, ctx: RequestContext): Handler {
  switch (h.cmd) {
    case Cmd.PUT:
      return put(h, ctx);
    case Cmd.GET:
      return getOrDrop(h, ctx, "get");
    case Cmd.LIST:
      return list(h, ctx);
    case Cmd.DROP:
      return getOrDrop(h, ctx, "drop");
    case Cmd.STAT:
      return getOrDrop(h, ctx, "stat");
    case Cmd.WATCH:
      return watch(h, ctx);
    default:
      return done(unknownCommandOutcome(h.cmd));
  }
}

// deno-lint-ignore require-yield
function* done(o: Outcome): Handler {
  return o;
}

/** Read a job id; returns the binary string, or the error text. */
function* readJob(
  length: number,
  texts: { read: string; empty: string; nul: string; kind: NameKind },
): Generator<Step, string | { error: string }, StepInput> {
  const bytes = (yield READ(length)) as Uint8Array | null;
  if (bytes === null) return { error: texts.read };
  if (bytes[0] === 0) return { error: texts.empty };
  if (bytes.includes(0)) return { error: texts.nul };
  const problem = nameProblem(bytes, texts.kind);
  if (problem !== null) return { error: problem };
  return toBinary(bytes);
}

const JOB_TEXTS = {
  read: Text.readJob,
  empty: Text.emptyJob,
  nul: Text.nulInJob,
  kind: "job id" as const,
};
const ALLOW_TEXTS = {
  read: Text.readAllow,
  empty: Text.emptyAllow,
  nul: Text.nulInAllow,
  kind: "allowed job id" as const,
};

function* put(h: Header, ctx: RequestContext): Handler {
  const { options, store } = ctx;
  const rec = blankRecord("put", "bad_request", null);
  rec.selector = "name";
  rec.size = h.size;
  const fail = (status: number, text: string): Outcome => errorOutcome(Cmd.PUT, status, text, rec);

  if (h.nameLen > NAME_HARD_MAX) return fail(Status.BAD_REQUEST, Text.nameTooLong);
  if (h.jobLen > JOB_MAX) return fail(Status.BAD_REQUEST, Text.jobTooLong);
  if (h.allowLen > JOB_MAX) return fail(Status.BAD_REQUEST, Text.allowTooLong);
  if (requestBytes(h) > options.maxRequestBytes) {
    return fail(Status.BAD_REQUEST, Text.requestTooLarge);
  }
  if (h.nameLen > options.maxNameBytes) return fail(Status.BAD_REQUEST, Text.nameOverLimit);

  const nameBytes = (yield READ(h.nameLen)) as Uint8Array | null;
  if (nameBytes === null) return fail(Status.BAD_REQUEST, Text.readName);
  const name = toBinary(nameBytes);
  rec.name = name;
  if (nameBytes.length === 0 || nameBytes[0] === 0) return fail(Status.BAD_REQUEST, Text.emptyName);
  if (nameBytes.includes(0)) return fail(Status.BAD_REQUEST, Text.nulInName);
  const nameRule = nameProblem(nameBytes, "object name");
  if (nameRule !== null) return fail(Status.BAD_REQUEST, nameRule);

  // Flag.DIGEST with no digest in the body: the digest computed below is the object's digest.
  const brokerDigest = h.textLen === 0 && (extFlags(h.reserved) & Flag.DIGEST) !== 0;
  let digest = "";
  if (!brokerDigest) {
    if (h.textLen !== DIGEST_LEN) return fail(Status.BAD_REQUEST, Text.invalidDigest);
    const digestBytes = (yield READ(DIGEST_LEN)) as Uint8Array | null;
    if (digestBytes === null) return fail(Status.BAD_REQUEST, Text.readDigest);
    digest = toBinary(digestBytes);
    rec.digest = digest;
    if (!isValidDigest(digestBytes)) return fail(Status.BAD_REQUEST, Text.invalidDigest);
  }

  if (h.allowLen > 0 && h.jobLen === 0) return fail(Status.BAD_REQUEST, Text.allowNeedsOwner);
  let owner: string | null = null;
  if (h.jobLen > 0) {
    const job = yield* readJob(h.jobLen, JOB_TEXTS);
    if (typeof job !== "string") return fail(Status.BAD_REQUEST, job.error);
    owner = job;
    rec.jobId = owner;
  }
  let allowed: string | null = null;
  if (h.allowLen > 0) {
    const allow = yield* readJob(h.allowLen, ALLOW_TEXTS);
    if (typeof allow !== "string") return fail(Status.BAD_REQUEST, allow.error);
    allowed = allow;
  }
  // Identity policy (off by default): the claimed owner job must match the peer, a reserved name
  // belongs to its job, and with name protection the name must not belong to another job
  // (checked again at commit; reservations do not depend on the store).
  const claim = checkJobClaim(options.policy, owner, ctx.peer);
  if (claim !== null) return fail(Status.FORBIDDEN, claim);
  const reserved = checkReservation(options.policy, name, owner);
  if (reserved !== null) return fail(Status.FORBIDDEN, reserved);
  if (!mayPublishName(options.policy, store.oldestByName(name)?.owner, owner)) {
    return fail(Status.FORBIDDEN, PolicyText.nameOwned);
  }

  if (ctx.fd < 0) {
    // A descriptor the kernel could not install (the broker is at its descriptor limit) is a
    // broker-side failure, not a client mistake.
    if (ctx.fdLost) return fail(Status.ERR, Text.fdLimit);
    return fail(Status.BAD_REQUEST, Text.missingFd);
  }
  const info = ctx.checkSealed(ctx.fd, h.size);
  if ("problem" in info) return fail(Status.BAD_REQUEST, info.problem);

  const size = Number(info.size);
  // Nothing is hashed for a request that cannot be stored anyway (checked again at commit;
  // with eviction on, releasing superseded versions may make room, so only the commit decides).
  if (options.evict === "none" && store.exceedsQuota(size)) {
    return fail(Status.ERR, Text.objectQuota);
  }
  const early = ctx.storeShare?.(size) ?? null;
  if (early !== null) return fail(Status.ERR, early);
  const verified = (yield { kind: "digest", fd: ctx.fd, size }) as DigestAnswer;
  if ("error" in verified) return fail(Status.BAD_REQUEST, verified.error);
  if (brokerDigest) {
    digest = verified.digest;
    rec.digest = digest;
  } else if (verified.digest !== digest) return fail(Status.BAD_REQUEST, Text.digestMismatch);

  if (!mayPublishName(options.policy, store.oldestByName(name)?.owner, owner)) {
    return fail(Status.FORBIDDEN, PolicyText.nameOwned);
  }
  const gov = ctx.governor;
  const uid = ctx.peer?.uid;
  if (gov === undefined) {
    if (store.exceedsQuota(size)) return fail(Status.ERR, Text.objectQuota);
    const share = ctx.storeShare?.(size) ?? null;
    if (share !== null) return fail(Status.ERR, share);
    const obj = store.add({ size, fd: ctx.fd, digest, name, owner, allowed, createdNs: ctx.now() });
    rec.result = "ok";
    rec.selector = null;
    rec.objectId = obj.id;
    return headerOnly({ cmd: Cmd.PUT, objectId: BigInt(obj.id), size: h.size }, rec, true);
  }
  const admitted = gov.admitPut({ name, size, digest, owner, uid: uid ?? null });
  if (!admitted.ok) return fail(Status.ERR, admitted.text);
  const share = ctx.storeShare?.(size) ?? null;
  if (share !== null) return fail(Status.ERR, share);
  const deduped = admitted.sharedFd >= 0;
  const obj = store.add({
    size,
    fd: deduped ? admitted.sharedFd : ctx.fd,
    digest,
    name,
    owner,
    allowed,
    createdNs: ctx.now(),
    uid,
  });
  gov.added(obj);
  rec.result = "ok";
  rec.selector = null;
  rec.objectId = obj.id;
  const reply = { cmd: Cmd.PUT, objectId: BigInt(obj.id), size: h.size };
  const o = brokerDigest ? withDigest(reply, digest, rec) : headerOnly(reply, rec, true);
  const retire = [...admitted.release, ...admitted.evict];
  return { ...o, deduped, retire };
}

function* watch(h: Header, ctx: RequestContext): Handler {
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

/** A PUT OK reply that carries the digest the broker computed (Flag.DIGEST). */
function withDigest(h: Partial<Header>, digest: string, audit: AuditRecord): Outcome {
  const wire = new Uint8Array(HEADER_SIZE + DIGEST_LEN);
  encodeHeader({ ...h, textLen: DIGEST_LEN }, wire);
  wire.set(fromBinary(digest), HEADER_SIZE);
  return {
    wire,
    segments: pieces(wire, [HEADER_SIZE, null], [DIGEST_LEN, null]),
    fd: -1,
    audit,
    auditAfterSend: false,
    keptFd: true,
    ok: true,
  };
}

function* getOrDrop(
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
    const published = (yield { kind: "wait", name: lookupName, ms: Number(h.size) }) as boolean;
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
    rec.result = "ok";
    const gov = ctx.governor;
    const body = fromBinary(formatStat({
      ...obj,
      seals: ctx.seals(obj),
      shared: gov === undefined ? undefined : store.isShared(obj),
      ownerUsage: gov === undefined
        ? undefined
        : obj.owner === null
        ? null
        : gov.jobUsage(obj.owner),
    }));
    const wire = new Uint8Array(HEADER_SIZE + body.length);
    encodeHeader(
      { cmd, objectId: BigInt(obj.id), size: BigInt(obj.size), textLen: body.length },
      wire,
    );
    wire.set(body, HEADER_SIZE);
    return {
      wire,
      segments: pieces(wire, [HEADER_SIZE, null], [body.length, null]),
      fd: -1,
      audit: rec,
      auditAfterSend: false,
      keptFd: false,
      ok: true,
    };
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
  // A private copy: the connection may set the keep-alive bit in it.
  const wire = getReplyOf(obj).slice();
  const segments = pieces(
    wire,
    [HEADER_SIZE, Text.sendObject],
    [wire.length - HEADER_SIZE - DIGEST_LEN, Text.sendName],
    [DIGEST_LEN, Text.sendDigest],
  );
  return { wire, segments, fd, audit: rec, auditAfterSend: true, keptFd: false, ok: true };
}

function* list(h: Header, ctx: RequestContext): Handler {
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
