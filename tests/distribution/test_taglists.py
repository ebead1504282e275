"""Upstream's tag lists kept for pull-through (distribution/taglists.py): bounded
by tags, each list counting one at least, the oldest answers dropped first."""

from __future__ import annotations

from imagestore.distribution.taglists import TagList, TagLists


def tags(count: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{number:04d}" for number in range(count)]


def test_a_list_is_kept_until_its_repository_answers_again() -> None:
    lists = TagLists(max_tags=10)
    first = lists.keep("r", TagList(1.0, tags(3)))
    assert lists.get("r") is first
    again = lists.keep("r", TagList(2.0, tags(5)))
    assert (lists.get("r"), lists.weight, len(lists)) == (again, 5, 1)


def test_the_oldest_answers_go_once_the_tags_are_over_the_bound() -> None:
    lists = TagLists(max_tags=10)
    for number in range(4):
        lists.keep(f"r{number}", TagList(float(number), tags(3)))
    # 12 tags: r0's answer, the oldest, went; r1..r3 stay
    assert [lists.get(f"r{n}") is not None for n in range(4)] == [False, True, True, True]
    assert lists.weight == 9
    lists.keep("r1", TagList(9.0, tags(3)))  # answered again: now the newest
    lists.keep("r4", TagList(10.0, tags(3)))
    assert [lists.get(f"r{n}") is not None for n in range(5)] == [False, True, False, True, True]


def test_empty_lists_count_one_each_so_unknown_names_cannot_grow_the_map() -> None:
    lists = TagLists(max_tags=100)
    for number in range(1000):
        lists.keep(f"unknown/{number}", TagList(float(number), []))
    assert (len(lists), lists.weight) == (100, 100)
    assert (lists.get("unknown/999") is None, lists.get("unknown/899") is None) == (False, True)


def test_a_list_over_the_bound_alone_is_returned_not_kept() -> None:
    lists = TagLists(max_tags=10)
    lists.keep("small", TagList(1.0, tags(4)))
    huge = TagList(2.0, tags(11))
    assert lists.keep("small", huge) is huge
    assert (lists.get("small"), lists.weight, len(lists)) == (None, 0, 0)


def test_a_failed_ask_keeps_the_answer_before_it() -> None:
    lists = TagLists()
    lists.keep("r", TagList(1.0, tags(2)))
    failed = lists.keep("r", TagList(2.0, tags(2), failed=True))
    assert lists.get("r") == failed
    assert (failed.tags, failed.failed, lists.weight) == (tags(2), True, 2)
