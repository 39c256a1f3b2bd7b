#!/usr/bin/env python3
"""A from-the-doc avm peer (docs/protocol.md, version 2), stdlib only.

Written from docs/protocol.md alone, without reading avm's source, to
check that the page is enough to write a client in another language.
`all` builds nothing: run `cargo build -p avm-node` first (or point
AVM_NODE at a binary). It starts its nodes on loopback port 0, reading
each one's port from its log, with a key file of its own, plays a peer
against a real node (handshake, snapshot, calls, keepalive, malformed
frames), then reads a node's snapshot as compact version 2 `objects`
frames and compares it with the JSON one, then plays beta hosting `pong` against the real orchestrator,
and exits 1 if any check failed.
Logs go to target/pyclient/logs. `.ci/run` runs it after `cargo test`.

Usage:
  client.py all                      start nodes itself, run every check, kill nodes
  client.py dial PORT KEYFILE        steps 1-3 against a running node on 127.0.0.1:PORT
  client.py malformed PORT KEYFILE   step 5 against a running node
  client.py objects [PORT KEYFILE]   step 6, compact version 2: the snapshot as `objects`
                                     frames against a JSON-only snapshot of the same node,
                                     plus the page's worked examples decoded offline
                                     (without PORT: starts its own node, like `all`)
  client.py serve KEYFILE PORTFILE   step 4: listen, play beta hosting `pong`
                                     (writes the chosen port into PORTFILE)
"""
import hashlib
import hmac
import json
import os
import re
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
QUIET_TYPES = {"ping": 2, "pong": 2, "create_notify": 5}  # printed only this many times per connection


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


# ---------------------------------------------------------------- compact frames

# Section "Compact frames": a payload whose first byte is 01, 02 or 03 is
# binary; every integer in it is unsigned little-endian.
COMPACT_CALL, COMPACT_CALL_RESPONSE, COMPACT_OBJECTS = 1, 2, 3
MAX_VAL_DEPTH = 128           # "A Val nests at most 128 levels deep"
MAX_OBJECTS_PER_FRAME = 4096  # "`count` over 4,096" is an error
OBJECT_ENTRY_BYTES = 11       # object_id u64 | behavior u8 | epoch u16


class CompactError(ValueError):
    """One row of an "Errors" table: the problem and its payload offset N."""

    def __init__(self, offset, what):
        super().__init__("malformed compact frame at byte %d (%s)" % (offset, what))
        self.offset = offset


class TooDeep(ValueError):
    pass


class _Bytes:
    def __init__(self, payload):
        self.b = payload
        self.pos = 0

    def take(self, n, what):
        # "the payload ends before a field does: where that field starts"
        if self.pos + n > len(self.b):
            raise CompactError(self.pos, "the payload ends inside %s" % what)
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what):
        return self.take(1, what)[0]

    def u16(self, what):
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what):
        return struct.unpack("<Q", self.take(8, what))[0]

    def utf8(self, n, what):
        start = self.pos
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            # "a `sender_machine` or a `Str` (or a name) that is not UTF-8: its first invalid byte"
            raise CompactError(start + e.start, "%s is not UTF-8" % what)

    def end(self, what):
        # "bytes remain after the last value (entry): the first of them"
        if self.pos != len(self.b):
            raise CompactError(self.pos, "bytes remain after %s" % what)


def _value(r, field, budget, depth):
    """One compact value as its JSON form (section "Values"); recursion is bounded by depth."""
    # "A decoder must refuse it before it descends any further"; depth is
    # checked before the value counts against the budget, as avm does.
    if depth > MAX_VAL_DEPTH:
        raise TooDeep("field `%s` nests too deep" % field)
    tag_at = r.pos
    budget[0] -= 1
    if budget[0] < 0:
        raise CompactError(tag_at, "one value more than the budget allows")
    tag = r.u8("a value tag")
    if tag == 0x00:
        return "Nothing"
    if tag == 0x01:
        return {"Nat": r.u64("a Nat")}
    if tag == 0x02:
        return {"ObjectRef": r.u64("an ObjectRef")}
    if tag == 0x03:
        return {"TxRef": r.u64("a TxRef")}
    if tag == 0x04:
        return {"Bool": False}
    if tag == 0x05:
        return {"Bool": True}
    if tag == 0x06:
        n = r.u32("a Str length")
        return {"Str": r.utf8(n, "a Str")}
    if tag == 0x07:
        return {"Just": _value(r, field, budget, depth + 1)}
    if tag == 0x08:
        a = _value(r, field, budget, depth + 1)
        return {"Pair": [a, _value(r, field, budget, depth + 1)]}
    if tag == 0x09:
        count = r.u32("a List count")
        items = []  # "Never reserve memory for `count` items up front"
        for _ in range(count):
            items.append(_value(r, field, budget, depth + 1))
        return {"List": items}
    raise CompactError(tag_at, "unknown value tag 0x%02x" % tag)


