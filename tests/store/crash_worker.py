"""Child process for the crash trials: changes a store until it is SIGKILLed.

    python -m tests.store.crash_worker ROOT SEED CATALOG

Prints ``committed <image id> <name>`` once a commit has returned and
``removed <name>`` once a remove has returned, flushing each line, so the
parent knows what must survive the kill.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from imagestore import errors
from imagestore.store.store import Store
from tests.store.builders import build_image, layer_tar
from tests.store.conftest import CATALOGS


def main() -> None:
    root, seed, catalog = Path(sys.argv[1]), int(sys.argv[2]), CATALOGS[sys.argv[3]]
    rng = random.Random(seed)
    base = layer_tar({"base": bytes(rng.randbytes(50_000))})
    with Store.open(root, catalog=catalog) as store:
        print("ready", flush=True)
        for step in range(10_000):
            action = rng.random()
            name = f"crash/app:{rng.randrange(6)}"
            try:
                if action < 0.6:
                    layer = layer_tar({"app": rng.randbytes(rng.randrange(1, 300_000))})
                    built = build_image(store, [base, layer], names=[name])
                    print(f"committed {built.image_id} {name}", flush=True)
                elif action < 0.8:
                    store.remove([name])
                    print(f"removed {name}", flush=True)
                elif action < 0.9:
                    store.prune()
                else:
                    store.tag(name, f"crash/other:{step % 3}")
            except errors.NotFound:
                continue


if __name__ == "__main__":
    main()
