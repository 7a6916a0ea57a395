# -- protocol upgrades: the Upgrade request, the 101, and the tunnel after it ------------------------
#
# Theory of operation. An HTTP/1.1 request with ``Upgrade`` and ``Connection: upgrade`` (RFC 9110
# 7.8; a WebSocket handshake, RFC 6455 4) is parsed, checked and queued like any request
# (``upgrade_head``); read_request_head notes what it asks for (``Exchange.upgrade``) and that
# nothing after it on the connection is HTTP (``must_close``). Bytes the client sends after the
# head are held, bounded, and reach the upstream only after its 101: sent earlier, they would be
# read as requests of their own by an upstream that refused the upgrade (request smuggling).
#
# Its turn comes: the route decides (``accept_upgrade``: a route that does not tunnel the asked
# protocol answers 501), its request plugins run as for any request (a refused upgrade gets its
# 401/403/429, never a tunnel), and the head goes upstream offering only the protocols the route
# allows. A non-101 answer is passed back as a normal response, then the connection closes. A 101
# (``tunnel_asked``: it must name a protocol that was offered) passes the on_response hooks like
# any head (no body filters: nothing follows it as HTTP), goes to the client, and both
# connections are handed to a Tunnel (``start_tunnel``): each transport gets a TunnelEnd as its
# protocol, the upstream connection leaves its pool, the client connection its listener's
# connections (the Tunnel takes its place there).
#
# The Tunnel passes bytes as they come, each read written to the other side at once (straight to
# the socket while its transport holds nothing). Flow control both ways: a side whose transport
# holds more than the listener's buffer_bytes pauses reading from the other, until it drains, so
# a tunnel holds at most about buffer_bytes plus one read per direction. Half-closes pass on
# (FIN becomes FIN where the transport can half-close, TLS closes); a reset becomes a reset.
#
# WebSocket tunnels also walk the frame headers going each way (FrameCursor: a few bytes looked
# at per frame, never the payloads), so the gateway knows where each stream stands between
# frames. When it closes a tunnel itself (idle timeout, max lifetime, drain) it ends each
# direction with a close frame 1001 "going away" (RFC 6455 7.4.1) at a frame boundary: unmasked
# to the client, masked to the upstream (a client's frames are masked, 5.3), then closes both
# connections; a direction in the middle of a frame is let run to that frame's end, within the
# listener's linger timeout. Other protocols are closed with a FIN.
#
# The exchange ends when the tunnel does: its access log line then (status 101, bytes both ways,
# the whole duration), while the request is timed, and the upstream judged, at the 101.

import socket as _socket
import struct as _struct

# By T_* cause: the label of fastgw_tunnels_closed_total, and what the access log's error says.
TUNNEL_CAUSES = ("client", "upstream", "reset", "idle", "lifetime", "drain")
cdef tuple _TUNNEL_ERRORS = (
    None, None, None, "tunnel idle timeout", "tunnel max_lifetime reached",
    "gateway draining: tunnel closed (1001 going away)",
)  # fmt: skip
TUNNEL_BOUNDS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
cdef double _TUNNEL_BOUNDS[TUNNEL_BUCKETS - 1]
for _i, _bound in enumerate(TUNNEL_BOUNDS):
    _TUNNEL_BOUNDS[_i] = _bound

cdef bytes _GOING_AWAY = _struct.pack("!H", 1001) + b"going away"  # a close frame's payload
cdef bytes _WEBSOCKET = b"websocket"
cdef bytes _LINGER_RESET = _struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@cython.final
cdef class TunnelStats:
    """One route's tunnels: opened, open, how they ended, bytes each way, how long they lasted."""

    cdef int count_end(self, int cause, double seconds) noexcept:
        cdef int i = 0
        self.open -= 1
        self.ended[cause] += 1
        while i < TUNNEL_BUCKETS - 1 and seconds > _TUNNEL_BOUNDS[i]:
            i += 1
        self.buckets[i] += 1
        self.duration_sum += seconds
        return 0

    def snapshot(self) -> dict:
        """{"opened", "open", "bytes_in", "bytes_out": n, "ended": {cause: n}, "duration":
        (per-bucket counts, sum of seconds)}, for metrics."""
        cdef int i
        return {
            "opened": self.opened,
            "open": self.open,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "ended": {TUNNEL_CAUSES[i]: self.ended[i] for i in range(T_CAUSES)},
            "duration": ([self.buckets[i] for i in range(TUNNEL_BUCKETS)], self.duration_sum),
        }


