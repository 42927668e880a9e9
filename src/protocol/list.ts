/**
 * The LIST reply body: one line per visible object, in ascending id order, six tab-separated
 * columns `ID owner=JOB allowed=JOB SIZE DIGEST NAME` and a newline (`-` for no job). The name is
 * the last column and may itself hold tabs. The broker formats lines with {@link formatListLine};
 * the client parses the body with {@link parseList}. Pure: no I/O.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";

/**
 * One line of a LIST reply, parsed.
 *
 * @example The total size of what the caller may see
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const entries = await client.list();
 * console.log(entries.reduce((sum, e) => sum + e.size, 0));
 * ```
 */
export interface ListEntry {
  /** Object id. */
  readonly id: bigint;
  /** Owner job, or null. */
  readonly owner: string | null;
  /** Allowed job, or null. */
  readonly allowed: string | null;
  /** Size in bytes. */
  readonly size: number;
  /** Digest string. */
  readonly digest: string;
  /** Object name. */
  readonly name: string;
}

/** What one LIST line shows of an object (the broker's strings are binary strings). */
export interface ListLineFields {
  /** Object id. */
  readonly id: number | bigint;
  /** Owner job, or null (shown as `-`). */
  readonly owner: string | null;
  /** Allowed job, or null (shown as `-`). */
  readonly allowed: string | null;
  /** Size in bytes. */
  readonly size: number | bigint;
  /** Digest string. */
  readonly digest: string;
  /** Name. */
  readonly name: string;
}

/**
 * One LIST line, newline included, exactly as the C broker writes it.
 *
 * @example
 * ```ts
 * import { formatListLine } from "@memfdbus/memfdbus/protocol";
 * const digest = "sha256:" + "0".repeat(64);
 * const line = formatListLine({ id: 7, owner: "trainer", allowed: null, size: 1024, digest, name: "m" });
 * console.log(JSON.stringify(line)); // "7\towner=trainer\tallowed=-\t1024\tsha256:000…\tm\n"
 * ```
 */
export function formatListLine(o: ListLineFields): string {
  return `${o.id}\towner=${o.owner ?? "-"}\tallowed=${
    o.allowed ?? "-"
  }\t${o.size}\t${o.digest}\t${o.name}\n`;
}

/**
 * The length in bytes of {@link formatListLine}'s line for `o` (its strings are binary strings,
 * one character per byte), computed without building the line.
 *
 * @example
 * ```ts
 * import { formatListLine, listLineLength } from "@memfdbus/memfdbus/protocol";
 * const o = { id: 7, owner: null, allowed: null, size: 3, digest: "sha256:00", name: "m" };
 * console.log(listLineLength(o) === formatListLine(o).length); // true
 * ```
 */
export function listLineLength(o: ListLineFields): number {
  // "\towner=" 7, "\tallowed=" 9, three more tabs and the newline 4.
  return decimalLength(o.id) + 7 + (o.owner?.length ?? 1) + 9 + (o.allowed?.length ?? 1) + 4 +
    decimalLength(o.size) + o.digest.length + o.name.length;
}

function decimalLength(n: number | bigint): number {
  if (typeof n === "number" && n >= 0 && n < 1e15) {
    let d = 1;
    for (let v = n; v >= 10; v = Math.floor(v / 10)) d++;
    return d;
  }
  return String(n).length;
}

const DECIMAL = /^[0-9]{1,20}$/;
const U64_MAX = 0xffffffffffffffffn;

/**
 * Parse LIST text into entries (a name may itself contain tabs; it is the last column). A line
 * with fewer than six columns, or an id or size that is not a decimal number in range, is a
 * {@link ProtocolError}.
 *
 * @example
 * ```ts
 * import { parseList } from "@memfdbus/memfdbus/protocol";
 * const digest = "sha256:" + "0".repeat(64);
 * const [entry] = parseList(`7\towner=trainer\tallowed=-\t1024\t${digest}\tmodel.bin\n`);
 * console.log(entry?.id, entry?.owner, entry?.allowed, entry?.name); // 7n trainer null model.bin
 * ```
 */
export function parseList(text: string): ListEntry[] {
  const out: ListEntry[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const cols = line.split("\t");
    if (cols.length < 6) throw malformed(line);
    const [id, owner, allowed, size, digest] = cols as [string, string, string, string, string];
    if (!DECIMAL.test(id) || !DECIMAL.test(size)) throw malformed(line);
    const idValue = BigInt(id);
    const sizeValue = Number(size);
    if (idValue > U64_MAX || !Number.isSafeInteger(sizeValue)) throw malformed(line);
    const ownerValue = owner.startsWith("owner=") ? owner.slice(6) : owner;
    const allowedValue = allowed.startsWith("allowed=") ? allowed.slice(8) : allowed;
    out.push({
      id: idValue,
      owner: ownerValue === "-" ? null : ownerValue,
      allowed: allowedValue === "-" ? null : allowedValue,
      size: sizeValue,
      digest,
      name: cols.slice(5).join("\t"),
    });
  }
  return out;
}

function malformed(line: string): ProtocolError {
  return new ProtocolError(`Malformed list line "${line}"`);
}
