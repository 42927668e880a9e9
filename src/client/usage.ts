/**
 * The client's USAGE request (an extension): one exchange, the JSON body parsed. A broker that
 * does not know the command (a C broker) makes it throw {@link UnsupportedError}.
 *
 * @module
 */

import { fromUtf8 } from "../protocol/bytes.ts";
import { BrokerError, Status, UnsupportedError } from "../errors.ts";
import { closeAll } from "../sys/unix_socket.ts";
import { Cmd, encodeHeader, Text } from "../protocol/wire.ts";
import { parseUsage, type UsageReport } from "../protocol/usage.ts";
import type { RequestLink } from "./request.ts";

/** One USAGE exchange as `job` (empty: none). */
export async function usageRequest(link: RequestLink, job: Uint8Array): Promise<UsageReport> {
  const header = encodeHeader({ cmd: Cmd.USAGE, jobLen: job.length });
  let r;
  try {
    r = await link.requester.exchange(
      [[header, "send usage request"], [job, "send job id"]],
      [],
      link.timeoutMs,
    );
  } catch (e) {
    if (
      e instanceof BrokerError && e.status === Status.BAD_REQUEST &&
      e.text === Text.unknownCommand
    ) {
      throw new UnsupportedError("usage");
    }
    throw e;
  }
  closeAll(r.reply.fds);
  try {
    const body = await r.conn.recvExact(
      r.reply.header.textLen,
      performance.now() + link.timeoutMs,
      "receive usage",
    );
    closeAll(body.fds);
    const report = parseUsage(fromUtf8(body.bytes));
    r.done();
    return report;
  } catch (e) {
    r.fail();
    throw e;
  }
}