@cython.final
cdef class TunnelPolicy:
    """What a route tunnels (its ``upgrade`` protocols) and how long a tunnel may live."""

    def __init__(self, protocols, double idle_timeout, double max_lifetime, TunnelStats stats) -> None:
        self.protocols = frozenset(p.lower().encode("ascii") for p in protocols)
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.stats = stats


# -- the Upgrade request ---------------------------------------------------------------------------

cdef int upgrade_head(ClientProtocol client, HttpParser parser) except -1:
    """A head that switches protocols (EV_UPGRADE): checked and queued as any (``on_head``), then
    nothing more on this connection is parsed; what follows the head is held for the tunnel."""
    cdef bytes method = parser.method()
    if method == b"CONNECT" or method == b"PRI":  # a tunnel to anywhere, the HTTP/2 preface
        raise request_fault(parser, EV_UPGRADE, False)
    cdef Py_ssize_t after = parser.end - parser.pos
    cdef bytes tail = PyBytes_FromStringAndSize(parser.pos, after) if after > 0 else None
    client.on_head(parser)
    client.parsing = None  # no body (read_request_head refused one): its request is complete
    if client.closed:
        return 0  # answered at once (no route, a refusal) and closed
    client.parser = None
    client.early = []
    if tail is not None:
        hold_early(client, tail)
    return 0


cdef int hold_early(ClientProtocol client, bytes data) except -1:
    """Bytes after an upgrade request: the tunnel's first, passed on once the upstream switched
    (or dropped with the connection). Over the listener's buffer, reading pauses."""
    cdef list early = client.early
    early.append(data)
    if sum([PyBytes_GET_SIZE(<bytes>piece) for piece in early]) > client.listener.buffer_bytes:
        client.pause_request(P_BUFFER)
    return 0


cdef list _protocols(bytes value):
    """An Upgrade value's protocols as they were written (``name`` or ``name/version``)."""
    return [p.strip() for p in value.split(b",") if p.strip()]


cdef bytes _protocol_name(bytes protocol):
    return protocol.partition(b"/")[0].strip().lower()


cdef bint accept_upgrade(Exchange x, RouteCore route) except -1:
    """Does ``route`` tunnel what the request asks for? If not, answer (501: not enabled here; 400:
    HTTP/1.0, which cannot switch) and say no. If so, the head sent upstream asks for the
    protocols the route allows, in the client's order."""
    cdef TunnelPolicy policy = route.tunnel
    cdef bytes asked = x.upgrade
    if x.http_10:
        x.answer_fault(ClientFault("a protocol upgrade needs HTTP/1.1"), None)
        return False
    offered = [p for p in _protocols(asked) if _protocol_name(p) in policy.protocols] if policy else []
    if not offered:
        shown = asked[:64].decode("latin-1").encode("ascii", "replace").decode()
        x.answer_fault(ClientFault(f"protocol upgrade to {shown!r} is not enabled on this route", 501), None)
        return False
    x.upgrade = b", ".join(offered)
    x.pass_block += b"Connection: Upgrade\r\nUpgrade: " + x.upgrade + b"\r\n"
    return True


# -- the upstream's 101 ----------------------------------------------------------------------------

