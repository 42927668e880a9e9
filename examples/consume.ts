/**
 * Wait for a name to be published, map its newest version and read it in place: the bytes are
 * never copied out of the sealed memfd. Prints `ID SIZE DIGEST NAME`, with the digest recomputed
 * from the mapping and checked against the broker's; `--cat` also writes the contents to stdout
 * straight from the mapping.
 *
 * Start it before or after the publisher (`examples/publish.ts`), from the repository root:
 *
 * ```sh
 * deno run --allow-ffi --allow-env=MEMFDBUS_JOB_ID examples/consume.ts model.bin
 * deno run --allow-ffi --allow-env=MEMFDBUS_JOB_ID examples/consume.ts --wait-ms 5000 --cat demo | wc -c
 * ```
 *
 * Options: `--socket PATH`, `--wait-ms N` (how long to wait for the name; 60000 by default),
 * `--cat`. Exits with 1 when nothing was published in time or the contents do not match.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BrokerError, Client, digestBytes, Status, TimeoutError } from "../mod.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    socket: { type: "string" },
    "wait-ms": { type: "string", default: "60000" },
    cat: { type: "boolean", default: false },
  },
});
const [name] = positionals;
const waitMs = Number(values["wait-ms"]);
if (name === undefined || positionals.length > 1 || !(Number.isSafeInteger(waitMs) && waitMs > 0)) {
  console.error("usage: consume.ts [--socket PATH] [--wait-ms N] [--cat] NAME");
  Deno.exit(2);
}

await using client = new Client(values.socket === undefined ? {} : { socket: values.socket });
let code = 0;
try {
  // The broker parks the request until the name exists (or the wait ends).
  using obj = await client.get({ name }, { wait: waitMs });
  const view = obj.view; // a read-only shared mapping of the memfd: no copy
  const digest = digestBytes(view);
  if (values.cat) {
    for (let off = 0; off < view.length;) off += Deno.stdout.writeSync(view.subarray(off));
  } else {
    console.log(`${obj.id} ${obj.size} ${digest} ${obj.name}`);
  }
  if (digest !== obj.digest) {
    console.error(`digest mismatch: broker said ${obj.digest}, the mapping holds ${digest}`);
    code = 1;
  }
  // Leaving the block unmaps the view (detaching `view`) and closes the descriptor.
} catch (e) {
  // A wait that runs out is a TimeoutError; a missing object without a wait, NOT_FOUND.
  if (!(e instanceof TimeoutError || (e instanceof BrokerError && e.status === Status.NOT_FOUND))) {
    throw e;
  }
  console.error(`nothing was published as "${name}" within ${waitMs} ms`);
  code = 1;
}
if (code !== 0) Deno.exitCode = code;
