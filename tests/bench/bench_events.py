"""WatchEvents latency beside the Tag RPC's own, in one run (``make bench``).

One client tags one image under new names, one Tag at a time; each Tag writes
one event. Watchers (one, then 16), each on a channel of its own, stamp each
event as it arrives. The figure is the time from the Tag's acknowledgement to
a watcher's receipt of its event (negative when the event arrives first),
p50 and p99 over every tag and watcher, printed beside the Tag RPC's latency
(request sent to answer received) measured in the same round.

    python -m tests.bench.bench_events [--tags N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server
from tests.archives import ImageSpec, docker_archive, tar_of

WAIT = 120.0


class Stamper:
    """A watcher that notes when each cursor arrived."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        stub = pb_grpc.ImageStoreServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.call = stub.WatchEvents(pb.WatchEventsRequest())
        self.arrived: dict[int, float] = {}
        self.caught_up = threading.Event()
        self.start = 0
        self.done = threading.Event()
        self.until = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                now = time.perf_counter()
                if message.HasField("caught_up"):
                    self.start = message.caught_up
                    self.caught_up.set()
                    continue
                self.arrived[message.event.cursor] = now
                if self.until and message.event.cursor >= self.until:
                    self.done.set()
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(WAIT)
        self.channel.close()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def one_round(address: str, watchers: int, tags: int, round_: int) -> None:
    stampers = [Stamper(address) for _ in range(watchers)]
    try:
        for stamper in stampers:
            assert stamper.caught_up.wait(WAIT)
        start = stampers[0].start
        for stamper in stampers:
            stamper.until = start + tags
        acks: list[float] = []
        rpc: list[float] = []
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            for number in range(tags):
                request = pb.TagRequest(source="bench:0", target=f"bench/r{round_}:{number}")
                sent = time.perf_counter()
                stub.Tag(request, timeout=WAIT)
                acks.append(time.perf_counter())
                rpc.append(acks[-1] - sent)
        for stamper in stampers:
            assert stamper.done.wait(WAIT), "a watcher missed events"
        delays = [
            stamper.arrived[start + 1 + number] - acks[number]
            for stamper in stampers
            for number in range(tags)
        ]
    finally:
        for stamper in stampers:
            stamper.close()
    ms = 1e3
    print(
        f"  {watchers:2} watcher(s)  ack -> event  p50 {statistics.median(delays) * ms:7.2f} ms"
        f"  p99 {_percentile(delays, 0.99) * ms:7.2f} ms   |  Tag RPC itself"
        f"  p50 {statistics.median(rpc) * ms:6.2f} ms  p99 {_percentile(rpc, 0.99) * ms:6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(
            Path(scratch) / "root", "--listen", "127.0.0.1:0", "--log-level", "warning"
        )
        try:
            archive = docker_archive(ImageSpec(tags=["bench:0"], layers=[tar_of({"a": b"a"})]))
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
                list(stub.Load(iter([pb.LoadRequest(chunk=archive)]), timeout=WAIT))
            print(f"\nWatchEvents: Tag acknowledged -> event received, {args.tags} tags per round")
            for round_, watchers in enumerate((1, 16)):
                one_round(server.address, watchers, args.tags, round_)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
