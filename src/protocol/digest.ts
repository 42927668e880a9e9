/**
 * The digest string of protocol v1: `sha256:` and 64 lowercase hex digits (71 bytes on the wire,
 * in PUT requests and GET replies). Formatted and checked here only. Pure: no I/O.
 *
 * @module
 */

/**
 * Length of a digest string: `sha256:` and 64 lowercase hex digits.
 *
 * @example
 * ```ts
 * import { digestBytes } from "@memfdbus/memfdbus";
 * import { DIGEST_LEN } from "@memfdbus/memfdbus/protocol";
 * console.log(digestBytes(new Uint8Array()).length === DIGEST_LEN); // true
 * ```
 */
export const DIGEST_LEN = 71;

/**
 * The fixed prefix of a digest string.
 *
 * @example
 * ```ts
 * import { DIGEST_PREFIX } from "@memfdbus/memfdbus/protocol";
 * console.log(DIGEST_PREFIX); // "sha256:"
 * ```
 */
export const DIGEST_PREFIX = "sha256:";

const HEX = "0123456789abcdef";

/**
 * Format a raw 32-byte SHA-256 as a digest string.
 *
 * @example
 * ```ts
 * import { formatDigest } from "@memfdbus/memfdbus/protocol";
 * console.log(formatDigest(new Uint8Array(32))); // sha256:000…0 (64 zeros)
 * ```
 */
export function formatDigest(raw: Uint8Array): string {
  let s = DIGEST_PREFIX;
  for (const b of raw) s += HEX.charAt(b >> 4) + HEX.charAt(b & 15);
  return s;
}

/**
 * A digest string from the 64 lowercase hex digits of a SHA-256 (as node:crypto's
 * `digest("hex")` gives them).
 */
export function digestFromHex(hex: string): string {
  return DIGEST_PREFIX + hex;
}

/**
 * True for `sha256:` followed by exactly 64 lowercase hex digits. Accepts the digest as bytes or
 * as a string of byte values (latin1).
 *
 * @example
 * ```ts
 * import { isValidDigest } from "@memfdbus/memfdbus/protocol";
 * console.log(isValidDigest("sha256:" + "0".repeat(64)), isValidDigest("sha256:" + "F".repeat(64))); // true false
 * ```
 */
export function isValidDigest(digest: Uint8Array | string): boolean {
  if (digest.length !== DIGEST_LEN) return false;
  for (let i = 0; i < DIGEST_LEN; i++) {
    const c = typeof digest === "string" ? digest.charCodeAt(i) : digest[i] ?? 0;
    if (i < DIGEST_PREFIX.length) {
      if (c !== DIGEST_PREFIX.charCodeAt(i)) return false;
    } else if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) {
      return false;
    }
  }
  return true;
}
