# cython: language_level=3
"""The access log, compiled: one JSON line per request, written straight from the exchange's C
fields into one buffer that is written out in batches.

The hot path's only cost when a request ends is one call to ``AccessLog.record``: it samples,
then writes the configured fields, in their order, as JSON into a growing C buffer (no dict, no
str per field, no encoder call: the bytes of the path, host and request id are escaped where they
lie). The buffer is written with one ``write(2)`` when it holds ``buffer_bytes`` or when
``flush_interval`` has passed since its first line, never once per request. Writes to a regular
file block only for the copy into the page cache; a slow stdout pipe is written the same way.

The line is the one ``orjson.dumps`` made of the fields before (tests compare the two byte for
byte): request bytes read as Latin-1 (as HTTP/1.1 header bytes are) and written as UTF-8,
``"``, ``\\`` and control characters escaped as JSON requires; durations in milliseconds to the
microsecond, written as the shortest decimal (``12.5``, ``0.003``, ``7.0``); the time as RFC 3339
UTC with milliseconds, its date and time of day formatted once per second.

A request that ended in an error has its ``error`` field set (the upstream fault's message), so
each error is logged once, on the request's own line, with its request id. Sampling keeps every
5xx, every request that got no response and every client abort (whose ``error`` says why).

On reload, an unchanged ``access_log`` section keeps the same log and reopens its file (a rotated
file, moved away, is followed by a new one at the configured path); a changed one starts a new
log and the old one flushes, closes its file, and passes the lines of requests still finishing on
old connections to the new one (or drops them when the new config has no access log). Draining
(SIGTERM, SIGINT) flushes the log before the process exits.
"""

cimport cython
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from libc.time cimport gmtime_r, time_t, tm
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec
from posix.unistd cimport close, getpid, write

from fastgw._proxy cimport Downstream, Exchange, Target

import asyncio
import logging
import os

import orjson

from fastgw.config.schema import ACCESS_LOG_FIELDS

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    char* PyBytes_AS_STRING(object data)
    Py_ssize_t PyBytes_GET_SIZE(object data)

log = logging.getLogger("fastgw")

cdef enum:  # the fields, in ACCESS_LOG_FIELDS order (the tests compare whole lines, all fields on)
    F_TIME = 0
    F_REQUEST_ID
    F_CLIENT
    F_METHOD
    F_HOST
    F_PATH
    F_QUERY
    F_LISTENER
    F_ROUTE
    F_UPSTREAM
    F_STATUS
    F_BYTES_IN
    F_BYTES_OUT
    F_DURATION_MS
    F_UPSTREAM_MS
    F_TRACE_ID
    F_SPAN_ID
    F_CONSUMER
    F_ERROR
    F_PROTOCOL
    F_TLS_VERSION
    F_TLS_CIPHER
    FIELD_CODES

cdef tuple KEYS = tuple(f'"{name}":'.encode() for name in ACCESS_LOG_FIELDS)  # each field's key, by code
cdef dict PROTOCOL_JSON = {"1.0": b'"HTTP/1.0"', "1.1": b'"HTTP/1.1"', "2": b'"HTTP/2"'}
cdef const char* HEX = b"0123456789abcdef"
cdef Py_ssize_t INITIAL_SLACK = 8192  # room past buffer_bytes for the line that fills it
cdef Py_ssize_t ESCAPED_MAX = 6  # bytes one input byte can become ("\u001f")


# -- JSON pieces, written at out (room reserved by the caller) ----------------------------------
cdef unsigned char PLAIN[256]  # 1: a byte copied as it is (printable ASCII but '"' and '\\')
for _byte in range(256):
    PLAIN[_byte] = 0x20 <= _byte < 0x80 and _byte != 0x22 and _byte != 0x5C


