# A memfdbus peer of another uid for tests/security_*_test.ts, run under setpriv as uid 65534.
# It reads one JSON command per line on stdin and answers one JSON line on stdout:
#   {"op": "hold"}                        connect and keep the connection open, send nothing
#   {"op": "send", "req": HEX, "data": HEX or null, "read": true|false}
#       connect, send the request bytes (with a sealed memfd holding DATA when given) and,
#       with read, wait for the reply header and its text: {"status": N, "text": "..."};
#       without, keep the connection open: {"sent": true}
#       ({"sent": true, "conn": N}, N numbering the agent's connections from 1);
#       with "sparse": SIZE the memfd is grown to SIZE bytes of holes before it is sealed
#   {"op": "peek", "conn": N}             does connection N have reply bytes to read? {"ready": b}
#       with "inspect": true as well, a descriptor in the reply is looked at and closed:
#       {"status": N, "fd": {"uid": ITS OWNER UID, "link": "/memfd:NAME (deleted)"} or null}
#   {"op": "drain", "conn": N}            read connection N's reply header and its whole text:
#       {"status": N, "bytes": LENGTH, "sha256": HEX} (LIST replies of many MiB are fine)
# Connections stay open until the agent exits (stdin closes).
import hashlib, json, os, select, socket, struct, sys, fcntl

path = sys.argv[1]
held = []
SEALS = 1 | 2 | 4 | 8  # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


def read_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            break
        out += b
    return out


def drain(s):
    header = read_exact(s, 48)
    if len(header) < 48:
        return {"status": -1, "bytes": 0, "sha256": ""}
    status = struct.unpack_from("<I", header, 8)[0]
    left = struct.unpack_from("<I", header, 36)[0]
    digest = hashlib.sha256()
    total = 0
    buf = bytearray(1 << 20)
    while left > 0:
        n = s.recv_into(buf, min(left, len(buf)))
        if n == 0:
            break
        digest.update(memoryview(buf)[:n])
        total += n
        left -= n
    return {"status": status, "bytes": total, "sha256": digest.hexdigest()}


for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "peek":
        r, _, _ = select.select([held[cmd["conn"] - 1]], [], [], 0)
        print(json.dumps({"ready": len(r) > 0}), flush=True)
        continue
    if cmd["op"] == "drain":
        print(json.dumps(drain(held[cmd["conn"] - 1])), flush=True)
        continue
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    held.append(s)
    if cmd["op"] == "hold":
        print(json.dumps({"held": len(held)}), flush=True)
        continue
    req = bytes.fromhex(cmd["req"])
    data = cmd.get("data")
    if data is not None:
        fd = os.memfd_create("agent", os.MFD_ALLOW_SEALING)
        os.write(fd, bytes.fromhex(data))
        if cmd.get("sparse"):
            os.ftruncate(fd, cmd["sparse"])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        socket.send_fds(s, [req], [fd])
        os.close(fd)
    else:
        s.sendall(req)
    if not cmd.get("read"):
        print(json.dumps({"sent": True, "conn": len(held)}), flush=True)
        continue
    if cmd.get("inspect"):
        msg, anc, _, _ = s.recvmsg(48, socket.CMSG_SPACE(16))
        header = msg + read_exact(s, 48 - len(msg))
        fds = [f for _, _, d in anc for f in struct.unpack("<%di" % (len(d) // 4), d)]
        seen = None
        if fds:
            st = os.fstat(fds[0])
            seen = {"uid": st.st_uid, "link": os.readlink("/proc/self/fd/%d" % fds[0])}
        for f in fds:
            os.close(f)
        print(json.dumps({"status": struct.unpack_from("<I", header, 8)[0], "fd": seen}), flush=True)
        continue
    header = read_exact(s, 48)
    if len(header) < 48:
        print(json.dumps({"status": -1, "text": "closed"}), flush=True)
        continue
    status = struct.unpack_from("<I", header, 8)[0]
    text_len = struct.unpack_from("<I", header, 36)[0]
    text = read_exact(s, text_len).decode("utf-8", "replace")
    print(json.dumps({"status": status, "text": text}), flush=True)
