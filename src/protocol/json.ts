/**
 * JSON strings as the broker writes them (audit records, the STAT body). Names and job ids are
 * binary strings (one character per byte), and the escaping works on bytes. Pure: no I/O.
 *
 * @module
 */

import { isC1, utf8Length } from "./names.ts";

const ESCAPES: Record<number, string> = {
  0x08: "\\b",
  0x09: "\\t",
  0x0a: "\\n",
  0x0c: "\\f",
  0x0d: "\\r",
  0x22: '\\"',
  0x5c: "\\\\",
};

/** True when every character is printable ASCII other than `"` and `\\` (nothing to escape). */
function plain(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c >= 0x7f || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/**
 * A JSON string literal for a binary string (one character per byte), itself a binary string of
 * UTF-8 bytes. As in the C broker: `\\ \" \b \f \n \r \t`, other bytes below 0x20 as `\u00xx`,
 * valid UTF-8 kept raw, and the value ends at the first NUL. Unlike the C broker, DEL (0x7f) and
 * the C1 controls (U+0080-U+009F) are escaped too and every byte that is not part of valid UTF-8
 * becomes `\ufffd`, so the result is
 * valid JSON on one line whatever bytes the value holds (the C broker writes such bytes raw,
 * which makes the line invalid JSON). Characters above U+00FF (from JavaScript texts) are written
 * as `\u` escapes. `null` gives `null`.
 *
 * @example
 * ```ts ignore
 * jsonString("a\nb\xff"); // '"a\\nb\\ufffd"'
 * ```
 */
export function jsonString(s: string | null): string {
  if (s === null) return "null";
  // Most values (digests, ordinary names and job ids) are printable ASCII with nothing to escape.
  if (plain(s)) return '"' + s + '"';
  const at = (i: number): number => s.charCodeAt(i);
  const byteAt = (i: number): number => at(i) > 0xff ? 0 : at(i);
  let out = '"';
  for (let i = 0; i < s.length;) {
    const c = at(i);
    if (c === 0) break;
    if (c > 0xff) {
      out += "\\u" + c.toString(16).padStart(4, "0");
      i++;
      continue;
    }
    const esc = ESCAPES[c];
    if (esc !== undefined) {
      out += esc;
      i++;
      continue;
    }
    if (c < 0x20 || c === 0x7f) {
      out += "\\u00" + c.toString(16).padStart(2, "0");
      i++;
      continue;
    }
    if (c < 0x80) {
      out += s[i];
      i++;
      continue;
    }
    const n = utf8Length(byteAt, i, s.length);
    if (n === 0) {
      out += "\\ufffd";
      i++;
      continue;
    }
    if (isC1(byteAt, i)) {
      // A C1 control (U+0080-U+009F) would be a terminal escape for whoever tails the log.
      out += "\\u00" + byteAt(i + 1).toString(16);
      i += 2;
      continue;
    }
    out += s.slice(i, i + n);
    i += n;
  }
  return out + '"';
}

/**
 * A `JSON.parse` reviver that reads the numbers under `keys` from their source text as bigints
 * (a time in ns or a 64-bit limit exceeds 2^53); a non-integer there reads as null.
 */
export function exactIntegers(
  keys: ReadonlySet<string>,
): (this: unknown, key: string, value: unknown, context?: { source?: string }) => unknown {
  return function (
    this: unknown,
    key: string,
    value: unknown,
    context?: { source?: string },
  ): unknown {
    if (!keys.has(key) || typeof value !== "number") return value;
    const source = context?.source;
    return source !== undefined && /^[0-9]+$/.test(source) ? BigInt(source) : null;
  };
}

/** True for a count: a safe, non-negative integer. */
export function isCount(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}
