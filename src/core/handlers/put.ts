/**
 * PUT: read and check the name, digest and job ids, check the sealed descriptor, have it hashed,
 * and commit it to the store (with governance when the broker has it).
 *
 * @module
 */

import { type AuditRecord, blankRecord } from "../audit.ts";
import { toBinary } from "../../protocol/bytes.ts";
import { nameProblem } from "../../protocol/names.ts";
import { metadataCost } from "../store.ts";
import { checkJobClaim, checkReservation, mayPublishName, PolicyText } from "../policy.ts";
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
} from "../../protocol/wire.ts";
import { Status } from "../../errors.ts";
import {
  ALLOW_TEXTS,
  type DigestAnswer,
  type Handler,
  JOB_TEXTS,
  type Outcome,
  READ,
  readJob,
  type RequestContext,
} from "./context.ts";
import { errorOutcome, headerOnly, pieces, replyBytes } from "./reply.ts";

/** The PUT handler. */
export function* put(h: Header, ctx: RequestContext): Handler {
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
  // Names, job ids and the object's record live on the broker's heap: charged against
  // --max-metadata-bytes and the uid's share of it, whatever the contents cost.
  const meta = metadataCost({ name, owner, allowed });
  // Nothing is hashed for a request that cannot be stored anyway (checked again at commit;
  // with eviction on, releasing superseded versions may make room, so only the commit decides).
  if (options.evict === "none" && store.exceedsQuota(size, meta)) {
    return fail(Status.ERR, Text.objectQuota);
  }
  const early = ctx.storeShare?.(size, meta) ?? null;
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
    if (store.exceedsQuota(size, meta)) return fail(Status.ERR, Text.objectQuota);
    const share = ctx.storeShare?.(size, meta) ?? null;
    if (share !== null) return fail(Status.ERR, share);
    const obj = store.add({ size, fd: ctx.fd, digest, name, owner, allowed, createdNs: ctx.now() });
    rec.result = "ok";
    rec.selector = null;
    rec.objectId = obj.id;
    return headerOnly({ cmd: Cmd.PUT, objectId: BigInt(obj.id), size: h.size }, rec, true);
  }
  const admitted = gov.admitPut({ name, size, digest, owner, allowed, uid: uid ?? null });
  if (!admitted.ok) return fail(Status.ERR, admitted.text);
  const share = ctx.storeShare?.(size, meta) ?? null;
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

/** A PUT OK reply that carries the digest the broker computed (Flag.DIGEST). */
function withDigest(h: Partial<Header>, digest: string, audit: AuditRecord): Outcome {
  const wire = replyBytes(HEADER_SIZE + DIGEST_LEN);
  encodeHeader({ ...h, textLen: DIGEST_LEN }, wire);
  for (let i = 0; i < DIGEST_LEN; i++) wire[HEADER_SIZE + i] = digest.charCodeAt(i);
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
