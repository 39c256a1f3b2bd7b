#!/usr/bin/env python3
"""A from-the-doc avm peer (docs/protocol.md, version 2), stdlib only.

Written from docs/protocol.md alone, without reading avm's source, to
check that the page is enough to write a client in another language.
`all` builds nothing: run `cargo build -p avm-node` first (or point
AVM_NODE at a binary). It starts its nodes on free loopback ports with a
key file of its own, plays a peer against a real node (handshake,
snapshot, calls, keepalive, malformed frames), then plays beta hosting
`pong` against the real orchestrator, and exits 1 if any check failed.
Logs go to target/pyclient/logs. `.ci/run` runs it after `cargo test`.

Usage:
  client.py all                      start nodes itself, run every check, kill nodes
  client.py dial PORT KEYFILE        steps 1-3 against a running node on 127.0.0.1:PORT
  client.py malformed PORT KEYFILE   step 5 against a running node
  client.py serve KEYFILE PORTFILE   step 4: listen, play beta hosting `pong`
                                     (writes the chosen port into PORTFILE)
"""
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The node under test: $AVM_NODE, or the repository's debug build.
NODE = os.environ.get("AVM_NODE") or os.path.join(HERE, "..", "..", "target", "debug", "avm-node")
# Logs and the key file of `all` go to a scratch directory, not the source tree.
WORK = os.environ.get("AVM_PYCLIENT_DIR") or os.path.join(HERE, "..", "..", "target", "pyclient")
T0 = time.time()
QUIET_TYPES = {"ping", "pong"}  # printed only the first few times


FAILURES = []


def log(*a):
    line = " ".join(str(x) for x in a)
    if "!!" in line:
        FAILURES.append(line)
    print("[%6.2f]" % (time.time() - T0), line, flush=True)


# ---------------------------------------------------------------- key / auth

def read_key(path):
    # "The key is the file's bytes with trailing whitespace removed."
    with open(path, "rb") as f:
        return f.read().rstrip(b" \t\n\r\x0c")


def make_key_file(path):
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.close(fd)
    os.chmod(path, 0o600)
    return path


def side(machine, prefix, nonce_hex):
    m = machine.encode("utf-8")
    return struct.pack(">H", len(m)) + m + struct.pack(">H", prefix) + bytes.fromhex(nonce_hex)


