# -- the hook driver: plugins' hooks at their four points ---------------------------------------------
# ``hooks.py`` is the interface; these run a route's hook tuples (only the hooks its plugins
# override: a route without plugins runs none of this). Only an on_request hook that returns an
# awaitable takes a request off the synchronous path.

cdef int run_request_hooks(Exchange x, tuple hooks, Py_ssize_t index) except -1:
    """on_request hooks from ``index`` on: None goes on, a Response answers, an awaitable makes the
    request wait for it (a Task, the only one a request can cost) and go on from its result."""
    cdef Py_ssize_t i
    for i in range(index, len(hooks)):
        result = hooks[i](x)
        if result is None:
            continue
        if isinstance(result, Response):
            x.answer(result)
            return 0
        task = asyncio.ensure_future(result)
        task.add_done_callback(partial(_after_request_hook, x, hooks, i))
        return 0
    x.forward()
    return 0


def _after_request_hook(Exchange x, tuple hooks, Py_ssize_t index, task) -> None:
    if x.state == X_DONE:
        return
    if task.cancelled():
        x.answer_fault(UpstreamFault("request hook cancelled", 503), None)
        return
    exc = task.exception()
    if exc is not None:
        if isinstance(exc, HttpFault):
            x.answer_fault(exc, None)
            return
        # A plugin's bug: the client gets a 500, the log gets the traceback and the request id.
        log.error(
            "request hook %r failed (request %s)", hooks[index], x.request_id.decode("latin-1"), exc_info=exc
        )
        x.answer_fault(UpstreamFault("request hook failed", 500), None)
        return
    try:
        result = task.result()
        if isinstance(result, Response):
            x.answer(result)
        else:
            run_request_hooks(x, hooks, index + 1)
    except Exception:
        x.internal_error()


cdef int run_upstream_request_hooks(Exchange x, tuple hooks) except -1:
    """on_upstream_request hooks, just before an attempt's head is written (each attempt's)."""
    for hook in hooks:
        hook(x)
    return 0


cdef object run_response_hooks(Exchange x, tuple hooks):
    """on_response hooks over ``x.response_headers``; the first Response one returns replaces the
    upstream's (returned), else None."""
    for hook in hooks:
        replacement = hook(x)
        if replacement is not None:
            return replacement
    return None


cdef int run_complete_hooks(Exchange x, tuple hooks) except -1:
    """on_complete hooks after the last byte (or the error); a hook that raises is logged and the
    rest still run: the response is out."""
    for hook in hooks:
        try:
            hook(x)
        except Exception:
            log.exception("on_complete hook %r failed (request %s)", hook, x.request_id.decode("latin-1"))
    return 0
