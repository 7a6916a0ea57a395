# The parts of llhttp's C API (vendor/llhttp/include/llhttp.h) that fastgw.http._parser uses.
#
# llhttp is the parser inside httptools and Node.js; fastgw compiles it into fastgw.http._parser and
# drives it with C callbacks instead of httptools' per-callback Python calls.

from libc.stdint cimport uint8_t, uint16_t, uint64_t


cdef extern from "llhttp.h" nogil:
    ctypedef struct llhttp_t:
        uint64_t content_length
        uint8_t type
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint8_t upgrade
        uint16_t flags
        uint16_t status_code
        void* data

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_protocol
        llhttp_data_cb on_url
        llhttp_data_cb on_version
        llhttp_data_cb on_status
        llhttp_data_cb on_method
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_url_complete
        llhttp_cb on_status_complete
        llhttp_cb on_header_field_complete
        llhttp_cb on_header_value_complete

    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_PAUSED
        HPE_PAUSED_UPGRADE
        HPE_PAUSED_H2_UPGRADE
        HPE_USER

    enum:
        F_CONNECTION_KEEP_ALIVE
        F_CONNECTION_CLOSE
        F_CONNECTION_UPGRADE
        F_CHUNKED
        F_UPGRADE
        F_CONTENT_LENGTH
        F_TRANSFER_ENCODING

    enum:                    # llhttp_method_t: the methods fastgw.http._parser names itself
        HTTP_CONNECT
        HTTP_DELETE
        HTTP_GET
        HTTP_HEAD
        HTTP_OPTIONS
        HTTP_PATCH
        HTTP_POST
        HTTP_PUT

    void llhttp_init(llhttp_t* parser, llhttp_type_t type, const llhttp_settings_t* settings)
    void llhttp_settings_init(llhttp_settings_t* settings)
    void llhttp_reset(llhttp_t* parser)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t len)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    void llhttp_resume(llhttp_t* parser)
    const char* llhttp_get_error_reason(const llhttp_t* parser)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
