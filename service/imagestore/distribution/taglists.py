"""Upstream's tag lists, kept for pull-through's TTL (distribution/pullthrough.py).

A mirror lists upstream's tags; asking upstream at every ``tags/list`` would
let clients multiply requests to it, so each repository's last answer is kept.
Memory is bounded by tags, not by repositories: at most ``max_tags`` in all,
each list counting one at least (so names upstream does not know cannot grow
the map either), the oldest answers dropped first; a single list longer than
that is used for its request and not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

#: tags kept in all, by default (~100 bytes each)
MAX_KEPT_TAGS = 100_000


@dataclass(frozen=True, slots=True)
class TagList:
    """Upstream's tag list of a repository as last asked (sorted); ``failed``: that
    ask got no answer, and ``tags`` are the answer before it."""

    asked: float
    tags: list[str]
    failed: bool = False

    @property
    def weight(self) -> int:
        return max(1, len(self.tags))


class TagLists:
    """The last answer per repository, oldest first, ``max_tags`` tags in all."""

    def __init__(self, max_tags: int = MAX_KEPT_TAGS) -> None:
        self.max_tags = max_tags
        self._lists: OrderedDict[str, TagList] = OrderedDict()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._lists)

    @property
    def weight(self) -> int:
        """The tags kept, each list counting one at least."""
        return self._weight

    def get(self, repository: str) -> TagList | None:
        return self._lists.get(repository)

    def keep(self, repository: str, answer: TagList) -> TagList:
        """Keep ``answer`` in place of the repository's last one (unless it alone
        is over the bound); drop the oldest while over it. Returns ``answer``."""
        old = self._lists.pop(repository, None)
        self._weight -= 0 if old is None else old.weight
        if answer.weight <= self.max_tags:
            self._lists[repository] = answer
            self._weight += answer.weight
        while self._weight > self.max_tags:
            _, dropped = self._lists.popitem(last=False)
            self._weight -= dropped.weight
        return answer
