"""KV-cache policies for softmax attention under a memory budget (see ``base``)."""

from iclab.models.caches import compression, eviction  # noqa: F401  (registers the policies)
from iclab.models.caches.base import (
    POLICIES,
    POLICY_SPEC,
    CachePolicy,
    KVCache,
    build_policy,
    evict,
    register_policy,
)

__all__ = [
    "POLICIES",
    "POLICY_SPEC",
    "CachePolicy",
    "KVCache",
    "build_policy",
    "evict",
    "register_policy",
]
