/**
 * Building replies: error replies with their audit result, header-only replies, the pieces a
 * reply is sent in, and the fixed replies the connection code sends without a handler.
 *
 * @module
 */

import { type AuditRecord, type AuditResult, blankRecord } from "../audit.ts";
import { encodeHeader, type Header, HEADER_SIZE, Text } from "../../protocol/wire.ts";
import { Status } from "../../errors.ts";
import type { Outcome, Segment } from "./context.ts";

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

// Replies of one request (a header, an error text) are short-lived: they are carved from slabs
// instead of being arrays of their own. Every typed array costs V8 a backing store and its
// bookkeeping (measured: about 1 µs for a fresh 48-byte array, against 0.1 µs for a view); a slab
// serves many replies and is never reused, so a reply's bytes stay as they were written for as
// long as the reply is held (a slow reader pins at most one slab).
const SLAB_BYTES = 4096;
const SLAB_MAX_PIECE = 512;
let slab = new Uint8Array(0);
let slabUsed = 0;

/** Zeroed bytes for one reply of `n` bytes (carved from a slab when small). */
export function replyBytes(n: number): Uint8Array {
  if (n > SLAB_MAX_PIECE) return new Uint8Array(n);
  if (slabUsed + n > slab.length) {
    slab = new Uint8Array(SLAB_BYTES);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + n);
  slabUsed += n;
  return out;
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
  return withText({ cmd, status }, text, audit, false);
}

/** A reply of header `h` and a text body (a binary string: one byte per character). */
function withText(h: Partial<Header>, text: string, audit: AuditRecord, ok: boolean): Outcome {
  const wire = replyBytes(HEADER_SIZE + text.length);
  encodeHeader({ ...h, textLen: text.length }, wire);
  for (let i = 0; i < text.length; i++) wire[HEADER_SIZE + i] = text.charCodeAt(i);
  return {
    wire,
    segments: pieces(wire, [HEADER_SIZE, null], [text.length, null]),
    fd: -1,
    audit,
    auditAfterSend: false,
    keptFd: false,
    ok,
  };
}

/** A reply that is only a header. */
export function headerOnly(h: Partial<Header>, audit: AuditRecord, keptFd: boolean): Outcome {
  const wire = encodeHeader(h, replyBytes(HEADER_SIZE));
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

/**
 * A successful reply of a header and a text body (STAT's and USAGE's JSON); `text` is a binary
 * string, one byte per character.
 */
export function textOutcome(h: Partial<Header>, text: string, audit: AuditRecord): Outcome {
  audit.result = "ok";
  return withText(h, text, audit, true);
}

/** Views into `wire` of the given lengths (empty pieces after the header are left out). */
export function pieces(wire: Uint8Array, ...parts: [number, string | null][]): Segment[] {
  const out: Segment[] = [];
  let off = 0;
  for (const [len, failText] of parts) {
    if (len > 0 || off === 0) out.push({ bytes: wire.subarray(off, off + len), failText });
    off += len;
  }
  return out;
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
