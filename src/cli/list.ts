/**
 * `memfdbus list [--job-id JOB] [--socket PATH] [--json] [--cluster]`: print the visible objects,
 * exactly as the broker sends the listing, or with `--json` as an array of
 * `{id, owner, allowed, size, digest, name}` (no owner or allowed job: null). With `--cluster`
 * (a broker started with `--cluster`), the cluster's names instead: the latest version of each,
 * `REVISION host=HOST owner=JOB allowed=JOB SIZE DIGEST NAME`, or with `--json`
 * `{revision, host, owner, allowed, size, digest, name}`.
 *
 * A C broker accepts names with any bytes (this one refuses control bytes): on a terminal the
 * listing's control characters other than tab and newline are shown escaped (`\x1b`), and
 * `--json` reads a line that is not a listing line as the continuation of the name before it (a
 * name holding a newline), so it stays valid JSON instead of failing.
 *
 * @module
 */

import { ProtocolError, UsageError } from "../errors.ts";
import { type ListEntry, parseList } from "../protocol/list.ts";
import {
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  resolveJob,
} from "./args.ts";
import { escapeControls, jsonLine, out } from "./output.ts";

/** Run `list`; returns the exit code. */
export async function listCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, {
    ...CLIENT_FLAGS,
    json: "boolean",
    cluster: "boolean",
  });
  const s = clientDefaults();
  let json = false;
  let cluster = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind === "switch" && it.flag === "--cluster") cluster = true;
    else if (it.kind === "positional") throw new UsageError(`unexpected argument: ${it.text}`);
  }
  const job = resolveJob(s.jobFlag);
  await using client = cliClient(s, job);
  if (cluster) {
    // The cluster's names, latest version each: REVISION host=H owner=J allowed=J SIZE DIGEST NAME.
    const bytes = await client.listCluster();
    if (json) {
      const lines = new TextDecoder().decode(bytes).split("\n").filter((l) => l !== "");
      out(jsonLine(lines.map((l) => {
        const [rev, host, owner, allowed, size, digest, ...name] = l.split("\t");
        const job = (v: string | undefined): string | null =>
          v === undefined || v.endsWith("=-") ? null : v.slice(v.indexOf("=") + 1);
        return {
          revision: Number(rev),
          host: job(host),
          owner: job(owner),
          allowed: job(allowed),
          size: Number(size),
          digest,
          name: name.join("\t"),
        };
      })));
      return 0;
    }
    const shown = Deno.stdout.isTerminal() ? forTerminal(bytes) : bytes;
    let off = 0;
    while (off < shown.length) off += Deno.stdout.writeSync(shown.subarray(off));
    return 0;
  }
  if (json) {
    const entries = parseListJoined(await client.listText());
    out(jsonLine(entries.map((e) => ({
      id: e.id,
      owner: e.owner,
      allowed: e.allowed,
      size: e.size,
      digest: e.digest,
      name: e.name,
    }))));
    return 0;
  }
  const raw = await client.listRaw();
  const text = Deno.stdout.isTerminal() ? forTerminal(raw) : raw;
  let off = 0;
  while (off < text.length) off += Deno.stdout.writeSync(text.subarray(off));
  return 0;
}

/** The listing with its control characters other than tab and newline escaped. */
function forTerminal(bytes: Uint8Array): Uint8Array {
  return new TextEncoder().encode(escapeControls(new TextDecoder().decode(bytes), "\t\n"));
}

/**
 * {@link parseList}, reading a line that is not a listing line as the rest of the name before it
 * (a C broker's name may hold a newline). A first line that is not a listing line still fails.
 */
export function parseListJoined(text: string): ListEntry[] {
  const out: ListEntry[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let entry: ListEntry | undefined;
    try {
      entry = parseList(line)[0];
    } catch (e) {
      const last = out.at(-1);
      if (!(e instanceof ProtocolError) || last === undefined) throw e;
      out[out.length - 1] = { ...last, name: `${last.name}\n${line}` };
      continue;
    }
    if (entry !== undefined) out.push(entry);
  }
  return out;
}