@cython.boundscheck(False)
cdef inline Py_ssize_t put_escaped(char* out, const unsigned char* text, Py_ssize_t n, bint latin1) noexcept nogil:
    """JSON string content for n bytes: UTF-8 passed as it is, or (latin1) bytes >= 0x80 as the
    two UTF-8 bytes of the code point they stand for. Returns the bytes written (<= 6n)."""
    cdef Py_ssize_t i = 0, run, o = 0
    cdef unsigned char c
    while i < n:
        run = i
        while i < n and PLAIN[text[i]]:  # PERF: runs of plain bytes copied at once
            i += 1
        if i > run:
            memcpy(out + o, text + run, i - run)
            o += i - run
            if i == n:
                break
        c = text[i]
        i += 1
        if c >= 0x80:
            if latin1:
                out[o] = <char>(0xC0 | (c >> 6))
                out[o + 1] = <char>(0x80 | (c & 0x3F))
                o += 2
            else:
                out[o] = <char>c
                o += 1
            continue
        out[o] = b"\\"
        if c == 0x22 or c == 0x5C:
            out[o + 1] = <char>c
        elif c == 0x0A:
            out[o + 1] = b"n"
        elif c == 0x0D:
            out[o + 1] = b"r"
        elif c == 0x09:
            out[o + 1] = b"t"
        elif c == 0x08:
            out[o + 1] = b"b"
        elif c == 0x0C:
            out[o + 1] = b"f"
        else:
            out[o + 1] = b"u"
            out[o + 2] = b"0"
            out[o + 3] = b"0"
            out[o + 4] = HEX[c >> 4]
            out[o + 5] = HEX[c & 0x0F]
            o += 4
        o += 2
    return o


cdef inline Py_ssize_t put_digits(char* out, unsigned long long value) noexcept nogil:
    cdef char digits[24]
    cdef int n = 0, i
    while True:
        digits[n] = <char>(48 + value % 10)
        n += 1
        value //= 10
        if value == 0:
            break
    for i in range(n):
        out[i] = digits[n - 1 - i]
    return n


cdef inline Py_ssize_t put_integer(char* out, long long value) noexcept nogil:
    if value < 0:
        out[0] = b"-"
        return 1 + put_digits(out + 1, <unsigned long long>(-value))
    return put_digits(out, <unsigned long long>value)


