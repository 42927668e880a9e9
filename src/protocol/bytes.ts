/**
 * Byte strings: the broker keeps names, job ids and digests as "binary" strings whose character
 * codes are the raw bytes (latin1), so any byte sequence survives exactly and compares by bytes.
 *
 * @module
 */

const CHUNK = 8192;

/** Bytes to a binary string (one character per byte). */
export function toBinary(bytes: Uint8Array): string {
  if (bytes.length <= CHUNK) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  let s = "";
  for (let i = 0; i < bytes.length; i += CHUNK) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK) as unknown as number[]);
  }
  return s;
}

/** A binary string back to its bytes (each character's code is one byte). */
export function fromBinary(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
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
