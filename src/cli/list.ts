/**
 * `memfdbus list [--job-id JOB] [--socket PATH] [--json] [--cluster]`: print the visible objects,
 * exactly as the broker sends the listing, or with `--json` as an array of
 * `{id, owner, allowed, size, digest, name}` (no owner or allowed job: null). With `--cluster`
 * (a broker started with `--cluster`), the cluster's names instead: the latest version of each,
 * `REVISION host=HOST owner=JOB allowed=JOB SIZE DIGEST NAME`, or with `--json`
 * `{revision, host, owner, allowed, size, digest, name}`.
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import {
  CLI_SYNC_WAIT_US,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  resolveJob,
} from "./args.ts";
import { jsonLine, out } from "./output.ts";

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
  await using client = new Client({
    socket: s.socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
    timeoutMs: s.timeoutMs,
  });
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
    let off = 0;
    while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
    return 0;
  }
  if (json) {
    const entries = await client.list();
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
  const text = await client.listRaw();
  let off = 0;
  while (off < text.length) off += Deno.stdout.writeSync(text.subarray(off));
  return 0;
}