cdef bint tunnel_asked(Exchange x, HeadLines* lines) except -1:
    """A 101 is good only as the answer to an upgrade this gateway offered, naming one of the
    protocols offered (RFC 9110 15.2.2); else 502. (Its Sec-WebSocket-Accept is the client's to
    check: a proxy passes it as it came.)"""
    if x.upgrade is None:
        x.fail(x.upstream_fault("switched protocols unasked", 502))
        return False
    chosen = None
    cdef int i
    for i in range(lines.count):
        if lines.names[i].len == 7 and _ieq(lines.base + lines.names[i].off, "upgrade", 7):
            chosen = PyBytes_FromStringAndSize(lines.base + lines.values[i].off, lines.values[i].len)
            break
    if chosen is None or _protocol_name(chosen) not in [_protocol_name(p) for p in _protocols(x.upgrade)]:
        x.fail(x.upstream_fault("switched to a protocol it was not offered", 502))
        return False
    if type(x.client) is not ClientProtocol or type(x.conn) is not UpstreamConnection:
        x.fail(x.upstream_fault("switched protocols on a connection that cannot be tunnelled", 502))
        return False
    x.upgrade = chosen
    return True


cdef int start_tunnel(Exchange x, ReplyHead* reply) except -1:
    """The 101 (after the on_response hooks) goes to the client, and both connections become a
    Tunnel's."""
    cdef ClientProtocol client = <ClientProtocol>x.client
    cdef list added = [(b"Upgrade", x.upgrade), (b"Connection", b"Upgrade")]
    if reply.added != NULL:
        added = <list>reply.added + added
    reply.added = <PyObject*>added
    cdef bytes head = render_reply(
        reply, False, False, False, client.listener.request_id_header, x.request_id
    )  # fmt: skip
    cdef Tunnel tunnel = Tunnel.__new__(Tunnel)
    tunnel.start(x, client, <UpstreamConnection>x.conn, head)
    return 0


# -- the tunnel ------------------------------------------------------------------------------------

cdef inline bint _at_boundary(FrameCursor* f) noexcept nogil:
    return f.remaining == 0 and f.have == 0


cdef Py_ssize_t _walk_frames(FrameCursor* f, const unsigned char* p, Py_ssize_t n, bint stop) noexcept nogil:
    """Follow ``n`` more bytes of a WebSocket stream; return how many were walked: all of them, or
    with ``stop``, those up to the first frame boundary reached. PERF: headers are looked at
    byte by byte, payloads skipped whole."""
    cdef Py_ssize_t i = 0
    cdef unsigned long long take, length
    cdef int k, size
    while i < n:
        if f.remaining:
            take = f.remaining if f.remaining < <unsigned long long>(n - i) else <unsigned long long>(n - i)
            i += <Py_ssize_t>take
            f.remaining -= take
            if stop and f.remaining == 0:
                return i
            continue
        f.head[f.have] = p[i]
        f.have += 1
        i += 1
        if f.have == 2:
            size = f.head[1] & 0x7F
            f.need = 2 + (4 if f.head[1] & 0x80 else 0) + (2 if size == 126 else 8 if size == 127 else 0)
        if f.have < 2 or f.have < f.need:
            continue
        size = f.head[1] & 0x7F
        if size == 126:
            length = (<unsigned long long>f.head[2] << 8) | f.head[3]
        elif size == 127:
            length = 0
            for k in range(2, 10):
                length = (length << 8) | f.head[k]
        else:
            length = size
        f.have = 0
        f.need = 0
        f.remaining = length
        if stop and length == 0:
            return i
    return i