cdef inline Py_ssize_t put_ms(char* out, double seconds) noexcept nogil:
    """Milliseconds to the whole microsecond, as the shortest decimal that reads back as the
    double ``int(seconds * 1e6) / 1000`` (what orjson writes for it): under 2**43 ms a double's
    spacing is below 0.001, so that decimal is the integer part and up to three digits."""
    cdef long long micros = <long long>(seconds * 1000000.0)  # truncated, as int() does
    cdef Py_ssize_t o = 0
    cdef int rest
    if micros < 0:
        out[0] = b"-"
        o = 1
        micros = -micros
    o += put_digits(out + o, <unsigned long long>(micros // 1000))
    out[o] = b"."
    o += 1
    rest = <int>(micros % 1000)
    if rest == 0:
        out[o] = b"0"
        return o + 1
    out[o] = <char>(48 + rest // 100)
    o += 1
    rest = rest % 100
    if rest:
        out[o] = <char>(48 + rest // 10)
        o += 1
        rest = rest % 10
        if rest:
            out[o] = <char>(48 + rest)
            o += 1
    return o


cdef inline void put_two(char* out, int value) noexcept nogil:
    out[0] = <char>(48 + value // 10)
    out[1] = <char>(48 + value % 10)


cdef class AccessLog:
    """One JSON line per request (see the module's docstring); ``record`` is the hot path's call."""

    def __init__(self, config: object) -> None:
        names = tuple(config.fields)
        self.config = config
        self.fields = <int*>malloc(sizeof(int) * max(len(names), 1))
        if self.fields == NULL:
            raise MemoryError()
        self.field_count = len(names)
        for i, name in enumerate(names):
            self.fields[i] = ACCESS_LOG_FIELDS.index(name)
        self.sample = config.sample
        self.buffer_bytes = config.buffer_bytes
        self.capacity = self.buffer_bytes + INITIAL_SLACK
        self.buffer = <char*>malloc(self.capacity)
        if self.buffer == NULL:
            raise MemoryError()
        self.size = 0
        self.fd = -1
        self.timer = None
        self.successor = None
        self.retired = False
        self.write_errors = 0
        self.time_second = -1

    def __dealloc__(self) -> None:
        free(self.fields)
        free(self.buffer)

    @property
    def buffered(self) -> int:
        """Bytes of lines recorded and not written yet."""
        return self.size

    cpdef record(self, Exchange x, int status, double now):
        """Called by the exchange as it ends (status 0: no response was sent)."""
        cdef Py_ssize_t start = self.size
        if self.retired:
            if self.successor is not None:
                self.successor.record(x, status, now)
            return
        if (
            self.sample < 1.0
            and 0 < status < 500
            and x.abort_reason is None  # client aborts are always logged
            and self.next_random() >= self.sample
        ):
            return
        try:
            self.append_line(x, status, now)
        except BaseException:
            self.size = start  # no half line
            raise
        if self.size >= self.buffer_bytes:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.config.flush_interval, self.on_timer)

    cdef double next_random(self):
        """Uniform in [0, 1): xorshift64*, seeded per process on first use (after fork)."""
        cdef timespec ts
        cdef unsigned long long state = self.rng
        if state == 0:
            clock_gettime(CLOCK_REALTIME, &ts)
            state = (<unsigned long long>ts.tv_nsec << 20) ^ <unsigned long long>getpid() ^ 0x9E3779B97F4A7C15ULL
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        self.rng = state
        return <double>((state * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0)

    cdef int reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t wanted = self.size + more
        cdef char* grown
        if wanted <= self.capacity:
            return 0
        wanted = max(wanted, self.capacity * 2)
        grown = <char*>realloc(self.buffer, wanted)
        if grown == NULL:
            raise MemoryError()
        self.buffer = grown
        self.capacity = wanted
        return 0

    cdef int append_line(self, Exchange x, int status, double now) except -1:
        cdef int i
        self.reserve(1)
        self.buffer[self.size] = b"{"
        self.size += 1
        for i in range(self.field_count):
            if i:
                self.reserve(1)
                self.buffer[self.size] = b","
                self.size += 1
            self.put_literal(KEYS[self.fields[i]])
            self.put_field(self.fields[i], x, status, now)
        self.reserve(2)
        self.buffer[self.size] = b"}"
        self.buffer[self.size + 1] = b"\n"
        self.size += 2
        return 0

    cdef int put_field(self, int code, Exchange x, int status, double now) except -1:
        cdef Downstream client = x.client
        cdef Target target
        cdef bytes tp
        cdef object value
        if code == F_TIME:
            self.put_time(now - x.received_at)
        elif code == F_REQUEST_ID:
            self.put_bytes(x.request_id, 0, -1)
        elif code == F_CLIENT:
            if client.trusted:
                self.put_text(x.client_ip)  # the forwarded rule (fastgw.http.forwarded)
            else:
                self.put_bytes(client.peer_ip, 0, -1)
        elif code == F_METHOD:
            self.put_bytes(x.method, 0, -1)
        elif code == F_HOST:
            self.put_bytes(x.host, 0, -1)
        elif code == F_PATH:
            self.put_bytes(x.path, 0, -1)
        elif code == F_QUERY:
            if x.query:
                self.put_bytes(x.query, 1, -1)  # without its "?"
            else:
                self.put_null()
        elif code == F_LISTENER:
            self.put_text(getattr(x.listener, "name"))
        elif code == F_ROUTE:
            self.put_text(getattr(x.route, "id") if x.route is not None else None)
        elif code == F_UPSTREAM:
            target = x.target
            self.put_text(target.label if target is not None else None)
        elif code == F_STATUS:
            self.put_number(status)
        elif code == F_BYTES_IN:
            self.put_number(x.body_received)
        elif code == F_BYTES_OUT:
            self.put_number(x.bytes_sent)
        elif code == F_DURATION_MS:
            self.reserve(32)
            self.size += put_ms(self.buffer + self.size, now - x.received_at)
        elif code == F_UPSTREAM_MS:
            if x.response_started and x.upstream_sent_at > 0.0:
                self.reserve(32)
                self.size += put_ms(self.buffer + self.size, now - x.upstream_sent_at)
            else:
                self.put_null()
        elif code == F_TRACE_ID or code == F_SPAN_ID:
            tp = x.traceparent
            if tp is None:
                self.put_null()
            elif code == F_TRACE_ID:
                self.put_bytes(tp, 3, 35)  # 00-<trace id>-<span id>-<flags>
            else:
                self.put_bytes(tp, 36, 52)
        elif code == F_CONSUMER:
            self.put_text(x.consumer)
        elif code == F_ERROR:
            value = x.upstream_error
            self.put_text(str(value) if value is not None else x.abort_reason)
        elif code == F_PROTOCOL:
            value = PROTOCOL_JSON.get(client.protocol)  # PERF: no "HTTP/" + version per line
            if value is None:
                self.put_text("HTTP/" + client.protocol)
            else:
                self.put_literal(value)
        elif code == F_TLS_VERSION:
            self.put_text(client.tls_version)
        elif code == F_TLS_CIPHER:
            self.put_text(client.tls_cipher)
        return 0

    cdef int put_null(self) except -1:
        self.reserve(4)
        memcpy(self.buffer + self.size, b"null", 4)
        self.size += 4
        return 0

    cdef int put_literal(self, bytes json) except -1:
        self.reserve(PyBytes_GET_SIZE(json))
        memcpy(self.buffer + self.size, PyBytes_AS_STRING(json), PyBytes_GET_SIZE(json))
        self.size += PyBytes_GET_SIZE(json)
        return 0

    cdef int put_number(self, long long value) except -1:
        self.reserve(24)
        self.size += put_integer(self.buffer + self.size, value)
        return 0

    cdef int put_raw(self, const char* data, Py_ssize_t n, bint latin1) except -1:
        self.reserve(n * ESCAPED_MAX + 2)
        self.buffer[self.size] = b'"'
        self.size += 1 + put_escaped(self.buffer + self.size + 1, <const unsigned char*>data, n, latin1)
        self.buffer[self.size] = b'"'
        self.size += 1
        return 0

    cdef int put_bytes(self, object data, Py_ssize_t start, Py_ssize_t end) except -1:
        """``data[start:end]`` (end -1: to its end) read as Latin-1; None is null."""
        if data is None:
            return self.put_null()
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if end < 0 or end > n:
            end = n
        if start > end:
            start = end
        return self.put_raw(PyBytes_AS_STRING(data) + start, end - start, True)

    cdef int put_text(self, object value) except -1:
        """A str (UTF-8), None as null; anything else (a plugin's consumer) as orjson writes it."""
        cdef Py_ssize_t n
        cdef const char* data
        if value is None:
            return self.put_null()
        if type(value) is str:
            try:
                data = PyUnicode_AsUTF8AndSize(value, &n)
            except UnicodeError:  # lone surrogates: no UTF-8 for them, so a visible stand-in
                value = (<str>value).encode("utf-8", "backslashreplace")
                return self.put_raw(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), False)
            return self.put_raw(data, n, False)
        return self.put_literal(orjson.dumps(value, default=str))

    cdef int put_time(self, double ago) except -1:
        """The request's start, RFC 3339 UTC to the millisecond: the wall clock now, less ``ago``."""
        cdef timespec ts
        cdef tm parts
        cdef time_t second
        cdef long long milli
        cdef int rest
        cdef char* out
        clock_gettime(CLOCK_REALTIME, &ts)
        milli = <long long>((<double>ts.tv_sec + ts.tv_nsec * 1e-9 - ago) * 1000.0)
        if milli // 1000 != self.time_second:
            self.time_second = milli // 1000
            second = <time_t>self.time_second
            gmtime_r(&second, &parts)
            out = self.time_text
            put_two(out, (parts.tm_year + 1900) // 100)
            put_two(out + 2, (parts.tm_year + 1900) % 100)
            out[4] = b"-"
            put_two(out + 5, parts.tm_mon + 1)
            out[7] = b"-"
            put_two(out + 8, parts.tm_mday)
            out[10] = b"T"
            put_two(out + 11, parts.tm_hour)
            out[13] = b":"
            put_two(out + 14, parts.tm_min)
            out[16] = b":"
            put_two(out + 17, parts.tm_sec)
        self.reserve(26)
        out = self.buffer + self.size
        out[0] = b'"'
        memcpy(out + 1, self.time_text, 19)
        out[20] = b"."
        rest = <int>(milli % 1000)
        out[21] = <char>(48 + rest // 100)
        put_two(out + 22, rest % 100)
        out[24] = b"Z"
        out[25] = b'"'
        self.size += 26
        return 0

    def on_timer(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:
        """Write what is buffered, in one call (a short write is completed, never dropped)."""
        cdef Py_ssize_t done = 0, n
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.size == 0:
            return
        try:
            if self.fd < 0:
                self.fd = self.open_sink()
            while done < self.size:
                n = write(self.fd, self.buffer + done, self.size - done)
                if n < 0:
                    if errno == EINTR:
                        continue
                    raise OSError(errno, os.strerror(errno))
                done += n
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1:  # once: a broken sink must not flood the error log
                log.error("access log %s: %s", self.config.sink, exc)
        self.size = 0

    def open_sink(self) -> int:
        if self.config.sink == "stdout":
            return 1
        return os.open(self.config.sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def reopen(self) -> None:
        """Write what is buffered and close the file: the next line opens the configured path
        again (after log rotation moved the file away, a new one is made there)."""
        self.flush()
        if self.fd > 2:
            close(self.fd)
        self.fd = -1

    def retire(self, successor: AccessLog | None) -> None:
        """A reload replaced this log: write what is left, close the file, pass on late lines."""
        self.reopen()
        self.retired = True
        self.successor = successor

