/**
 * Byte strings: the broker keeps names, job ids and digests as "binary" strings whose character
 * codes are the raw bytes (latin1), so any byte sequence survives exactly and compares by bytes.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/** Bytes to a binary string (one character per byte). */
export function toBinary(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("latin1");
}

/** A binary string back to its bytes. */
export function fromBinary(s: string): Uint8Array {
  const b = Buffer.from(s, "latin1");
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A JavaScript string as UTF-8 bytes. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** UTF-8 bytes as a JavaScript string (invalid sequences become U+FFFD). */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** A JavaScript string as a binary string of its UTF-8 bytes. */
export function utf8Binary(s: string): string {
  return toBinary(encoder.encode(s));
}
