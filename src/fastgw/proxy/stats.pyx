# -- request statistics ----------------------------------------------------------------------------

_OUTCOME_NAMES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx", "failed")  # Target.outcomes slots
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
cdef double _BOUNDS[LATENCY_BUCKETS - 1]
for _i, _bound in enumerate(LATENCY_BOUNDS):
    _BOUNDS[_i] = _bound


cdef int latency_bucket(double seconds) noexcept nogil:
    cdef int i
    for i in range(LATENCY_BUCKETS - 1):
        if seconds <= _BOUNDS[i]:
            return i
    return LATENCY_BUCKETS - 1


cdef int method_slot(int llhttp_method) noexcept nogil:
    """llhttp's method number -> METHOD_NAMES index."""
    if llhttp_method == 1:
        return 0  # GET
    if llhttp_method == 2:
        return 1  # HEAD
    if llhttp_method == 3:
        return 2  # POST
    if llhttp_method == 4:
        return 3  # PUT
    if llhttp_method == 0:
        return 4  # DELETE
    if llhttp_method == 28:
        return 5  # PATCH
    if llhttp_method == 6:
        return 6  # OPTIONS
    return 7


@cython.final
cdef class RequestStats:
    """Counters of the requests that ended on one route (or matched no route on a listener).

    PERF: plain C integers and bucket arrays, incremented once as a request ends (no Python call);
    ``snapshot`` turns them into Python values only when metrics are scraped.
    """

    cdef int count(self, int slot, int status, double total, double upstream) noexcept:
        """One request ended with ``status`` (0: no response); durations < 0 are not observed."""
        cdef int status_class = status // 100 if 100 <= status < 600 else 0
        self.requests[slot * STATUS_SLOTS + status_class] += 1
        if status == 401:
            self.denied[0] += 1
        elif status == 403:
            self.denied[1] += 1
        elif status == 429:
            self.denied[2] += 1
        if total >= 0.0:
            self.total_buckets[latency_bucket(total)] += 1
            self.total_sum += total
        if upstream >= 0.0:
            self.upstream_buckets[latency_bucket(upstream)] += 1
            self.upstream_sum += upstream
        return 0

    def record(self, str method, int status, double total=-1.0, double upstream=-1.0) -> None:
        """Count one request from Python (tests, and requests refused outside the exchange)."""
        slot = METHOD_NAMES.index(method) if method in METHOD_NAMES else 7
        self.count(slot, status, total, upstream)

    def snapshot(self) -> dict:
        """{"requests": {(method, status class): n}, "denied": {status: n}, "total"/"upstream":
        (per-bucket counts, sum of seconds)}; the status class is "1xx".."5xx" or "none"."""
        cdef int m, c
        requests = {}
        for m in range(METHOD_SLOTS):
            for c in range(STATUS_SLOTS):
                if self.requests[m * STATUS_SLOTS + c]:
                    requests[(METHOD_NAMES[m], f"{c}xx" if c else "none")] = self.requests[m * STATUS_SLOTS + c]
        return {
            "requests": requests,
            "denied": {401: self.denied[0], 403: self.denied[1], 429: self.denied[2]},
            "total": ([self.total_buckets[c] for c in range(LATENCY_BUCKETS)], self.total_sum),
            "upstream": ([self.upstream_buckets[c] for c in range(LATENCY_BUCKETS)], self.upstream_sum),
        }