cdef bytes _close_frame(bint masked):
    """A close frame 1001 "going away": as a server sends it (to the client), or masked with a
    fresh key as a client must (to the upstream)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(_GOING_AWAY)
    if not masked:
        return bytes((0x88, n)) + _GOING_AWAY
    key = os.urandom(4)
    return bytes((0x88, 0x80 | n)) + key + bytes([b ^ key[i % 4] for i, b in enumerate(_GOING_AWAY)])


cdef TunnelEnd _tunnel_end(Tunnel tunnel, object transport, bint from_client):
    cdef TunnelEnd end = TunnelEnd.__new__(TunnelEnd)
    end.tunnel = tunnel
    end.transport = transport
    end.write_bound = transport.write
    outlet_open(&end.outlet, transport)
    end.from_client = from_client
    return end


@cython.final
cdef class TunnelEnd:
    """One connection of a tunnel: what its transport calls once the 101 went through."""

    def data_received(self, data) -> None:
        self.pass_on(data if type(data) is bytes else bytes(data))

    cdef int pass_on(self, bytes data) except -1:
        """Bytes from this side go to the other at once (counted; for WebSocket, frames walked)."""
        cdef Tunnel tunnel = self.tunnel
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t walked
        if tunnel is None or self.shut:
            return 0  # a close frame went in its place: nothing after it may follow
        self.received += n
        if self.from_client:
            tunnel.stats.bytes_in += n
        else:
            tunnel.stats.bytes_out += n
        tunnel.active_at = coarse()
        if tunnel.websocket:
            walked = _walk_frames(&self.frames, <const unsigned char*>PyBytes_AS_STRING(data), n, self.finishing)
            if self.finishing and _at_boundary(&self.frames):
                self.peer.write(data[:walked] if walked < n else data)
                tunnel.shut_direction(self)
                return 0
        self.peer.write(data)
        return 0

    def eof_received(self) -> bool:
        """This side half-closed: pass the FIN on (TLS cannot half-close: close that side)."""
        self.eof = True
        cdef Tunnel tunnel = self.tunnel
        cdef TunnelEnd peer = self.peer
        if tunnel is None:
            return False
        tunnel.note_cause(T_CLIENT if self.from_client else T_UPSTREAM)
        if peer.lost or peer.eof or tunnel.closing or not peer.transport.can_write_eof():
            peer.close()  # both directions ended (or cannot end apart): after what it holds
            return False
        peer.outlet.fd = -1  # the transport writes the FIN after what it holds: so must we
        peer.transport.write_eof()
        return self.transport.can_write_eof()  # TLS closes after close_notify whatever we say

    def connection_lost(self, exc) -> None:
        self.lost = True
        self.outlet.fd = -1
        cdef Tunnel tunnel = self.tunnel
        if tunnel is None:
            return
        cdef TunnelEnd peer = self.peer
        if exc is not None:
            tunnel.note_cause(T_RESET)
            if tunnel.exchange is not None and tunnel.exchange.abort_reason is None:
                tunnel.exchange.abort_reason = (
                    f"tunnel: the {'client' if self.from_client else 'upstream'} connection failed: {exc}"
                )
        else:
            tunnel.note_cause(T_CLIENT if self.from_client else T_UPSTREAM)
        if peer.lost:
            tunnel.finish()
            return
        if exc is not None and not tunnel.closing and not self.eof:
            peer.reset()  # a reset passes on as a reset (not one met after this side's own FIN)
        else:
            peer.close()
        if not tunnel.grace_at:  # the other side gets the linger timeout to take what it holds
            tunnel.grace_at = monotonic() + tunnel.grace
            tunnel.refile()

    def pause_writing(self) -> None:
        """This side's transport holds more than its high-water mark: stop reading the other."""
        cdef TunnelEnd peer = self.peer
        if peer is not None and not peer.held and not peer.lost:
            peer.held = True
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        cdef TunnelEnd peer = self.peer
        if peer is not None and peer.held:
            peer.held = False
            if not peer.lost:
                peer.transport.resume_reading()

    cdef int write(self, bytes data) except -1:
        if not self.lost:
            outlet_write(&self.outlet, self.write_bound, self.transport, data)
        return 0

    cdef int close(self) except -1:
        """Close after what the transport holds is written."""
        if not self.lost:
            self.outlet.fd = -1
            self.transport.close()
        return 0

    cdef int reset(self) except -1:
        """Close with a TCP reset, as the other side's connection was."""
        if self.lost:
            return 0
        self.outlet.fd = -1
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass  # already gone: abort() is all there is to do
        self.transport.abort()
        return 0


