"""Run the fuzz harnesses: ``python -m tests.fuzz.run [--seconds N] [NAME ...]``.

One libFuzzer process per harness, one after the other: it replays the
committed seed corpus (tests/fuzz/corpus/<name>/), then fuzzes for ``--seconds``,
keeping what it finds under ``--work`` (``<work>/<name>/corpus``) and writing a
failing input to ``<work>/<name>/crash-…`` (or ``timeout-…``, ``oom-…``).
``make fuzz`` runs this for long; tests/fuzz/test_fuzz.py for CI's bounded run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"  # the committed seeds, one folder per harness
#: harness → largest input (bytes): room for every seed and then some
HARNESSES = {
    "manifests": 16 << 10,
    "references": 1 << 10,
    "filters": 4 << 10,
    "globs": 4 << 10,
    "platforms": 2 << 10,
    "template": 4 << 10,
    "archive": 64 << 10,
}
#: one input may run this long (s) before it counts as a hang: far above any
#: honest input's milliseconds, so only a hang or a blow-up reaches it
INPUT_TIMEOUT = 10
RSS_LIMIT_MB = 2048


def command(name: str, seconds: int, work: Path, seed: int | None = None) -> list[str]:
    """The libFuzzer command line that fuzzes ``name`` for ``seconds``."""
    corpus = work / name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        f"tests.fuzz.{name}",
        f"-max_total_time={seconds}",
        f"-max_len={HARNESSES[name]}",
        f"-timeout={INPUT_TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={work / name}/",
        "-print_final_stats=1",
        *([f"-seed={seed}"] if seed is not None else []),
        str(corpus),  # first: where new inputs go
        str(CORPUS / name),  # the committed seeds, only read
    ]


def findings(work: Path, name: str) -> list[Path]:
    """The inputs libFuzzer saved as failing."""
    folder = work / name
    return sorted(
        path
        for pattern in ("crash-*", "timeout-*", "oom-*", "leak-*", "slow-unit-*")
        for path in folder.glob(pattern)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(HARNESSES))
    parser.add_argument("--seconds", type=int, default=600, help="per harness (default 600)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "fuzz")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(HARNESSES))
    if unknown:
        parser.error(f"no harness named {', '.join(unknown)}: pick from {', '.join(HARNESSES)}")
    failed = []
    for name in args.names or list(HARNESSES):
        print(f"== fuzzing {name} for {args.seconds} s", flush=True)
        result = subprocess.run(command(name, args.seconds, args.work), cwd=ROOT, check=False)
        if result.returncode != 0 or findings(args.work, name):
            failed.append(name)
    for name in failed:
        print(f"FAILED {name}: {[str(path) for path in findings(args.work, name)]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
