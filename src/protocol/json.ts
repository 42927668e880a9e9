/**
 * JSON strings as the C broker writes them (audit records, the STAT body). Names and job ids are
 * binary strings (one character per byte), and the escaping works on bytes. Pure: no I/O.
 *
 * @module
 */

/**
 * Escape a binary string as a JSON string the way the C broker does: `\\ \" \b \f \n \r \t`,
 * other bytes below 0x20 as `\u00xx`, every other byte raw, and the string ends at the first NUL.
 */
export function jsonString(s: string | null): string {
  if (s === null) return "null";
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0) break;
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) {
      out += s[i];
      continue;
    }
    switch (c) {
      case 0x5c:
        out += "\\\\";
        break;
      case 0x22:
        out += '\\"';
        break;
      case 0x08:
        out += "\\b";
        break;
      case 0x0c:
        out += "\\f";
        break;
      case 0x0a:
        out += "\\n";
        break;
      case 0x0d:
        out += "\\r";
        break;
      case 0x09:
        out += "\\t";
        break;
      default:
        out += "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
    }
  }
  return out + '"';
}