@cython.final
cdef class Tunnel(Timed):
    """An upgraded connection pair, spliced (see the theory above), and the exchange that made it.

    Open -> (closing: a close frame each way at a frame boundary, then FIN) -> finished. Its
    deadlines, on the loop's timer wheel: the route's idle timeout (from the last byte either
    way, re-filed lazily), its max lifetime, and while closing the listener's linger timeout,
    after which what is left is aborted. It is among its listener's connections while open, so
    a drain waits for it up to the drain timeout, then closes it with 1001 (``close_for_drain``)."""

    cdef int start(self, Exchange x, ClientProtocol client, UpstreamConnection conn, bytes head) except -1:
        cdef RouteCore route = x.route
        cdef TunnelPolicy policy = route.tunnel
        cdef ListenerCore listener = client.listener
        cdef HttpParser parser = conn.parser
        cdef double now = _now()
        # What the upstream sent after its 101 in the same read: the tunnel's first bytes.
        cdef bytes tail = (
            PyBytes_FromStringAndSize(parser.pos, parser.end - parser.pos) if parser.end > parser.pos else None
        )
        cdef list early = client.early
        self.exchange = x
        self.stats = policy.stats
        self.server = client.server
        self.wheel = client.wheel
        self.websocket = _protocol_name(x.upgrade) == _WEBSOCKET
        self.opened_at = now
        self.active_at = coarse()
        self.idle_timeout = policy.idle_timeout
        self.ends_at = now + policy.max_lifetime if policy.max_lifetime else 0.0
        self.grace = listener.linger_timeout
        self.cause = -1
        self.client_end = _tunnel_end(self, client.transport, True)
        self.upstream_end = _tunnel_end(self, conn.transport, False)
        self.client_end.peer = self.upstream_end
        self.upstream_end.peer = self.client_end
        # The exchange: answered (its 101), its upstream judged now, not when the tunnel ends.
        x.state = X_TUNNEL
        x.response_started = True
        x.body_filters = None
        x.switched_at = now
        x.bytes_sent += PyBytes_GET_SIZE(head)
        if (<GroupCore>route.upstream).observes:
            route.upstream.observe(x)
        x.conn = None
        # The upstream connection leaves its pool (and the pool's count: a tunnel is no slot).
        conn.exchange = None
        conn.closed = True  # its data_received, returning, must not give it back to the pool
        conn.deadline = 0.0
        conn.outlet.fd = -1
        conn.wheel.unfile(conn)
        conn.pool.in_use -= 1
        conn.pool.forget(conn)
        # The client connection: the tunnel takes its place among the listener's connections.
        client.closed = True
        client.active = None
        client.early = None
        client.outlet.fd = -1
        client.deadline = client.send_deadline = 0.0
        client.wheel.unfile(client)
        self.server.connections.pop(client, None)
        self.server.connections[self] = None
        conn.transport.set_write_buffer_limits(high=listener.buffer_bytes)
        client.transport.set_protocol(self.client_end)
        conn.transport.set_protocol(self.upstream_end)
        self.stats.opened += 1
        self.stats.open += 1
        self.client_end.write(head)
        if early:
            for piece in early:
                self.client_end.pass_on(piece)
        if tail is not None:
            self.upstream_end.pass_on(tail)
        if client.paused:
            client.paused = 0
            client.transport.resume_reading()
        if conn.reading_paused:
            conn.reading_paused = False
            conn.transport.resume_reading()
        self.refile()
        return 0

    cdef int note_cause(self, int cause) noexcept:
        """The first reason the tunnel began to end is the one it is counted and logged by."""
        if self.cause < 0:
            self.cause = cause
        return 0

    cdef int going_away(self, int cause) except -1:
        """The gateway closes the tunnel: 1001 each way at a frame boundary (WebSocket), then FIN."""
        if self.closing or self.finished:
            return 0
        self.note_cause(cause)
        self.closing = True
        self.grace_at = monotonic() + self.grace
        cdef TunnelEnd end
        if self.websocket:
            for end in (self.client_end, self.upstream_end):
                if end.lost or end.peer.lost or end.eof:
                    end.shut = True
                elif _at_boundary(&end.frames):
                    self.shut_direction(end)
                else:
                    end.finishing = True  # its frame runs to its end first (pass_on)
            if not (self.client_end.shut and self.upstream_end.shut):
                self.refile()
                return 0
        self.close_ends()
        self.refile()
        return 0

    cdef int shut_direction(self, TunnelEnd end) except -1:
        """What ``end`` sends ends here: a close frame to its peer in place of anything more."""
        end.shut = True
        end.finishing = False
        end.peer.write(_close_frame(end.from_client))  # to the upstream: masked
        if self.client_end.shut and self.upstream_end.shut:
            self.close_ends()
        return 0

    cdef int close_ends(self) except -1:
        self.client_end.close()
        self.upstream_end.close()
        return 0

    cdef int refile(self) except -1:
        """File the next deadline: closing, the abort; else the max lifetime or the idle end."""
        cdef double at = 0.0
        if self.finished:
            return 0
        if self.grace_at:
            at = self.grace_at
        else:
            if self.idle_timeout:
                at = self.active_at + self.idle_timeout
            if self.ends_at and (not at or self.ends_at < at):
                at = self.ends_at
        if at:
            self.wheel.file(self, at)
        return 0

    cpdef expire(self, double now):
        """The wheel's call: abort what a closing tunnel still holds after the linger timeout;
        close an open one past its max lifetime or idle timeout; else file the next deadline."""
        if self.finished:
            return
        if self.grace_at:
            if now >= self.grace_at:
                for end in (self.client_end, self.upstream_end):
                    if not (<TunnelEnd>end).lost:
                        (<TunnelEnd>end).outlet.fd = -1
                        (<TunnelEnd>end).transport.abort()
                return
        elif self.ends_at and now >= self.ends_at:
            self.going_away(T_LIFETIME)
        elif self.idle_timeout and now >= self.active_at + self.idle_timeout:
            self.going_away(T_IDLE)
        self.refile()

    cdef int finish(self) except -1:
        """Both connections are closed: count it, and end the exchange (its access log line)."""
        if self.finished:
            return 0
        self.finished = True
        self.wheel.unfile(self)
        cdef int cause = self.cause if self.cause >= 0 else T_RESET
        self.stats.count_end(cause, _now() - self.opened_at)
        self.server.connections.pop(self, None)
        cdef Exchange x = self.exchange
        self.exchange = None
        self.client_end.tunnel = self.upstream_end.tunnel = None  # no cycle left for the collector
        self.client_end.peer = self.upstream_end.peer = None
        if _TUNNEL_ERRORS[cause] is not None and x.abort_reason is None:
            x.abort_reason = _TUNNEL_ERRORS[cause]
        x.body_received = self.client_end.received
        x.bytes_sent += self.upstream_end.received
        x.end(101)
        return 0

    # -- for the listener: drain and stop ---------------------------------------------------------
    cpdef start_draining(self):
        """A drain began: a tunnel lives on until it ends or the drain timeout passes."""

    cpdef close_for_drain(self):
        """The drain timeout passed: 1001 "going away" each way, then close."""
        self.going_away(T_DRAIN)

    cpdef abort(self):
        for end in (self.client_end, self.upstream_end):
            if end is not None and not (<TunnelEnd>end).lost:
                (<TunnelEnd>end).outlet.fd = -1
                (<TunnelEnd>end).transport.abort()

    @property
    def open(self) -> bool:
        return not self.finished
