/**
 * The rule for names and job ids, and a JSON quoting that stays valid whatever bytes it is given.
 *
 * Names and job ids are printed in many places: the tab-separated LIST text, `list --json`, `stat`,
 * the JSONL audit log, the `MEMFDBUS_NAME` environment variable of `exec`, terminals. A name
 * holding a TAB or a newline forges LIST lines; an escape byte rewrites a terminal; invalid UTF-8
 * cannot be represented faithfully in JSON. So a name or job id must be valid UTF-8 without
 * control characters (bytes 0x00-0x1f and 0x7f, and the C1 controls U+0080-U+009F, which a terminal
 * in UTF-8 mode may run as escape sequences: U+009B is CSI). The broker refuses any other at PUT
 * (names, owner and allowed job ids) and in the job id of every request. Pure: no I/O.
 *
 * @module
 */

/** What a rule violation is about, as it is named in the refusal text. */
export type NameKind = "object name" | "job id" | "allowed job id";

function hex(b: number): string {
  return "0x" + b.toString(16).padStart(2, "0");
}

/**
 * Length of the valid UTF-8 sequence starting at `i` (bytes read through `at`), or 0 when the bytes there are not one
 * (overlong forms, surrogates and code points past U+10FFFF are invalid).
 */
export function utf8Length(at: (i: number) => number, i: number, end: number): number {
  const b0 = at(i);
  if (b0 < 0x80) return 1;
  let n: number;
  let min: number;
  let cp: number;
  if (b0 >= 0xc2 && b0 <= 0xdf) [n, min, cp] = [2, 0x80, b0 & 0x1f];
  else if (b0 >= 0xe0 && b0 <= 0xef) [n, min, cp] = [3, 0x800, b0 & 0x0f];
  else if (b0 >= 0xf0 && b0 <= 0xf4) [n, min, cp] = [4, 0x10000, b0 & 0x07];
  else return 0;
  if (i + n > end) return 0;
  for (let k = 1; k < n; k++) {
    const b = at(i + k);
    if ((b & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

/**
 * Whether the valid UTF-8 sequence at `i` is a C1 control character (U+0080-U+009F: 0xc2 then
 * 0x80-0x9f).
 */
export function isC1(at: (i: number) => number, i: number): boolean {
  return at(i) === 0xc2 && at(i + 1) >= 0x80 && at(i + 1) <= 0x9f;
}

/**
 * Why `bytes` cannot be a name or job id under the rule above, or null when they can. NUL bytes
 * and empty values have their own (C broker) texts and are checked before this.
 *
 * @example
 * ```ts
 * import { nameProblem } from "@memfdbus/memfdbus/protocol";
 * const enc = new TextEncoder();
 * console.log(nameProblem(enc.encode("sensor/température"), "object name")); // null
 * console.log(nameProblem(enc.encode("a\nb"), "object name"));
 * // object name must not contain control byte 0x0a (at byte 1)
 * ```
 *
 * @param bytes the value as received
 * @param kind what it is, for the text
 */
export function nameProblem(bytes: Uint8Array, kind: NameKind): string | null {
  const at = (i: number): number => bytes[i] ?? 0;
  for (let i = 0; i < bytes.length;) {
    const b = at(i);
    if (b < 0x20 || b === 0x7f) {
      return `${kind} must not contain control byte ${hex(b)} (at byte ${i})`;
    }
    const n = utf8Length(at, i, bytes.length);
    if (n === 0) return `${kind} must be valid UTF-8 (invalid byte ${hex(b)} at byte ${i})`;
    if (isC1(at, i)) {
      const code = (at(i + 1) & 0xff).toString(16).padStart(4, "0");
      return `${kind} must not contain control character U+${code} (at byte ${i})`;
    }
    i += n;
  }
  return null;
}

/**
 * Whether a binary string (one character per byte) obeys the rule: valid UTF-8, no control
 * bytes. Used for values that did not come through a PUT (a shadow's recovered objects).
 *
 * @example
 * ```ts
 * import { isPrintableName } from "@memfdbus/memfdbus/protocol";
 * console.log(isPrintableName("job-1"), isPrintableName("a\tb")); // true false
 * ```
 */
export function isPrintableName(binary: string): boolean {
  const at = (i: number): number => binary.charCodeAt(i) & 0xff;
  for (let i = 0; i < binary.length;) {
    const b = at(i);
    if (b < 0x20 || b === 0x7f || binary.charCodeAt(i) > 0xff) return false;
    const n = utf8Length(at, i, binary.length);
    if (n === 0 || isC1(at, i)) return false;
    i += n;
  }
  return true;
}
