# What a client side carries beyond its requests (declared in exchange.pxd): the listener's
# Observers, shared by all its connections, and a TLS connection's TlsFacts. PERF: memory: an
# idle connection held these as eight fields of its own; now two pointers, one of them None on
# cleartext connections.

cdef class Observers:
    """What every request of a listener is counted, logged and identified by. The listener
    server makes one; the gateway sets its access log, span export and recent errors (and sets
    them again when a reload replaces them)."""

    def __init__(self, RequestStats unrouted=None, RequestIds request_ids=None) -> None:
        self.unrouted = unrouted
        self.request_ids = request_ids
        self.access_log = None  # None (the default) costs the hot path one pointer test
        self.spans = None
        self.recent_errors = None

    @property
    def spans(self):
        return self.span_export

    @spans.setter
    def spans(self, span_export):
        self.span_export = span_export
        # Without export every new trace is sampled: the gateway heads it for others. Read here,
        # once: a reload that changes the ratio makes a new SpanExport, set here again.
        self.trace_sample_max = SAMPLE_ALL if span_export is None else span_export.sample_max


cdef Observers _NO_OBSERVERS = Observers()  # the gateway's own calls: nothing counted or logged


cdef class TlsFacts:
    """A TLS client connection's version, cipher suite and verified client certificate, and
    that certificate's facts rendered once as header lines for upstreams (mTLS)."""

    def __init__(self, str version, str cipher, certificate, bytes cert_lines) -> None:
        self.version = version
        self.cipher = cipher
        self.certificate = certificate
        self.cert_lines = cert_lines
