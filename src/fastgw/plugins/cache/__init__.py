"""The ``cache`` plugin (``plugin``; with Redis, ``remote``): RFC 9111 rules (``policy``), keys
(``key``), the per-process LRU zones and the entries (``store``, Redis in ``redis_store``),
request coalescing (``coalesce``) and the admin purge (``purge``)."""

from fastgw.plugins.cache.plugin import Cache
from fastgw.plugins.cache.purge import purge_entries

__all__ = ["Cache", "purge_entries"]