def decode_compact_call(payload):
    """01 | flags | request_id | target | sender | [chain] | machine_len | sender_machine | input"""
    r = _Bytes(payload)
    r.u8("the kind byte")
    flags = r.u8("flags")
    if flags & 0xFE:
        raise CompactError(1, "a flag bit other than bit 0")
    m = {"type": "call", "request_id": r.u64("request_id"), "target": r.u64("target")}
    m["sender"] = r.u64("sender")
    if flags & 1:
        m["chain"] = r.u64("chain")
    n = r.u8("machine_len")
    m["sender_machine"] = r.utf8(n, "sender_machine")
    m["input"] = _value(r, "input", [len(payload) // 8 + 16], 1)
    r.end("the last value")
    return m


def decode_compact_call_response(payload):
    """02 | request_id | result (the Ok value)"""
    r = _Bytes(payload)
    r.u8("the kind byte")
    rid = r.u64("request_id")
    result = _value(r, "result", [len(payload) // 8 + 16], 1)
    r.end("the last value")
    return {"type": "call_response", "request_id": rid, "result": {"Ok": result}}


def decode_compact_objects(payload, machine_id):
    """03 | behaviors: u8 | behaviors x (len: u8 | name) | count: u32 | count x (object_id: u64 | behavior: u8 | epoch: u16)

    Returns (table, notices): the behavior table and, for entry i, the
    create_notify that "Entry i means exactly" (epoch 0 included as 0)."""
    r = _Bytes(payload)
    r.u8("the kind byte")
    nb = r.u8("the behavior table's length")
    table = []
    for i in range(nb):
        ln = r.u8("the length of behavior name %d" % i)
        table.append(r.utf8(ln, "behavior name %d" % i))
    count_at = r.pos
    count = r.u32("count")
    if count > MAX_OBJECTS_PER_FRAME:
        raise CompactError(count_at, "count %d over 4,096" % count)
    first = r.pos
    if len(payload) - first < count * OBJECT_ENTRY_BYTES:
        raise CompactError(first, "fewer than count x 11 bytes follow count")
    notices = []
    for _ in range(count):
        oid = r.u64("object_id")
        beh_at = r.pos
        beh = r.u8("behavior")
        if beh >= nb:
            raise CompactError(beh_at, "behavior %d not below the table's length %d" % (beh, nb))
        epoch = r.u16("epoch")
        notices.append({"type": "create_notify", "object_id": oid, "machine_id": machine_id,
                        "behavior": table[beh], "epoch": epoch})
    r.end("the last entry")
    return table, notices


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
        self.compact = 0           # the compact version our hello offered (0: JSON only)
        self.peer_machine = None   # the peer's machine_id, once its hello is in
        self.compact_rx = {COMPACT_CALL: 0, COMPACT_CALL_RESPONSE: 0, COMPACT_OBJECTS: 0}
        self.objects_entries = []  # entries per `objects` frame received, in order

    def _show(self, arrow, obj):
        t = obj.get("type") if isinstance(obj, dict) else None
        n = self.seen[(arrow, t)] = self.seen.get((arrow, t), 0) + 1
        if t in QUIET_TYPES and n > QUIET_TYPES[t]:
            if n == QUIET_TYPES[t] + 1:
                log(self.label, arrow, "(further %s frames not shown)" % t)
            return
        log(self.label, arrow, json.dumps(obj, separators=(",", ":")))

    def send(self, obj):
        data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        self.send_raw(struct.pack(">I", len(data)) + data)
        self._show(">>", obj)

    def send_raw(self, b):
        with self.wlock:
            self.sock.sendall(b)

    def _compact(self, kind, payload):
        """A compact frame as the JSON message it stands for ("Compact frames").

        An `objects` frame comes back as {"type": "objects", "behaviors":
        table, "notices": [create_notify, ...]}: the receiver applies the
        notices in order, at the frame's place among the others."""
        # "A peer that does not ask for it never receives it"; `objects` only
        # to a peer that offered 2 or more.
        if self.compact < (2 if kind == COMPACT_OBJECTS else 1):
            raise RuntimeError("compact frame (kind %d) received, but our hello offered compact %d: %r"
                               % (kind, self.compact, payload[:16]))
        self.compact_rx[kind] += 1
        if kind == COMPACT_CALL:
            obj = decode_compact_call(payload)
        elif kind == COMPACT_CALL_RESPONSE:
            obj = decode_compact_call_response(payload)
        else:
            table, notices = decode_compact_objects(payload, self.peer_machine)
            self.objects_entries.append(len(notices))
            obj = {"type": "objects", "behaviors": table, "notices": notices}
            n = self.seen[("<<", "objects")] = self.seen.get(("<<", "objects"), 0) + 1
            if n <= 3:
                log(self.label, "<< objects frame (%d bytes): behaviors %s, %d entries, first %s"
                    % (len(payload), table, len(notices),
                       json.dumps(notices[0], separators=(",", ":")) if notices else "-"))
            return obj
        n = self.seen[("<<", "compact")] = self.seen.get(("<<", "compact"), 0) + 1
        if n <= 6:
            log(self.label, "<< (compact 0x%02x, %d bytes)" % (kind, len(payload)),
                json.dumps(obj, separators=(",", ":")))
        return obj

    def recv(self):
        """Next frame as a dict; raises Closed on EOF."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    kind = payload[0] if payload else None
                    if kind in (COMPACT_CALL, COMPACT_CALL_RESPONSE, COMPACT_OBJECTS):
                        return self._compact(kind, payload)
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
                 send_pings=True, answer_pings=True, send_snapshot_end=True, compact=0):
        self.send_pings, self.answer_pings = send_pings, answer_pings
        self.compact = compact        # the `compact` our hello offers (0: none, JSON only)
        self.send_snapshot_end = send_snapshot_end
        self.f = Framed(sock, "[%s]" % me["machine_id"])
        self.me = me
        self.key = key
        self.dialled = dialled
        self.objects = list(objects)  # [(id, behavior)]
        self.names = list(names)      # [(name, id)]
        self.call_handler = call_handler
        self.directory = {}           # id -> (machine, behavior)
        self.epochs = {}              # id -> epoch of its create_notify (absent: 0)
        self.node_names = {}
        self.snapshot_end = threading.Event()
        self.snapshot_count = None
        self.snapshot_notices = 0     # create_notifys before snapshot_end, objects entries included
        self.snapshot_json_notices = 0
        self.snapshot_view = None     # (directory, epochs, names) as they were at snapshot_end
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
        if self.compact:
            mine["compact"] = self.compact
            self.f.compact = self.compact
        self.f.send(mine)
        theirs = self.f.recv()
        if theirs.get("type") == "close":  # "a `close` may come at any point"
            raise RuntimeError("the node closed the connection: %s" % theirs.get("reason"))
        if theirs.get("type") != "hello":
            raise RuntimeError("first frame not hello: %r" % theirs)
        self.peer_hello = theirs
        self.f.peer_machine = theirs["machine_id"]
        d, a = (mine, theirs) if self.dialled else (theirs, mine)
        # The dialler proves first (role D); the acceptor answers (role A).
        ours, node_role, node_name = (b"D", b"A", "acceptor") if self.dialled \
            else (b"A", b"D", "dialler")
        if self.dialled:
            self.f.send({"type": "auth", "proof": proof(self.key, ours, d, a)})
        m = self.f.recv()
        if m.get("type") == "close":
            raise RuntimeError("the node closed the connection: %s" % m.get("reason"))
        if m.get("type") != "auth":
            raise RuntimeError("expected auth, got %r" % m)
        # "hex, either case": compared as bytes, not as text.
        try:
            theirs_proof = bytes.fromhex(m["proof"])
        except (TypeError, ValueError):
            raise RuntimeError("node's %s proof is not hex: %r" % (node_name, m["proof"]))
        if not hmac.compare_digest(theirs_proof, bytes.fromhex(proof(self.key, node_role, d, a))):
            raise RuntimeError("node's %s proof does not verify" % node_name)
        log(self.f.label, "node's %s proof verified" % node_name)
        if not self.dialled:
            self.f.send({"type": "auth", "proof": proof(self.key, ours, d, a)})
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
                    if not self.snapshot_end.is_set():
                        self.snapshot_json_notices += 1
                    self._create_notify(m)
                elif t == "objects":
                    # "the entries take effect in order, as that many
                    # `create_notify`s would, at the frame's place"
                    for cn in m["notices"]:
                        self._create_notify(cn)
                elif t == "destroy_notify":
                    self.directory.pop(m["object_id"], None)
                elif t == "name_notify":
                    self.node_names[m["name"]] = m["object_id"]
                elif t == "name_drop":
                    self.node_names.pop(m["name"], None)
                elif t == "snapshot_end":
                    self.snapshot_count = m.get("objects")
                    self.snapshot_view = (dict(self.directory), dict(self.epochs), dict(self.node_names))
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
                elif t == "meta":
                    # "it should answer at once": this client implements no op.
                    self.f.send({"type": "call_response", "request_id": m["request_id"],
                                 "result": {"Err": "unknown meta op `%s`" % m.get("op")}})
                elif t == "close":
                    # "answers nothing, reads nothing more from that connection"
                    raise Closed("the node said: %s" % m.get("reason"))
                else:
                    self.other.append(m)
        except Closed as e:
            self.close_reason = str(e)
        except Exception as e:  # noqa
            self.close_reason = "reader error: %r" % e
        self.closed.set()
        log(self.f.label, "connection closed:", self.close_reason)

    def _create_notify(self, m):
        if not self.snapshot_end.is_set():
            self.snapshot_notices += 1
        self.directory[m["object_id"]] = (m["machine_id"], m.get("behavior"))
        # "`create_notify`'s `epoch` ... is omitted (read as 0)"
        self.epochs[m["object_id"]] = m.get("epoch") or 0

    def _serve_call(self, m):
        try:
            result = self.call_handler(self, m) if self.call_handler else \
                {"Err": "object not found: %d" % m["target"]}
        except Exception as e:  # noqa
            result = {"Err": "client error: %r" % e}
        self.f.send({"type": "call_response", "request_id": m["request_id"], "result": result})

    def call(self, target, inp, sender=0, chain=None, timeout=40, op=None):
        with self.rid_lock:
            rid = self.next_rid
            self.next_rid += 1
        ev = threading.Event()
        self.pending[rid] = [ev, None]
        msg = {"type": "call", "request_id": rid, "target": target, "input": inp,
               "sender": sender, "sender_machine": self.me["machine_id"]}
        if op is not None:  # "a `meta` message: a `call`'s fields ... plus `op`"
            msg["type"], msg["op"] = "meta", op
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

    def expect(what, got, want):
        """Logs the answer; a `!!` line (a failure) unless `want(got)`."""
        log("%s%s ->" % ("" if want(got) else "!! ", what), json.dumps(got))

    def not_found(oid):
        return lambda r: r.get("Err", "").startswith("object not found: %d" % oid)

    r = peer.call(pong, L({"Str": "Pong"}, {"Nat": 3}, {"Nat": 3}, {"ObjectRef": pong}))
    expect("pong(Pong,3,3)", r, lambda r: r == {"Ok": L({"Str": "done"}, {"Nat": 3})})
    r = peer.call(pong, {"Str": "garbage"})
    # Not a game message: pong answers, and the connection stays up.
    expect("pong(Str garbage)", r, lambda r: "Ok" in r or "Err" in r)
    # nested: pong calls our (never announced) sender object back on the chain
    r = peer.call(pong, L({"Str": "Pong"}, {"Nat": 0}, {"Nat": 4}, {"ObjectRef": pong}), sender=my_ping)
    expect("pong(Pong,0,4) from our ping object", r,
           lambda r: r == {"Ok": L({"Str": "done"}, {"Nat": 4})})
    bogus = (peer.peer_hello["node_prefix"] << 48) | 12345
    r = peer.call(bogus, "Nothing")
    expect("call to missing %d" % bogus, r, not_found(bogus))
    r = peer.call(123, "Nothing")
    expect("call to missing 123", r, not_found(123))
    log("=== step 3: keepalive for %d s" % stay)
    t = time.time()
    while time.time() - t < stay and not peer.closed.is_set():
        time.sleep(0.5)
    alive = not peer.closed.is_set()
    log("after %.1fs: connected=%s pings received=%d pongs received=%d other=%s" %
        (time.time() - t, alive, peer.pings_rx, peer.pongs_rx, peer.other))
    # The node pings every second (the page's keepalive): our own pings
    # alone would keep the connection up, so count the node's.
    if peer.pings_rx < stay - 2:
        log("!! the node sent %d pings in %d s" % (peer.pings_rx, stay))
    if alive:
        r = peer.call(pong, L({"Str": "Pong"}, {"Nat": 9}, {"Nat": 9}, {"ObjectRef": pong}))
        expect("call after keepalive period", r,
               lambda r: r == {"Ok": L({"Str": "done"}, {"Nat": 9})})
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
    # Each of these is a protocol error: the node must close, not wait.
    bad = "" if reason in ("closed by node (EOF)", "reset by node") else "!! "
    log(bad + label, "->", reason, "after %.2fs;" % (time.time() - t), "node sent:", frames)


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
    log("%spost-handshake invalid JSON -> connection closed by node:" % ("" if closed else "!! "),
        closed, p.close_reason)
    s.close()
    s = socket.create_connection(("127.0.0.1", port))
    p = Peer(s, {"machine_id": "mal4", "node_prefix": 59}, key, dialled=True)
    p.handshake()
    p.snapshot_end.wait(5)
    log("post-handshake: sending a call missing `target`")
    p.f.send({"type": "call", "request_id": 5, "input": "Nothing", "sender": 0, "sender_machine": "mal4"})
    closed = p.closed.wait(4)
    log("%spost-handshake call without target -> closed:" % ("" if closed else "!! "),
        closed, p.close_reason, "other:", p.other)
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


def _hexbytes(text):
    """The bytes of a hex dump as the page prints them: hex before any description."""
    out = b""
    for line in text.strip().splitlines():
        for word in line.split():
            try:
                out += bytes.fromhex(word)
            except ValueError:
                break  # the description begins
    return out


def _unframe(b):
    (n,) = struct.unpack(">I", b[:4])
    if n != len(b) - 4:
        raise ValueError("header says %d payload bytes, %d follow" % (n, len(b) - 4))
    return b[4:]


def _expect_error(label, fn, payload, offset):
    try:
        fn(payload)
    except CompactError as e:
        if e.offset == offset:
            return True
        log("!! offline:", label, "-> error at byte %d, the page's table says %d (%s)" % (e.offset, offset, e))
        return False
    except TooDeep as e:
        log("!! offline:", label, "-> too deep (%s), the page's table says byte %d" % (e, offset))
        return False
    log("!! offline:", label, "-> decoded, the page's table says an error at byte %d" % offset)
    return False


def selftest_compact():
    """Offline: the page's worked examples decode to what the page says, and
    the decoder reports the error table's offsets."""
    log("--- offline: the page's compact worked examples")
    ok = True
    # "Version 2: `objects`", worked example: 42 bytes, two objects of alpha.
    frame_objects = _hexbytes("""
        00000026                       length 38, big-endian
        03                             objects
        02                             two behavior names
        04 70696e67                    0: "ping"
        04 706f6e67                    1: "pong"
        02000000                       count 2
        0100000000002923 00 0000       0x2329000000000001, "ping", epoch 0
        0200000000002923 01 0300       0x2329000000000002, "pong", epoch 3
    """)
    page_json = [
        '{"type":"create_notify","object_id":2533556265372614657,"machine_id":"alpha","behavior":"ping"}',
        '{"type":"create_notify","object_id":2533556265372614658,"machine_id":"alpha","behavior":"pong","epoch":3}',
    ]

    def norm(m):
        return (m["type"], m["object_id"], m["machine_id"], m.get("behavior"), m.get("epoch") or 0)

    table, notices = decode_compact_objects(_unframe(frame_objects), "alpha")
    want = [norm(json.loads(j)) for j in page_json]
    got = [norm(m) for m in notices]
    log("objects example: %d bytes, behaviors %s ->" % (len(frame_objects), table), got)
    if len(frame_objects) != 42 or got != want:
        log("!! offline: the objects worked example decodes to", got, "the page says", want)
        ok = False
    # the ids as the page writes them in hex and as counters
    if [m["object_id"] for m in notices] != [0x2329000000000001, 0x2329000000000002] or \
            [m["object_id"] >> 48 for m in notices] != [9001, 9001]:
        log("!! offline: the objects example's ids are not alpha's (prefix 9001)")
        ok = False
    # Version 1's worked example, since a compact connection may carry it too.
    frame_call = _hexbytes("""
        00000032                   length 50, big-endian
        01                         call
        01                         flags: chain present
        0700000000000000           request_id 7
        0100000000002a23           target 0x232a000000000001
        0200000000002923           sender 0x2329000000000002
        0500000000002923           chain  0x2329000000000005
        05 616c706861              sender_machine "alpha"
        07 01 0300000000000000     Just(Nat(3))
    """)
    want_call = json.loads('{"type":"call","request_id":7,"target":2533837740349325313,"input":{"Just":{"Nat":3}},'
                           '"sender":2533556265372614658,"sender_machine":"alpha","chain":2533556265372614661}')
    got_call = decode_compact_call(_unframe(frame_call))
    if len(frame_call) != 54 or got_call != want_call:
        log("!! offline: the call worked example decodes to", got_call, "the page says", want_call)
        ok = False
    got_resp = decode_compact_call_response(_unframe(_hexbytes("0000000a 02 0700000000000000 00")))
    if got_resp != {"type": "call_response", "request_id": 7, "result": {"Ok": "Nothing"}}:
        log("!! offline: the call_response example decodes to", got_resp)
        ok = False
    log("call example ->", json.dumps(got_call, separators=(",", ":")))
    log("call_response example ->", json.dumps(got_resp, separators=(",", ":")))

    # The `objects` error table, one row each (N: the payload offset).
    objs = lambda b: decode_compact_objects(b, "x")  # noqa: E731
    entry = struct.pack("<QBH", 5, 0, 0)
    rows = [
        ("payload ends inside the table (a name)", b"\x03\x02\x04pi", 3),
        ("payload ends inside the table (a name's len)", b"\x03\x01", 2),
        ("payload ends before count", b"\x03\x00\x01\x00", 2),
        ("count over 4,096", b"\x03\x00" + struct.pack("<I", 4097), 2),
        ("fewer than count x 11 bytes follow count", b"\x03\x01\x01a" + struct.pack("<I", 2) + entry + b"\x00" * 10, 8),
        ("bytes remain after the last entry", b"\x03\x01\x01a" + struct.pack("<I", 1) + entry + b"\x00", 19),
        ("a name that is not UTF-8", b"\x03\x01\x03a\xffb" + struct.pack("<I", 0), 4),
        ("an entry's behavior not below the table's length", b"\x03\x01\x01a" + struct.pack("<I", 2) + entry
         + struct.pack("<QBH", 6, 1, 0), 27),
    ]
    for label, payload, n in rows:
        ok &= _expect_error("objects: " + label, objs, payload, n)
    if objs(b"\x03\x00" + struct.pack("<I", 0)) != ([], []):
        log("!! offline: an empty objects frame does not decode to nothing")
        ok = False
    # Version 1 rows used on a compact connection: flags, tags, budget, depth.
    rid = struct.pack("<Q", 7)
    ok &= _expect_error("call: a flag bit other than bit 0", decode_compact_call,
                        b"\x01\x02" + b"\x00" * 24 + b"\x00\x00", 1)
    ok &= _expect_error("call_response: an unknown value tag", decode_compact_call_response, b"\x02" + rid + b"\x0a", 9)
    ok &= _expect_error("call_response: bytes remain", decode_compact_call_response, b"\x02" + rid + b"\x00\x00", 10)
    # budget: N / 8 + 16 values in an N-byte payload; a List of k Nothings is 1 + k values
    k = next(k for k in range(1, 200) if 1 + k > (14 + k) // 8 + 16)
    fits = b"\x02" + rid + b"\x09" + struct.pack("<I", k - 1) + b"\x00" * (k - 1)
    over = b"\x02" + rid + b"\x09" + struct.pack("<I", k) + b"\x00" * k
    if len(decode_compact_call_response(fits)["result"]["Ok"]["List"]) != k - 1:
        log("!! offline: a List of %d Nothings within the budget does not decode" % (k - 1))
        ok = False
    budget = len(over) // 8 + 16  # the value numbered budget + 1 is item budget - 1, at 14 + budget - 1
    ok &= _expect_error("call_response: one value more than the budget", decode_compact_call_response,
                        over, 14 + budget - 1)
    # depth: Pair(Str pad, Just^j(Nat)) is j + 2 levels; the pad buys the
    # budget (N / 8 + 16) that 128 levels of values need.
    pad = b"\x06" + struct.pack("<I", 1000) + b"p" * 1000
    deep = lambda j: b"\x02" + rid + b"\x08" + pad + b"\x07" * j + b"\x01" + struct.pack("<Q", 1)  # noqa: E731
    try:
        decode_compact_call_response(deep(126))  # 128 levels: accepted
    except (CompactError, TooDeep) as e:
        log("!! offline: a value of 128 levels is refused:", e)
        ok = False
    try:
        decode_compact_call_response(deep(127))  # 129 levels: refused
        log("!! offline: a value of 129 levels decoded; the page says it is refused")
        ok = False
    except TooDeep:
        pass
    log("offline compact checks:", "ok" if ok else "FAILED")
    return ok


AVM_NODE_OBJECTS_PER_FRAME = 204  # "objects frames of at most 204 entries"


def step_objects(port, keyfile, expect_min=0):
    """Compact version 2: the snapshot as `objects` frames equals the JSON one."""
    log("=== step 6: compact version 2, the snapshot as `objects` frames")
    selftest_compact()
    key = read_key(keyfile)

    def connect(machine, prefix, compact=0, handler=None):
        s = socket.create_connection(("127.0.0.1", port))
        peer = Peer(s, {"machine_id": machine, "node_prefix": prefix}, key, dialled=True,
                    compact=compact, call_handler=handler)
        peer.handshake()
        t = time.time()
        while not peer.snapshot_end.wait(0.1) and not peer.closed.is_set() and time.time() - t < 60:
            pass
        if not peer.snapshot_end.is_set():
            log("!! [%s] no snapshot_end (%s)" % (machine, peer.close_reason or "60 s passed"))
        return peer, s

    def hang_up(peer, s):
        peer.closed.set()
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    # Setup: give the node objects that moved (epochs above 0, up to 65535)
    # and names, by `adopt` ("Moves": the new home announces them in its
    # snapshots with their epoch, and their names after them).
    prefix = 80
    base = int(time.time() * 1000) << 6
    adopted = {}  # id -> (epoch, name or None)
    peer, s = connect("objects-setup", prefix)
    log("setup: the node's snapshot holds %s objects" % peer.snapshot_count)
    # avm-node listens before it has created its --bank-accounts: wait for
    # their create_notify broadcasts, so both snapshots below hold them all.
    t = time.time()
    while len(peer.directory) < expect_min and time.time() - t < 30 and not peer.closed.is_set():
        time.sleep(0.05)
    if len(peer.directory) < expect_min:
        log("!! the node holds %d objects, fewer than the %d it was started with" % (len(peer.directory), expect_min))
    for i, epoch in enumerate([1, 2, 3, 255, 256, 32767, 32768, 65535]):
        oid = (prefix << 48) | (base + i)
        name = "objects-check-%d-%d" % (base, i) if i < 2 else None
        record = L({"Str": "account"}, "Nothing", {"Nat": 1}, L({"Nat": 1000}), {"Nat": epoch},
                   L(*([{"Str": name}] if name else [])))
        r = peer.call(oid, record, op="adopt", timeout=10)
        if r != {"Ok": {"Bool": True}}:
            log("!! adopt of %d at epoch %d answered %s" % (oid, epoch, json.dumps(r)))
        else:
            adopted[oid] = (epoch, name)
    log("setup: the node adopted %d objects (epochs %s)" % (len(adopted), sorted(e for e, _ in adopted.values())))
    hang_up(peer, s)

    # The same node's snapshot, twice: JSON only, then with "compact":2.
    pj, sj = connect("objects-json", prefix + 1)
    my_ping = ((prefix + 2) << 48) | 1
    pc, sc = connect("objects-compact", prefix + 2, compact=2, handler=pingpong_handler("ping", {my_ping}))
    node = pc.peer_hello["machine_id"]
    log("node's hello offers compact:", pc.peer_hello.get("compact"))
    ok = True
    for p in (pj, pc):
        if p.snapshot_view is None:
            ok = False
            continue
        directory, epochs, names = p.snapshot_view
        f = p.f
        log("%s: snapshot_end objects=%s; learned %d objects (%d notices: %d JSON create_notify, %d objects "
            "entries in %d frames %s), %d names; compact frames received: %s" %
            (f.label, p.snapshot_count, len(directory), p.snapshot_notices, p.snapshot_json_notices,
             sum(f.objects_entries), len(f.objects_entries), f.objects_entries, len(names), f.compact_rx))
        if p.snapshot_count != len(directory) or p.snapshot_count != p.snapshot_notices:
            log("!! %s: snapshot_end says %s objects; learned %d distinct, from %d notices" %
                (f.label, p.snapshot_count, len(directory), p.snapshot_notices))
            ok = False
        strangers = {i: v for i, v in directory.items() if v[0] != node}
        if strangers:
            log("!! %s: objects placed on another machine than the node's: %s" % (f.label, list(strangers)[:5]))
            ok = False
        for oid, (epoch, name) in adopted.items():
            if directory.get(oid) != (node, "account") or epochs.get(oid) != epoch:
                log("!! %s: adopted object %d learned as %s epoch %s, not account at epoch %d" %
                    (f.label, oid, directory.get(oid), epochs.get(oid), epoch))
                ok = False
            if name and names.get(name) != oid:
                log("!! %s: name %s learned as %s, not %d" % (f.label, name, names.get(name), oid))
                ok = False
        if expect_min and len(directory) < expect_min:
            log("!! %s: learned %d objects, fewer than %d" % (f.label, len(directory), expect_min))
            ok = False
    if pj.snapshot_view and pc.snapshot_view:
        if pj.f.objects_entries or any(pj.f.compact_rx.values()):
            log("!! the JSON-only connection received compact frames")
            ok = False
        if not pc.f.objects_entries:
            log("!! the compact 2 connection received no `objects` frame")
            ok = False
        if pc.snapshot_notices != sum(pc.f.objects_entries) + pc.snapshot_json_notices:
            log("!! compact snapshot: %d notices are not %d entries + %d JSON" %
                (pc.snapshot_notices, sum(pc.f.objects_entries), pc.snapshot_json_notices))
            ok = False
        big = [n for n in pc.f.objects_entries if n > AVM_NODE_OBJECTS_PER_FRAME]
        if big:
            log("!! objects frames above the page's %d entries: %s" % (AVM_NODE_OBJECTS_PER_FRAME, big))
            ok = False
        (dj, ej, nj), (dc, ec, nc) = pj.snapshot_view, pc.snapshot_view
        if dj != dc or ej != ec or nj != nc:
            ok = False
            for oid in sorted(set(dj) | set(dc)):
                if dj.get(oid) != dc.get(oid) or ej.get(oid) != ec.get(oid):
                    log("!! object %d: JSON snapshot %s epoch %s, compact snapshot %s epoch %s" %
                        (oid, dj.get(oid), ej.get(oid), dc.get(oid), ec.get(oid)))
            if nj != nc:
                log("!! names: JSON snapshot %s, compact snapshot %s" % (nj, nc))
        else:
            behaviors = {}
            for _, b in dc.values():
                behaviors[b] = behaviors.get(b, 0) + 1
            log("both snapshots learned the same %d objects (behaviors %s, %d with an epoch above 0) and %d names"
                % (len(dc), behaviors, sum(1 for e in ec.values() if e), len(nc)))

    # Calls on the compact connection: avm "sends every covered message
    # compact", so the answers (02) and pong's call back to us (01) arrive
    # compact; we answer in JSON, which is always allowed.
    pong = pc.node_names.get("pong")
    if pong is not None and not pc.closed.is_set():
        r = pc.call(pong, L({"Str": "Pong"}, {"Nat": 3}, {"Nat": 3}, {"ObjectRef": pong}))
        log("compact connection: pong(Pong,3,3) ->", json.dumps(r))
        if r != {"Ok": L({"Str": "done"}, {"Nat": 3})}:
            log("!! pong(Pong,3,3) on the compact connection answered", json.dumps(r))
        r = pc.call(pong, L({"Str": "Pong"}, {"Nat": 0}, {"Nat": 4}, {"ObjectRef": pong}), sender=my_ping)
        log("compact connection: pong(Pong,0,4) from our ping object ->", json.dumps(r))
        if r != {"Ok": L({"Str": "done"}, {"Nat": 4})}:
            log("!! the nested PingPong on the compact connection answered", json.dumps(r))
        log("compact frames received:", pc.f.compact_rx)
        if pc.f.compact_rx[COMPACT_CALL] < 1 or pc.f.compact_rx[COMPACT_CALL_RESPONSE] < 2:
            log("!! avm should send covered calls and answers compact; received", pc.f.compact_rx)
    else:
        log("(no `pong` on this node: no calls on the compact connection)")
    for p in (pj, pc):
        if p.closed.is_set() and p.close_reason:
            log("!! %s closed during the check: %s" % (p.f.label, p.close_reason))
            ok = False
    hang_up(pj, sj)
    hang_up(pc, sc)
    log("objects check:", "ok" if ok else "FAILED")
    return ok


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


LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def start_listening(args, logname, deadline=30):
    """Starts a node on port 0 (the kernel picks a free one, so no other
    process can take it between our choice and the node's bind) and reads
    the port from its log line `node NAME: listening on 127.0.0.1:PORT`."""
    p = start_node(args + ["--port", "0"], logname)
    path = os.path.join(WORK, "logs", logname)
    end = time.time() + deadline
    while time.time() < end:
        with open(path) as f:
            m = LISTENING.search(f.read())
        if m:
            return p, int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.05)
    log("!! node %s never said where it listens (exit status %s; see logs/%s)"
        % (" ".join(args), p.poll(), logname))
    stop(p)
    finish()  # exits 1: the line above is a failure


BANK_ACCOUNTS = 450  # enough for several objects frames of at most 204 entries


def run_objects_node(keyfile, procs):
    """Step 6 on a node of its own: pong plus BANK_ACCOUNTS accounts."""
    delta, port = start_listening(["--name", "delta", "--demo", "--bank-accounts",
                                   str(BANK_ACCOUNTS), "--cluster-key-file", keyfile], "delta.log")
    procs.append(delta)
    step_objects(port, keyfile, expect_min=BANK_ACCOUNTS + 1)
    if delta.poll() is not None:
        log("!! delta exited during the objects check")
    stop(delta)


def finish():
    if FAILURES:
        print("FAILED:", *FAILURES, sep="\n  ")
        sys.exit(1)
    print("ok: every check passed")


def main_objects():
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    keyfile = make_key_file(os.path.join(WORK, "cluster-key"))
    procs = []
    try:
        run_objects_node(keyfile, procs)
    finally:
        for p in procs:
            stop(p)
    finish()


def main_all():
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    keyfile = make_key_file(os.path.join(WORK, "cluster-key"))
    procs = []
    try:
        beta, port = start_listening(["--name", "beta", "--demo", "--cluster-key-file", keyfile],
                                     "beta.log")
        procs.append(beta)
        if not step_dial(port, keyfile):
            log("!! the dial, calls and keepalive steps failed (above)")
        step_malformed(port, keyfile)
        if beta.poll() is not None:
            log("!! beta exited after the malformed frames")
        stop(beta)

        run_objects_node(keyfile, procs)

        # step 4: the real orchestrator against our beta
        portfile = os.path.join(WORK, "logs", "serve.port")
        if os.path.exists(portfile):
            os.remove(portfile)
        th = threading.Thread(target=step_serve, args=(keyfile, portfile, 30), daemon=True)
        th.start()
        deadline = time.time() + 30
        while not os.path.exists(portfile) or not open(portfile).read():
            if time.time() > deadline:
                raise RuntimeError("our beta never wrote its port (step 4 failed to listen)")
            time.sleep(0.05)
        our = int(open(portfile).read())
        alpha = start_node(["--name", "alpha", "--port", "0", "--demo", "--rounds", "3",
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
    finish()


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "all"
    if cmd == "all":
        main_all()
    elif cmd == "dial":
        step_dial(int(sys.argv[2]), sys.argv[3])
    elif cmd == "objects":
        if len(sys.argv) > 3:
            step_objects(int(sys.argv[2]), sys.argv[3])
            finish()
        else:
            main_objects()
    elif cmd == "malformed":
        step_malformed(int(sys.argv[2]), sys.argv[3])
    elif cmd == "serve":
        step_serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        print(__doc__)
