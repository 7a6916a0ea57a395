# Protocol upgrades (tunnel.pyx): an HTTP/1.1 Upgrade request (WebSocket) routed and answered
# like any request, then, after the upstream's 101, its client connection and its upstream
# connection spliced byte for byte by a Tunnel until either side ends.

cdef enum:                   # why a tunnel ended (TunnelStats.ended, by index; TUNNEL_CAUSES names)
    T_CLIENT = 0             # the client closed first
    T_UPSTREAM               # the upstream closed first
    T_RESET                  # a side reset its connection (or a write to it failed)
    T_IDLE                   # no byte either way within the route's tunnel idle_timeout
    T_LIFETIME               # the route's tunnel max_lifetime passed
    T_DRAIN                  # the gateway drained and the drain timeout passed
    T_CAUSES

cdef enum:
    TUNNEL_BUCKETS = 10      # TUNNEL_BOUNDS (9 upper bounds, seconds) and +Inf


cdef struct FrameCursor:
    # Where one direction of a WebSocket stream stands (RFC 6455 5.2): inside a frame's payload,
    # inside a frame header (which may be split across reads), or between frames (a boundary:
    # the only place the gateway may put a close frame of its own).
    unsigned long long remaining     # payload bytes of the current frame still to pass
    int have                         # bytes of the next frame's header seen so far
    int need                         # its whole size once its second byte told it (0: not yet)
    unsigned char head[14]


cdef class TunnelStats:
    # One route's tunnels, counted in C (read at scrape time; adopted by route id on reload).
    cdef public long long opened
    cdef public long long open
    cdef long long ended[T_CAUSES]
    cdef public long long bytes_in       # from clients, passed upstream
    cdef public long long bytes_out      # from the upstream, passed to clients
    cdef long long buckets[TUNNEL_BUCKETS]   # how long tunnels lasted (101 to the last close)
    cdef double duration_sum

    cdef int count_end(self, int cause, double seconds) noexcept


cdef class TunnelPolicy:
    # What a route lets through (plan.RoutePlan.tunnel; None: every Upgrade is refused).
    cdef readonly frozenset protocols    # lower-case protocol names (bytes) it may switch to
    cdef readonly double idle_timeout    # seconds; 0: none
    cdef readonly double max_lifetime    # seconds; 0: none
    cdef readonly TunnelStats stats


cdef class TunnelEnd:
    # One connection of a tunnel: the asyncio protocol of its transport after the switch.
    cdef Tunnel tunnel
    cdef TunnelEnd peer                  # the other connection: what this one sends goes there
    cdef object transport
    cdef object write_bound              # transport.write, looked up once
    cdef Outlet outlet
    cdef bint from_client                # this is the client's connection
    cdef bint eof                        # it half-closed (passed on to the peer)
    cdef bint lost                       # its connection is closed
    cdef bint held                       # its reading is paused: the peer's write buffer is full
    cdef bint finishing                  # the gateway closes: pass its bytes up to a frame's end
    cdef bint shut                       # nothing more of it passes (a close frame went instead)
    cdef FrameCursor frames              # (WebSocket) the frames it sends
    cdef public long long received

    cdef int pass_on(self, bytes data) except -1
    cdef int write(self, bytes data) except -1
    cdef int close(self) except -1
    cdef int reset(self) except -1


cdef class Tunnel(Timed):
    cdef public Exchange exchange        # the upgrade request, ended when the tunnel ends
    cdef public TunnelEnd client_end
    cdef public TunnelEnd upstream_end
    cdef TunnelStats stats
    cdef object server                   # the ListenerServer whose connections it is among
    cdef TimerWheel wheel
    cdef public bint websocket           # frames are tracked: the gateway can close with 1001
    cdef double opened_at
    cdef double active_at                # the last byte either way (coarse clock)
    cdef double idle_timeout
    cdef double ends_at                  # max lifetime; 0: none
    cdef double grace                    # how long closing may take before both are aborted
    cdef double grace_at                 # closing: abort at this time; 0: not closing
    cdef public int cause                # T_*, -1 while open
    cdef bint closing
    cdef bint finished

    cdef int start(self, Exchange x, ClientProtocol client, UpstreamConnection conn, bytes head) except -1
    cdef int note_cause(self, int cause) noexcept
    cdef int going_away(self, int cause) except -1
    cdef int shut_direction(self, TunnelEnd end) except -1
    cdef int close_ends(self) except -1
    cdef int refile(self) except -1
    cdef int finish(self) except -1
    cpdef start_draining(self)
    cpdef close_for_drain(self)
    cpdef abort(self)


cdef int upgrade_head(ClientProtocol client, HttpParser parser) except -1
cdef int hold_early(ClientProtocol client, bytes data) except -1
cdef bint accept_upgrade(Exchange x, RouteCore route) except -1
cdef bint tunnel_asked(Exchange x, HeadLines* lines) except -1
cdef int start_tunnel(Exchange x, ReplyHead* reply) except -1
