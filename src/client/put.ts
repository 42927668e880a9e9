/**
 * The client's PUT requests: a plain PUT of a sealed memfd with its digest, a PUT whose digest
 * the broker computes (Flag.DIGEST), and a PUT whose descriptor goes out before its digest. The
 * {@link Client.put} facade in `../client.ts` picks one.
 *
 * @module
 */

import { fromUtf8, utf8 } from "../protocol/bytes.ts";
import { BrokerError, ErrnoError, ProtocolError, Status } from "../errors.ts";
import { closeAll } from "../sys/unix_socket.ts";
import {
  Cmd,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  isValidDigest,
  Text,
  withExt,
} from "../protocol/wire.ts";
import { digestBytesSliced, digestFdSliced } from "./hashing.ts";
import { PUT_MS_PER_BYTE, type PutResult } from "./options.ts";
import type { Prepared } from "./put_source.ts";
import type { RequestLink } from "./request.ts";

/** The name and job ids of a PUT, as bytes. */
export interface PutParts {
  /** The object name. */
  readonly name: Uint8Array;
  /** The owner job id (empty: none). */
  readonly job: Uint8Array;
  /** The allowed job id (empty: none). */
  readonly allow: Uint8Array;
}

/** A sealed memfd of known size and digest to send (see {@link Client.putSealed}). */
export interface SealedPut {
  /** The memfd's size. */
  readonly size: number;
  /** The SHA-256 of its content, in hex. */
  readonly digest: string;
  /** The object name. */
  readonly name: Uint8Array;
  /** The owner job id. */
  readonly job?: Uint8Array;
  /** The allowed job id. */
  readonly allow?: Uint8Array;
  /** Keep the object on the broker's host (see {@link PutOptions.local}). */
  readonly local?: boolean;
}

/**
 * Send an already sealed memfd with known size and digest; returns the new id. The descriptor
 * stays the caller's.
 */
export async function putSealedFd(link: RequestLink, fd: number, req: SealedPut): Promise<bigint> {
  const job = req.job ?? new Uint8Array(0);
  const allow = req.allow ?? new Uint8Array(0);
  const digest = utf8(req.digest);
  if (!isValidDigest(digest)) throw new TypeError(`Invalid digest "${req.digest}"`);
  const header = encodeHeader({
    cmd: Cmd.PUT,
    jobLen: job.length,
    size: BigInt(req.size),
    nameLen: req.name.length,
    textLen: DIGEST_LEN,
    allowLen: allow.length,
    reserved: req.local === true ? withExt(Flag.LOCAL) : 0,
  });
  const reply = await link.requester.exchange(
    [
      [header, "send put request"],
      [req.name, "send object name"],
      [digest, "send object digest"],
      [job, "send job id"],
      [allow, "send allowed job id"],
    ],
    [fd],
    link.timeoutMs + req.size * PUT_MS_PER_BYTE,
  );
  closeAll(reply.reply.fds);
  reply.done();
  return reply.reply.header.objectId;
}

/**
 * PUT with Flag.DIGEST and no digest: the broker computes it and returns it in the reply. Null
 * when the broker is not one that honours the flag (a C broker's `invalid object digest`
 * reply without extension bits, or its closing the connection on the unread body): the
 * caller then sends a plain PUT. Other failures are the PUT's own and are thrown.
 */
export async function putByBroker(
  link: RequestLink,
  prepared: Prepared,
  parts: PutParts,
): Promise<PutResult | null> {
  const { name, job, allow } = parts;
  const requester = link.requester;
  const known = requester.brokerDigest;
  const header = encodeHeader({
    cmd: Cmd.PUT,
    jobLen: job.length,
    size: BigInt(prepared.size),
    nameLen: name.length,
    allowLen: allow.length,
    reserved: withExt(Flag.DIGEST),
  });
  const deadline = performance.now() + link.timeoutMs + prepared.size * PUT_MS_PER_BYTE;
  let reply;
  try {
    reply = await requester.exchange(
      [[header, "send put request"], [name, "send object name"], [job, "send job id"], [
        allow,
        "send allowed job id",
      ]],
      [prepared.fd],
      deadline - performance.now(),
    );
  } catch (e) {
    const ours = e instanceof BrokerError && (extFlags(e.flags) & Flag.DIGEST) !== 0;
    if (ours) throw e;
    const refused = e instanceof BrokerError && e.status === Status.BAD_REQUEST &&
      e.text === Text.invalidDigest;
    const cut = e instanceof ErrnoError && (e.code === "ECONNRESET" || e.code === "EPIPE");
    if (refused || (cut && !known)) {
      requester.forgetBrokerDigest();
      return null;
    }
    throw e;
  }
  try {
    closeAll(reply.reply.fds);
    const h = reply.reply.header;
    if ((extFlags(h.reserved) & Flag.DIGEST) === 0 || h.textLen !== DIGEST_LEN) {
      throw new ProtocolError("invalid response from broker");
    }
    const text = await reply.conn.recvExact(DIGEST_LEN, deadline, "receive response text");
    closeAll(text.fds);
    if (!isValidDigest(text.bytes)) throw new ProtocolError("invalid response from broker");
    reply.done();
    return {
      id: h.objectId,
      size: prepared.size,
      digest: fromUtf8(text.bytes),
      name: fromUtf8(name),
    };
  } catch (e) {
    reply.fail();
    throw e;
  }
}

/**
 * PUT of a large object whose digest is not known yet: the header, descriptor and name go out
 * as soon as the memfd is sealed, so the broker can start verifying the sealed memfd while
 * this side computes the digest it then sends. The bytes on the wire are those of a plain
 * PUT; only their timing differs (a C broker simply waits for the digest).
 */
export async function putEarly(
  link: RequestLink,
  prepared: Prepared,
  parts: PutParts & { readonly hashFrom: Uint8Array | null; readonly local: boolean },
): Promise<PutResult> {
  const { name, job, allow, hashFrom, local } = parts;
  const header = encodeHeader({
    cmd: Cmd.PUT,
    jobLen: job.length,
    size: BigInt(prepared.size),
    nameLen: name.length,
    textLen: DIGEST_LEN,
    allowLen: allow.length,
    reserved: local ? withExt(Flag.LOCAL) : 0,
  });
  let digest: string | null = null;
  const reply = await link.requester.exchange(
    [[header, "send put request"], [name, "send object name"]],
    [prepared.fd],
    link.timeoutMs + prepared.size * PUT_MS_PER_BYTE,
    async () => {
      digest ??= hashFrom === null
        ? await digestFdSliced(prepared.fd, prepared.size)
        : await digestBytesSliced(hashFrom);
      return [
        [utf8(digest), "send object digest"],
        [job, "send job id"],
        [allow, "send allowed job id"],
      ];
    },
  );
  closeAll(reply.reply.fds);
  reply.done();
  return {
    id: reply.reply.header.objectId,
    size: prepared.size,
    digest: digest ?? "",
    name: fromUtf8(name),
  };
}

/** The last part of a path (a PUT's default name). */
export function basename(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? path : path.slice(i + 1);
}
