# Request statistics (stats.pyx): plain C counters, incremented once as a request ends and read
# only when metrics are scraped.

cdef enum:
    METHOD_SLOTS = 8         # GET HEAD POST PUT DELETE PATCH OPTIONS other
    STATUS_SLOTS = 6         # 0: no response (the client left first), then 1xx .. 5xx
    LATENCY_BUCKETS = 15     # LATENCY_BOUNDS (14 upper bounds, seconds) and +Inf
    TARGET_OUTCOMES = 7      # Target.outcomes: 0 unanswered, 1..5 status class, 6 failed
    TARGET_FAILED = 6        # connect error, reset, timeout or malformed response

cdef int latency_bucket(double seconds) noexcept nogil
cdef int method_slot(int llhttp_method) noexcept nogil


cdef class RequestStats:
    # The requests that ended on one route (or on no route of a listener).
    cdef long long requests[METHOD_SLOTS * STATUS_SLOTS]
    cdef long long denied[3]             # answered 401, 403, 429 (auth and rate-limit refusals)
    cdef long long total_buckets[LATENCY_BUCKETS]    # gateway: head parsed -> last byte out
    cdef double total_sum
    cdef long long upstream_buckets[LATENCY_BUCKETS]  # upstream: head written -> response end
    cdef double upstream_sum

    cdef int count(self, int method_slot, int status, double total, double upstream) noexcept
