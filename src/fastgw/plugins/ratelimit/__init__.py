"""The ``rate_limit`` plugin (``plugin``): per-process counters (``algorithms``) or cluster-wide
ones in Redis (``cluster``, ``redis_store``), keyed by ``keys``, reported by ``headers``."""

from fastgw.plugins.ratelimit.plugin import RateLimit

__all__ = ["RateLimit"]
