"""What Check reports: its progress, each finding, and the whole report."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckProgress:
    """How far a Check has come."""

    blobs_checked: int
    blobs_total: int
    bytes_checked: int
    bytes_total: int


@dataclass(frozen=True, slots=True)
class CheckProblem:
    """One confirmed finding of Check ("corrupt-blob", "missing-blob", …)."""

    kind: str
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class UnrecordedBlob:
    """A blob file without a catalog record: garbage (prune removes it), not damage."""

    digest: str


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """The last message of a Check: counts of what it sent and checked."""

    ok: bool
    problems: int
    blobs_checked: int
    images_checked: int
    unrecorded_blobs: int


#: one message of the Check stream
CheckEvent = CheckProgress | CheckProblem | UnrecordedBlob | CheckSummary


#: what iterating a check yields (its summary ends it: ``result()`` is the CheckReport)
CheckUpdate = CheckProgress | CheckProblem | UnrecordedBlob


@dataclass(frozen=True, slots=True)
class CheckReport:
    """A whole Check collected (``check_report``): the summary and every finding."""

    ok: bool
    problems: tuple[CheckProblem, ...]
    blobs_checked: int
    images_checked: int
    #: blob files without a catalog record: garbage (prune removes them), not damage
    unrecorded_blobs: tuple[str, ...] = ()
