"""A small authoritative DNS server for tests, on loopback: a zone held in memory
(TXT and CNAME records, NXDOMAIN with an SOA for unknown names, SERVFAIL on
demand), served over UDP and TCP (dnslib's threaded server) and over DNS over
HTTPS in plain http (RFC 8484, GET and POST) for Kubo, whose `DNS.Resolvers`
only takes DoH URLs (and accepts http:// on 127.0.0.1). Threads, not the test's
event loop: a test may block on a subprocess (Kubo) while the server answers.

A "black hole" (a bound UDP port that never answers) stands for a DNS server
that is down and times out."""
from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from dnslib import CNAME, QTYPE, RCODE, RR, SOA, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def _key(name) -> str:
    return str(name).lower().rstrip(".")


class Zone(BaseResolver):
    def __init__(self):
        self.records: dict[str, list[tuple[str, object, int]]] = {}
        self.servfail: set[str] = set()
        self.queries: list[str] = []  # every question asked, in order (name without the final dot)
        self.lock = threading.Lock()

    # --- editing ---------------------------------------------------------------------
    def txt(self, name: str, *values: str | list[str], ttl: int = 60) -> None:
        """Set the TXT records of name (replacing them); a list value is one record of
        several character-strings."""
        with self.lock:
            rest = [r for r in self.records.get(_key(name), []) if r[0] != "TXT"]
            self.records[_key(name)] = rest + [("TXT", v, ttl) for v in values]

    def cname(self, name: str, target: str, ttl: int = 60) -> None:
        with self.lock:
            self.records[_key(name)] = [("CNAME", target, ttl)]

    def remove(self, name: str) -> None:
        with self.lock:
            self.records.pop(_key(name), None)

    def count(self, name: str) -> int:
        return sum(1 for q in self.queries if q == _key(name))

    # --- answering -----------------------------------------------------------------------
    def resolve(self, request: DNSRecord, handler=None) -> DNSRecord:
        reply = request.reply()
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        name = _key(qname)
        with self.lock:
            self.queries.append(name)
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            current, hops = name, 0
            while hops < 8:
                records = self.records.get(current)
                if records is None:
                    if hops == 0:
                        reply.header.rcode = RCODE.NXDOMAIN
                    reply.add_auth(RR("test.", QTYPE.SOA, ttl=300,
                                      rdata=SOA("ns.test.", "admin.test.", (1, 3600, 600, 86400, 30))))
                    return reply
                cname = next((r for r in records if r[0] == "CNAME"), None)
                if cname is not None and qtype != "CNAME":
                    reply.add_answer(RR(current + ".", QTYPE.CNAME, ttl=cname[2], rdata=CNAME(cname[1] + ".")))
                    current, hops = _key(cname[1]), hops + 1
                    continue
                for rtype, value, ttl in records:
                    if rtype == qtype == "TXT":
                        strings = value if isinstance(value, list) else [value]
                        reply.add_answer(RR(current + ".", QTYPE.TXT, ttl=ttl, rdata=TXT([s.encode() for s in strings])))
                return reply
        return reply

    def answer_wire(self, data: bytes) -> bytes:
        return self.resolve(DNSRecord.parse(data)).pack()


class _DohHandler(BaseHTTPRequestHandler):
    zone: Zone

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, wire: bytes) -> None:
        try:
            body = self.zone.answer_wire(wire)
        except Exception:  # noqa: BLE001 - a bad query: 400
            self.send_response(400)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/dns-message")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        q = parse_qs(urlsplit(self.path).query).get("dns", [""])[0]
        self._answer(base64.urlsafe_b64decode(q + "=" * (-len(q) % 4)))

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))


class DnsServer:
    """The zone over UDP+TCP (same port) and DoH (http) on 127.0.0.1."""

    def __init__(self, zone: Zone | None = None):
        self.zone = zone or Zone()
        logger = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-data,-error", logf=lambda _s: None)
        for _ in range(20):
            port = _free_udp_tcp_port()
            try:
                self.udp = DNSServer(self.zone, address="127.0.0.1", port=port, logger=logger)
                self.tcp = DNSServer(self.zone, address="127.0.0.1", port=port, tcp=True, logger=logger)
                break
            except OSError:
                continue
        self.port = port
        handler = type("DohHandler", (_DohHandler,), {"zone": self.zone})
        self.doh = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.doh.daemon_threads = True

    @property
    def udp_url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def doh_url(self) -> str:
        return f"http://127.0.0.1:{self.doh.server_address[1]}/dns-query"

    def start(self) -> "DnsServer":
        self.udp.start_thread()
        self.tcp.start_thread()
        threading.Thread(target=self.doh.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.udp.stop()
        self.tcp.stop()
        self.doh.shutdown()
        self.doh.server_close()
        self.udp.server.server_close()
        self.tcp.server.server_close()


class BlackHole:
    """A UDP port that receives and never answers: a DNS server that times out."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def _free_udp_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
