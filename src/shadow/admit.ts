/**
 * What a broker accepts from a shadow (or from an old broker handing over): every object is
 * checked like a published one before the store takes it. Its metadata must be well formed
 * (positive id, size, a valid digest, a name and job ids that obey the name rule), its descriptor
 * must be a regular memfd carrying the four seals whose size (from fstat) is the recorded size,
 * and, for objects recovered from a shadow, its digest is verified before any client can see it.
 *
 * @module
 */

import { closeQuietly, strerror } from "../ffi.ts";
import { inspectSealedFd, isFdProblem } from "../sys/memfd.ts";
import { fdRejectionText } from "../protocol/fd_problem.ts";
import { fromWire, isUid, type WireObject } from "../protocol/shadow_frames.ts";
import { isPrintableName } from "../protocol/names.ts";
import { isValidDigest } from "../protocol/wire.ts";
import type { StoredObject } from "../core/store.ts";
import type { HashOutcome } from "../hash/verifier.ts";

/** An object that was refused, and why. */
export interface Refused {
  /** The id it claimed (0 when even that was unusable). */
  readonly id: number;
  /** Its name as a binary string, when it had a usable one. */
  readonly name: string | null;
  /** Why it was refused. */
  readonly reason: string;
}

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const isOrigin = (v: unknown): boolean => {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o.host === "string" && o.host !== "" && o.host.length <= 255 && isId(o.id) &&
    isId(o.revision);
};
const isB64 = (v: unknown): v is string => typeof v === "string" && /^[A-Za-z0-9+/]*=*$/.test(v);

/**
 * Check one object's metadata and descriptor as the broker checks a PUT. Returns the object (the
 * descriptor now owned by it) or the refusal (the descriptor is closed).
 *
 * @param w the object's metadata as received (untrusted JSON)
 * @param fd its descriptor, or -1 when none came with it
 */
export function admitObject(w: unknown, fd: number): StoredObject | Refused {
  const o = (typeof w === "object" && w !== null ? w : {}) as Partial<
    Record<keyof WireObject, unknown>
  >;
  const id = isId(o.id) ? o.id : 0;
  const refuse = (reason: string, name: string | null = null): Refused => {
    closeQuietly(fd);
    return { id, name, reason: `invalid object after recovery (${reason})` };
  };
  if (id === 0) return refuse("malformed object id");
  if (!Number.isSafeInteger(o.size) || (o.size as number) < 0) return refuse("malformed size");
  if (typeof o.digest !== "string" || !isValidDigest(o.digest)) return refuse("malformed digest");
  if (!isB64(o.name) || (o.owner !== null && !isB64(o.owner))) return refuse("malformed name");
  if (o.allowed !== null && !isB64(o.allowed)) return refuse("malformed allowed job id");
  if (typeof o.created !== "string" || !/^[0-9]{1,20}$/.test(o.created)) {
    return refuse("malformed creation time");
  }
  if (o.uid !== undefined && !isUid(o.uid)) return refuse("malformed uid");
  if (o.origin !== undefined && !isOrigin(o.origin)) return refuse("malformed origin");
  if (
    o.cluster !== undefined && o.cluster !== "local" && o.cluster !== "queued" &&
    !(Number.isSafeInteger(o.cluster) && (o.cluster as number) >= 0)
  ) {
    return refuse("malformed cluster state");
  }
  const obj = fromWire(o as unknown as WireObject, fd);
  if (obj.name === "" || !isPrintableName(obj.name)) {
    return refuse("name breaks the name rule (empty, control bytes or invalid UTF-8)");
  }
  for (const job of [obj.owner, obj.allowed]) {
    if (job !== null && (job === "" || !isPrintableName(job))) {
      return refuse(
        "job id breaks the name rule (empty, control bytes or invalid UTF-8)",
        obj.name,
      );
    }
  }
  const info = inspectSealedFd(fd, BigInt(obj.size));
  if (isFdProblem(info)) return refuse(fdRejectionText(info, BigInt(obj.size), strerror), obj.name);
  return obj;
}

/** Type guard for the refusal side of {@link admitObject}. */
export function isRefused(r: StoredObject | Refused): r is Refused {
  return "reason" in r;
}

/**
 * Verify the digest of every recovered object, one at a time, before the store takes any.
 * Objects whose descriptor does not hash to their recorded digest are closed and refused.
 *
 * @param objects objects that passed {@link admitObject}
 * @param digest the broker's hash function (inline or on a Worker)
 */
export async function verifyRecovered(
  objects: readonly StoredObject[],
  digest: (fd: number, size: number) => HashOutcome | Promise<HashOutcome>,
): Promise<{ kept: StoredObject[]; refused: Refused[] }> {
  const kept: StoredObject[] = [];
  const refused: Refused[] = [];
  for (const obj of objects) {
    const a = await digest(obj.fd, obj.size);
    if ("digest" in a && a.digest === obj.digest) {
      kept.push(obj);
      continue;
    }
    closeQuietly(obj.fd);
    refused.push({
      id: obj.id,
      name: obj.name,
      reason: "error" in a
        ? `digest verification after recovery failed (${a.error})`
        : "digest mismatch after recovery",
    });
  }
  return { kept, refused };
}
