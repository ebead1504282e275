"""A prune never removes a blob mid-response: every response holds a reading
lease on its digest until it ends (docs/design.md §4)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import grpc

from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import wait_until
from tests.api.test_service import load
from tests.archives import ImageSpec
from tests.distribution.conftest import (
    ACCEPT_ALL,
    Client,
    HeldDownload,
    big_layer,
    start_registry_server,
)
from tests.store.builders import build_image, layer_tar

#: large enough that the server's writes wait for a reader with a tiny buffer
HELD_BLOB = 16 << 20
#: prune-and-reload rounds while clients pull
ROUNDS = 12
CLIENTS = 3


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_blob_being_served_outlives_a_prune_until_its_response_ends(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        victim = build_image(store, [big_layer(HELD_BLOB, seed=5)], names=["victim:1"])
        build_image(store, [layer_tar({"other": b"o"})], names=["other:1"])
    digest = victim.layers[0].digest
    blob_file = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    server = start_registry_server(root)
    try:
        assert server.registry_address is not None
        held = HeldDownload(server.registry_address, f"/v2/library/victim/blobs/{digest}")
        held.read_head()  # the response has begun; the server waits to write the rest
        assert held.status == 200
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            stub.Remove(pb.RemoveRequest(images=["victim:1"]))
            pruned = stub.Prune(pb.PruneRequest(all=True))
            assert pruned.deleted_image_ids  # other:1 went; victim's rows went with Remove
            # the catalog forgot the blob, but its file stays while it is read
            assert blob_file.exists()
            gone = Client(server.registry_address).get(f"/v2/library/victim/blobs/{digest}")
            assert (gone.status, gone.error_codes()) == (404, ["NAME_UNKNOWN"])
            body = held.read_rest()
            assert len(body) == int(held.headers["content-length"]) == victim.layers[0].size
            assert sha(body) == digest

            def swept() -> bool:  # once the response ended, the next prune removes it
                stub.Prune(pb.PruneRequest(all=True))
                return not blob_file.exists()

            wait_until(swept)
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def churn_image() -> ImageSpec:
    layers = [layer_tar({"churn": bytes(range(256)) * 4000}), big_layer(1 << 20, seed=9)]
    return ImageSpec(tags=["churn:1"], layers=layers, labels={"role": "churn"})


def test_clients_pull_every_blob_while_a_prune_runs_in_a_loop(tmp_path: Path) -> None:
    """Clients pull each blob of a kept image and of one pruned and loaded
    again, round after round. A kept blob is always served whole; a churned
    one is either served whole or refused (404) before its response begins:
    no response breaks off because its blob vanished."""
    root = tmp_path / "root"
    with Store.open(root) as store:
        build_image(store, [big_layer(1 << 20, seed=8), layer_tar({"s": b"s"})], names=["stay:1"])
    server = start_registry_server(root)
    failures: list[str] = []
    counts = {"whole": 0, "refused": 0}
    lock = threading.Lock()
    done = threading.Event()
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            load(stub, churn_image())

            def blobs(path: str) -> list[str]:
                answer = client.get(f"{path}/manifests/1", Accept=ACCEPT_ALL)
                assert answer.status == 200, answer.body
                document = answer.json()
                assert isinstance(document, dict)
                return [document["config"]["digest"]] + [d["digest"] for d in document["layers"]]

            wanted = [("/v2/library/stay", d, True) for d in blobs("/v2/library/stay")]
            wanted += [("/v2/library/churn", d, False) for d in blobs("/v2/library/churn")]

            def pull() -> None:
                while not done.is_set():
                    for path, digest, kept in wanted:
                        try:
                            answer = client.get(f"{path}/blobs/{digest}")
                        except Exception as exc:  # a cut response or connection
                            with lock:
                                failures.append(f"{digest}: {exc!r}")
                            continue
                        whole = answer.status == 200 and sha(answer.body) == digest
                        refused = not kept and answer.status == 404
                        with lock:
                            counts["whole" if whole else "refused"] += 1
                            if not (whole or refused):
                                failures.append(f"{digest}: {answer.status} {answer.body[:200]!r}")

            pullers = [threading.Thread(target=pull) for _ in range(CLIENTS)]
            for thread in pullers:
                thread.start()
            try:
                for _ in range(ROUNDS):
                    pruned = stub.Prune(pb.PruneRequest(all=True, filters=["label=role=churn"]))
                    assert len(pruned.deleted_image_ids) == 1
                    load(stub, churn_image())
            finally:
                done.set()
                for thread in pullers:
                    thread.join(60)
            stay = stub.Inspect(pb.InspectRequest(image="stay:1"))  # never touched
            assert stay.manifest.digest
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
    assert not failures, failures[:5]
    assert counts["whole"] >= CLIENTS * len(wanted), counts  # each client pulled them all