def proof(key, role, dialler_hello, acceptor_hello):
    t = (b"avm cluster proof v2" + role
         + side(dialler_hello["machine_id"], dialler_hello["node_prefix"], dialler_hello["nonce"])
         + side(acceptor_hello["machine_id"], acceptor_hello["node_prefix"], acceptor_hello["nonce"]))
    return hmac.new(key, t, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- framing

class Closed(Exception):
    pass


class Framed:
    def __init__(self, sock, label):
        self.sock = sock
        self.label = label
        self.buf = b""
        self.wlock = threading.Lock()
        self.seen = {}

    def _show(self, arrow, obj):
        t = obj.get("type") if isinstance(obj, dict) else None
        n = self.seen[(arrow, t)] = self.seen.get((arrow, t), 0) + 1
        if t in QUIET_TYPES and n > 2:
            return
        log(self.label, arrow, json.dumps(obj, separators=(",", ":")))

    def send(self, obj):
        data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        self.send_raw(struct.pack(">I", len(data)) + data)
        self._show(">>", obj)

    def send_raw(self, b):
        with self.wlock:
            self.sock.sendall(b)

    def recv(self):
        """Next frame as a dict; raises Closed on EOF."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    if payload[:1] in (b"\x01", b"\x02"):
                        raise RuntimeError("compact frame received but never offered: %r" % payload[:16])
                    obj = json.loads(payload.decode("utf-8"))
                    self._show("<<", obj)
                    return obj
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError) as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk


# ---------------------------------------------------------------- a peer

class Peer:
    """One authenticated connection, with a reader thread after the handshake."""

    def __init__(self, sock, me, key, dialled, objects=(), names=(), call_handler=None,
                 send_pings=True, answer_pings=True, send_snapshot_end=True):
        self.send_pings, self.answer_pings = send_pings, answer_pings
        self.send_snapshot_end = send_snapshot_end
        self.f = Framed(sock, "[%s]" % me["machine_id"])
        self.me = me
        self.key = key
        self.dialled = dialled
        self.objects = list(objects)  # [(id, behavior)]
        self.names = list(names)      # [(name, id)]
        self.call_handler = call_handler
        self.directory = {}           # id -> (machine, behavior)
        self.node_names = {}
        self.snapshot_end = threading.Event()
        self.snapshot_count = None
        self.pending = {}             # request_id -> [Event, result]
        self.next_rid = 1
        self.rid_lock = threading.Lock()
        self.closed = threading.Event()
        self.close_reason = None
        self.last_rx = time.time()
        self.pings_rx = 0
        self.pongs_rx = 0
        self.other = []
        self.peer_hello = None

    # --- handshake, exactly as "Version 2 / The handshake"
    def handshake(self):
        mine = {"type": "hello", "version": 2, "machine_id": self.me["machine_id"],
                "node_prefix": self.me["node_prefix"], "nonce": secrets.token_hex(32),
                "boot": self.me.get("boot", int(time.time() * 1000) << 6)}
        if mine["boot"] is None:
            del mine["boot"]
        self.f.send(mine)
        theirs = self.f.recv()
        if theirs.get("type") != "hello":
            raise RuntimeError("first frame not hello: %r" % theirs)
        self.peer_hello = theirs
        d, a = (mine, theirs) if self.dialled else (theirs, mine)
        if self.dialled:
            self.f.send({"type": "auth", "proof": proof(self.key, b"D", d, a)})
            m = self.f.recv()
            if m.get("type") != "auth":
                raise RuntimeError("expected auth, got %r" % m)
            want = proof(self.key, b"A", d, a)
            if not hmac.compare_digest(m["proof"], want):
                raise RuntimeError("node's proof does not verify")
            log(self.f.label, "node's acceptor proof verified")
        else:
            m = self.f.recv()
            if m.get("type") != "auth":
                raise RuntimeError("expected auth, got %r" % m)
            want = proof(self.key, b"D", d, a)
            if not hmac.compare_digest(m["proof"], want):
                raise RuntimeError("dialler's proof does not verify")
            log(self.f.label, "node's dialler proof verified")
            self.f.send({"type": "auth", "proof": proof(self.key, b"A", d, a)})
        # lifecycle rule 2 + snapshot section: our own snapshot
        for oid, beh in self.objects:
            self.f.send({"type": "create_notify", "object_id": oid,
                         "machine_id": self.me["machine_id"], "behavior": beh})
        for name, oid in self.names:
            self.f.send({"type": "name_notify", "name": name, "object_id": oid,
                         "machine_id": self.me["machine_id"]})
        if self.send_snapshot_end:
            self.f.send({"type": "snapshot_end", "objects": len(self.objects)})
        threading.Thread(target=self._reader, daemon=True).start()
        if self.send_pings:
            threading.Thread(target=self._keepalive, daemon=True).start()

    def _keepalive(self):
        nonce = 0
        while not self.closed.is_set():
            time.sleep(1.0)
            if self.closed.is_set():
                return
            nonce += 1
            try:
                self.f.send({"type": "ping", "nonce": nonce})
            except OSError:
                return

    def _reader(self):
        try:
            while True:
                m = self.f.recv()
                self.last_rx = time.time()
                t = m.get("type")
                if t == "ping":
                    self.pings_rx += 1
                    if self.answer_pings:
                        self.f.send({"type": "pong", "nonce": m["nonce"]})
                elif t == "pong":
                    self.pongs_rx += 1
                elif t == "create_notify":
                    self.directory[m["object_id"]] = (m["machine_id"], m.get("behavior"))
                elif t == "destroy_notify":
                    self.directory.pop(m["object_id"], None)
                elif t == "name_notify":
                    self.node_names[m["name"]] = m["object_id"]
                elif t == "name_drop":
                    self.node_names.pop(m["name"], None)
                elif t == "snapshot_end":
                    self.snapshot_count = m.get("objects")
                    self.snapshot_end.set()
                elif t == "call_response":
                    p = self.pending.get(m["request_id"])
                    if p is None:
                        log(self.f.label, "!! call_response for unknown request_id", m["request_id"])
                    else:
                        p[1] = m["result"]
                        p[0].set()
                elif t == "call":
                    threading.Thread(target=self._serve_call, args=(m,), daemon=True).start()
                else:
                    self.other.append(m)
        except Closed as e:
            self.close_reason = str(e)
        except Exception as e:  # noqa
            self.close_reason = "reader error: %r" % e
        self.closed.set()
        log(self.f.label, "connection closed:", self.close_reason)

    def _serve_call(self, m):
        try:
            result = self.call_handler(self, m) if self.call_handler else \
                {"Err": "object not found: %d" % m["target"]}
        except Exception as e:  # noqa
            result = {"Err": "client error: %r" % e}
        self.f.send({"type": "call_response", "request_id": m["request_id"], "result": result})

    def call(self, target, inp, sender=0, chain=None, timeout=40):
        with self.rid_lock:
            rid = self.next_rid
            self.next_rid += 1
        ev = threading.Event()
        self.pending[rid] = [ev, None]
        msg = {"type": "call", "request_id": rid, "target": target, "input": inp,
               "sender": sender, "sender_machine": self.me["machine_id"]}
        if chain is not None:
            msg["chain"] = chain
        self.f.send(msg)
        if not ev.wait(timeout):
            raise TimeoutError("no call_response for request %d" % rid)
        return self.pending.pop(rid)[1]


# ---------------------------------------------------------------- PingPong, from the doc

def L(*xs):
    return {"List": list(xs)}


def pingpong_handler(self_kind, my_ids):
    """Returns a call handler playing `ping` or `pong` (section "The PingPong behaviors")."""
    def handler(peer, m):
        if m["target"] not in my_ids:
            return {"Err": "object not found: %d" % m["target"]}
        me = m["target"]
        inp = m["input"]
        try:
            tag, count, mx, pong = inp["List"]
            count, mx, pong = count["Nat"], mx["Nat"], pong["ObjectRef"]
            tag = tag["Str"]
        except Exception:  # noqa
            return {"Ok": {"Str": "%s: unexpected input" % self_kind}}
        log("   %s object %d handles %s count=%d max=%d chain=%s sender=%s" %
            (self_kind, me, tag, count, mx, m.get("chain"), m.get("sender")))
        if count >= mx:
            return {"Ok": L({"Str": "done"}, {"Nat": count})}
        if self_kind == "pong":
            target, nxt = m["sender"], L({"Str": "Ping"}, {"Nat": count + 1}, {"Nat": mx}, {"ObjectRef": me})
        else:
            target, nxt = pong, L({"Str": "Pong"}, {"Nat": count + 1}, {"Nat": mx}, {"ObjectRef": pong})
        # "must send the chain id of the call it is answering in its own calls"
        r = peer.call(target, nxt, sender=me, chain=m.get("chain"))
        if "Ok" in r:
            return {"Ok": r["Ok"]}
        log("   nested call failed:", r)
        return {"Ok": {"Str": "%s: call failed" % self_kind}}
    return handler


# ---------------------------------------------------------------- steps

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def step_dial(port, keyfile, stay=12):
    key = read_key(keyfile)
    prefix = 77
    my_ping = (prefix << 48) | 1  # an object of ours that we never announce
    me = {"machine_id": "gamma-client", "node_prefix": prefix}
    s = socket.create_connection(("127.0.0.1", port))
    peer = Peer(s, me, key, dialled=True, call_handler=pingpong_handler("ping", {my_ping}))
    log("=== step 1: hello + auth + snapshot (dialling 127.0.0.1:%d)" % port)
    peer.handshake()
    ok = peer.snapshot_end.wait(10)
    log("snapshot_end received:", ok, "objects field:", peer.snapshot_count)
    log("objects learned:")
    for oid, (mach, beh) in peer.directory.items():
        log("   id=%d (prefix %d, counter %d) machine=%s behavior=%s" %
            (oid, oid >> 48, oid & ((1 << 48) - 1), mach, beh))
    log("names learned:", peer.node_names)
    pong = peer.node_names.get("pong") or next(
        (i for i, (_, b) in peer.directory.items() if b == "pong"), None)
    if pong is None:
        log("!! no pong object found")
        return False
    log("=== step 2: calls")
    r = peer.call(pong, L({"Str": "Pong"}, {"Nat": 3}, {"Nat": 3}, {"ObjectRef": pong}))
    log("pong(Pong,3,3) ->", json.dumps(r))
    r = peer.call(pong, {"Str": "garbage"})
    log("pong(Str garbage) ->", json.dumps(r))
    # nested: pong calls our (never announced) sender object back on the chain
    r = peer.call(pong, L({"Str": "Pong"}, {"Nat": 0}, {"Nat": 4}, {"ObjectRef": pong}), sender=my_ping)
    log("pong(Pong,0,4) from our ping object ->", json.dumps(r))
    bogus = (peer.peer_hello["node_prefix"] << 48) | 12345
    r = peer.call(bogus, "Nothing")
    log("call to missing %d ->" % bogus, json.dumps(r))
    r = peer.call(123, "Nothing")
    log("call to missing 123 ->", json.dumps(r))
    log("=== step 3: keepalive for %d s" % stay)
    t = time.time()
    while time.time() - t < stay and not peer.closed.is_set():
        time.sleep(0.5)
    alive = not peer.closed.is_set()
    log("after %.1fs: connected=%s pings received=%d pongs received=%d other=%s" %
        (time.time() - t, alive, peer.pings_rx, peer.pongs_rx, peer.other))
    if alive:
        r = peer.call(pong, L({"Str": "Pong"}, {"Nat": 9}, {"Nat": 9}, {"ObjectRef": pong}))
        log("call after keepalive period ->", json.dumps(r))
    peer.closed.set()
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    return alive


def raw_try(port, label, payload_bytes, wait=5):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    t = time.time()
    try:
        s.sendall(payload_bytes)
    except OSError as e:
        log(label, "send error", e)
    got = b""
    reason = "?"
    try:
        while True:
            c = s.recv(65536)
            if not c:
                reason = "closed by node (EOF)"
                break
            got += c
    except socket.timeout:
        reason = "still open after %ds" % wait
    except ConnectionResetError:
        reason = "reset by node"
    s.close()
    frames = []
    while len(got) >= 4:
        n = struct.unpack(">I", got[:4])[0]
        frames.append(got[4:4 + n].decode("utf-8", "replace"))
        got = got[4 + n:]
    log(label, "->", reason, "after %.2fs;" % (time.time() - t), "node sent:", frames)


def frame(obj):
    b = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(b)) + b


def step_malformed(port, keyfile):
    log("=== step 5: malformed frames, each on its own connection")
    hello = {"type": "hello", "version": 2, "machine_id": "mal", "node_prefix": 55,
             "nonce": secrets.token_hex(32)}
    raw_try(port, "zero-length frame", struct.pack(">I", 0))
    raw_try(port, "invalid JSON first frame", frame(b"{not json"))
    raw_try(port, "call as first frame", frame({"type": "call", "request_id": 1, "target": 1,
                                                "input": "Nothing", "sender": 0, "sender_machine": "x"}))
    raw_try(port, "header 1 MiB before hello", struct.pack(">I", 1 << 20))
    raw_try(port, "version 1 hello", frame({"type": "hello", "version": 1, "machine_id": "v1", "node_prefix": 56}))
    raw_try(port, "hello then bad proof", frame(hello) + frame({"type": "auth", "proof": "00" * 32}))
    raw_try(port, "hello then ping before proof", frame(dict(hello, machine_id="mal2", node_prefix=57))
            + frame({"type": "ping", "nonce": 1}))
    # malformed JSON *after* a complete handshake
    key = read_key(keyfile)
    s = socket.create_connection(("127.0.0.1", port))
    p = Peer(s, {"machine_id": "mal3", "node_prefix": 58}, key, dialled=True)
    p.handshake()
    p.snapshot_end.wait(5)
    log("post-handshake: sending invalid JSON frame")
    p.f.send_raw(frame(b"{\"type\":\"ping\",\"nonce\":"))
    closed = p.closed.wait(5)
    log("post-handshake invalid JSON -> connection closed by node:", closed, p.close_reason)
    s.close()
    s = socket.create_connection(("127.0.0.1", port))
    p = Peer(s, {"machine_id": "mal4", "node_prefix": 59}, key, dialled=True)
    p.handshake()
    p.snapshot_end.wait(5)
    log("post-handshake: sending a call missing `target`")
    p.f.send({"type": "call", "request_id": 5, "input": "Nothing", "sender": 0, "sender_machine": "mal4"})
    closed = p.closed.wait(4)
    log("post-handshake call without target -> closed:", closed, p.close_reason, "other:", p.other)
    s.close()


def step_serve(keyfile, portfile=None, timeout=60):
    """Play beta hosting `pong`; the node orchestrator dials us."""
    key = read_key(keyfile)
    prefix = 9002
    pong_id = (prefix << 48) | 1
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    port = ls.getsockname()[1]
    if portfile:
        with open(portfile, "w") as f:
            f.write(str(port))
    log("=== step 4: listening as beta on 127.0.0.1:%d, hosting pong %d" % (port, pong_id))
    ls.settimeout(timeout)
    conns = []
    done = threading.Event()

    def serve_one(c):
        peer = Peer(c, {"machine_id": "beta", "node_prefix": prefix}, key, dialled=False,
                    objects=[(pong_id, "pong")], names=[("pong", pong_id)],
                    call_handler=pingpong_handler("pong", {pong_id}))
        conns.append(peer)
        try:
            peer.handshake()
        except Exception as e:  # noqa
            log("handshake failed:", e)
            return
        peer.closed.wait()
        done.set()

    try:
        while not done.is_set():
            try:
                c, addr = ls.accept()
            except socket.timeout:
                break
            log("accepted", addr)
            threading.Thread(target=serve_one, args=(c,), daemon=True).start()
            ls.settimeout(2)
    finally:
        ls.close()
    return port


# ---------------------------------------------------------------- driver

def start_node(args, logname):
    env = dict(os.environ, RUST_LOG="debug")
    logf = open(os.path.join(WORK, "logs", logname), "w")
    p = subprocess.Popen([NODE] + args, stdout=logf, stderr=subprocess.STDOUT, env=env)
    log("started node pid %d: %s (log: logs/%s)" % (p.pid, " ".join(args), logname))
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    log("node pid %d exited with %s" % (p.pid, p.returncode))


def main_all():
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    keyfile = make_key_file(os.path.join(WORK, "cluster-key"))
    procs = []
    try:
        port = free_port()
        beta = start_node(["--name", "beta", "--port", str(port), "--demo",
                           "--cluster-key-file", keyfile], "beta.log")
        procs.append(beta)
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        step_dial(port, keyfile)
        step_malformed(port, keyfile)
        if beta.poll() is not None:
            log("!! beta exited after the malformed frames")
        stop(beta)

        # step 4: the real orchestrator against our beta
        portfile = os.path.join(WORK, "logs", "serve.port")
        if os.path.exists(portfile):
            os.remove(portfile)
        th = threading.Thread(target=step_serve, args=(keyfile, portfile, 30), daemon=True)
        th.start()
        while not os.path.exists(portfile) or not open(portfile).read():
            time.sleep(0.05)
        our = int(open(portfile).read())
        aport = free_port()
        alpha = start_node(["--name", "alpha", "--port", str(aport), "--demo", "--rounds", "3",
                            "--demo-wait", "20", "--peer", "127.0.0.1:%d" % our,
                            "--cluster-key-file", keyfile], "alpha.log")
        procs.append(alpha)
        try:
            alpha.wait(40)
        except subprocess.TimeoutExpired:
            log("!! orchestrator did not exit within 40 s")
        th.join(5)
        stop(alpha)
        with open(os.path.join(WORK, "logs", "alpha.log")) as f:
            alpha_log = f.read()
        for line in alpha_log.splitlines():
            if any(w in line.lower() for w in ("result", "done", "pingpong", "demo")):
                log("alpha.log:", line.rstrip())
        if alpha.returncode != 0 or 'result: ["done", 3]' not in alpha_log:
            log("!! the orchestrator did not finish the demo against this client")
    finally:
        for p in procs:
            stop(p)
    if FAILURES:
        print("FAILED:", *FAILURES, sep="\n  ")
        sys.exit(1)
    print("ok: every check passed")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "all"
    if cmd == "all":
        main_all()
    elif cmd == "dial":
        step_dial(int(sys.argv[2]), sys.argv[3])
    elif cmd == "malformed":
        step_malformed(int(sys.argv[2]), sys.argv[3])
    elif cmd == "serve":
        step_serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        print(__doc__)
