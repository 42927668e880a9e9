/**
 * The epoll wrapper on the real kernel: a failing epoll_wait surfaces as an ErrnoError, on the
 * calling thread (`poll`) and from the pool thread (`wait`), instead of reading as "no events"
 * (a broker loop would then spin forever without a word).
 */

import { assertEquals, ok } from "../support/assert.ts";
import { ErrnoError } from "../../src/errors.ts";
import { closeQuietly, cstr, libc } from "../../src/ffi.ts";
import { O_CLOEXEC, O_RDONLY } from "../../src/sys/linux.ts";
import { Poller } from "../../src/sys/poller.ts";

/** The descriptors of this process that are epoll instances. */
function epolls(): Set<number> {
  const out = new Set<number>();
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`) === "anon_inode:[eventpoll]") {
        out.add(Number(e.name));
      }
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

/** A poller and its epoll descriptor (found as the one epoll that appeared with it). */
function pollerWithFd(): [Poller, number] {
  const before = epolls();
  const p = new Poller();
  const fresh = [...epolls()].filter((fd) => !before.has(fd));
  assertEquals(fresh.length, 1, `one new epoll descriptor, saw ${fresh}`);
  return [p, fresh[0] ?? -1];
}

/** Put /dev/null where the epoll descriptor was, as a hostile or buggy neighbour could. */
function breakFd(fd: number): void {
  const nul = libc.symbols.open(cstr("/dev/null"), O_RDONLY | O_CLOEXEC, 0);
  ok(nul >= 0);
  ok(libc.symbols.dup3(nul, fd, O_CLOEXEC) === fd);
  closeQuietly(nul);
}

Deno.test("Poller.wait and Poller.poll report a broken epoll descriptor as ErrnoError", async () => {
  const [p, fd] = pollerWithFd();
  try {
    assertEquals(await p.wait(0), []);
    breakFd(fd);
    const waited = await p.wait(1000).then((events) => events, (e: unknown) => e);
    ok(waited instanceof ErrnoError, `wait: ${Deno.inspect(waited)}`);
    assertEquals([waited.syscall, waited.code], ["epoll_wait", "EINVAL"]);
    let polled: unknown = null;
    try {
      p.poll([], 0);
    } catch (e) {
      polled = e;
    }
    ok(polled instanceof ErrnoError, `poll: ${Deno.inspect(polled)}`);
    assertEquals([polled.syscall, polled.code], ["epoll_wait", "EINVAL"]);
  } finally {
    p.close();
  }
});

Deno.test("Poller.wake ends a wait with no events, and a closed poller's wait returns none", async () => {
  const p = new Poller();
  const pending = p.wait(-1);
  p.wake();
  assertEquals(await pending, []);
  p.close();
  assertEquals(await p.wait(-1), []);
});
