/**
 * A long-running Deno app on the bus: a small HTTP server that keeps one {@link Client} open for
 * its whole life and serves the newest version of a name. Publish a new version and the next
 * request gets it; the digest is the ETag, so unchanged versions answer 304.
 *
 * From the repository root, with a broker running:
 *
 * ```sh
 * deno run --allow-ffi --allow-env=MEMFDBUS_JOB_ID --allow-net=127.0.0.1 examples/serve.ts model.bin
 * curl -i http://127.0.0.1:8000/             # the newest "model.bin"
 * curl -i http://127.0.0.1:8000/other-name   # any other name
 * ```
 *
 * Options: `--socket PATH`, `--port N` (8000; 0 picks a free port). The first line on stdout is
 * `serving http://127.0.0.1:PORT/`. SIGINT or SIGTERM stops the server, then closes the client.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BrokerError, type BusObject, Client, ErrnoError, Status, TimeoutError } from "../mod.ts";

const CHUNK = 256 * 1024;

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { socket: { type: "string" }, port: { type: "string", default: "8000" } },
});
const [defaultName] = positionals;
const port = Number(values.port);
if (defaultName === undefined || !(Number.isInteger(port) && port >= 0 && port < 65536)) {
  console.error("usage: serve.ts [--socket PATH] [--port N] NAME");
  Deno.exit(2);
}

/** One client for the server's lifetime: it keeps connections to the broker open between requests. */
const client = new Client(values.socket === undefined ? {} : { socket: values.socket });

/**
 * The object's bytes as a stream read straight from its mapping. Each chunk is copied once, into
 * the response, and the object is closed after the last chunk (or when the client goes away).
 */
function body(obj: BusObject): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(controller): void {
      if (off >= obj.size) {
        obj.close();
        controller.close();
        return;
      }
      const end = Math.min(off + CHUNK, obj.size);
      controller.enqueue(obj.view.slice(off, end));
      off = end;
    },
    cancel(): void {
      obj.close();
    },
  });
}

async function handle(req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  const path = decodeURIComponent(new URL(req.url).pathname.slice(1));
  const name = path === "" ? defaultName ?? "" : path;
  let obj: BusObject;
  try {
    obj = await client.get({ name });
  } catch (e) {
    if (e instanceof BrokerError && e.status === Status.NOT_FOUND) {
      return new Response(`nothing published as "${name}"\n`, { status: 404 });
    }
    if (e instanceof BrokerError || e instanceof ErrnoError || e instanceof TimeoutError) {
      return new Response(`bus unavailable: ${e.message}\n`, { status: 503 });
    }
    throw e;
  }
  const headers = {
    etag: `"${obj.digest}"`,
    "content-type": "application/octet-stream",
    "x-memfdbus-id": String(obj.id),
  };
  if (req.headers.get("if-none-match") === headers.etag) {
    obj.close();
    return new Response(null, { status: 304, headers });
  }
  const full = { ...headers, "content-length": String(obj.size) };
  if (req.method === "HEAD") {
    obj.close();
    return new Response(null, { headers: full });
  }
  return new Response(body(obj), { headers: full });
}

const server = Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen: ({ port }): void => console.log(`serving http://127.0.0.1:${port}/`),
}, handle);

const stop = (): void => {
  void server.shutdown();
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
await server.finished;
Deno.removeSignalListener("SIGINT", stop);
Deno.removeSignalListener("SIGTERM", stop);
client.close();
