"""Pull and Push write their events, against the real server and a real
docker-registry: a push's event names the remote, a pull's the name it stored;
an up-to-date pull writes its pull event too, as docker's daemon does."""

from __future__ import annotations

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.test_events import Watcher, journal
from tests.api.test_service import Stub, app
from tests.archives import docker_archive
from tests.registry.conftest import pull, push
from tests.registry.distribution import Distribution

KIND = pb.EventKind.Name


def test_push_and_pull_write_their_events(stub: Stub, fresh_registry: Distribution) -> None:
    list(stub.Load(iter([pb.LoadRequest(chunk=docker_archive(app(9, "demo/ev:1")))])))
    target = f"{fresh_registry.host}/demo/ev:1"
    stub.Tag(pb.TagRequest(source="demo/ev:1", target=target))
    watcher = Watcher(stub, pb.WatchEventsRequest(filters=["event=push", "event=pull"]))
    try:
        start = watcher.wait_caught_up()
        pushed = push(stub, target).last
        watcher.wait_count(1)
        stub.Remove(pb.RemoveRequest(images=[target]))
        pulled = pull(stub, target).last
        assert pulled.updated
        watcher.wait_count(2)
        again = pull(stub, target).last
        assert not again.updated
        watcher.wait_count(3)
        # a tag after it: its event is the proof that nothing else came between
        stub.Tag(pb.TagRequest(source="demo/ev:1", target="demo/ev:after"))
    finally:
        watcher.stop()
    push_event, pull_event, again_event = watcher.events
    assert KIND(push_event.kind) == "EVENT_KIND_PUSH"
    assert push_event.remote == f"{fresh_registry.host}/demo/ev"
    assert push_event.name.canonical == target
    assert push_event.target_digest == pushed.digest
    assert push_event.image_id == pulled.image_ids[0]
    assert KIND(pull_event.kind) == "EVENT_KIND_PULL"
    assert pull_event.name.canonical == target
    assert pull_event.target_digest == pulled.digest
    assert pull_event.cursor > push_event.cursor > start
    assert (KIND(again_event.kind), again_event.target_digest) == ("EVENT_KIND_PULL", again.digest)
    later = journal(stub, again_event.cursor)
    assert [(KIND(e.kind), e.name.familiar) for e in later] == [("EVENT_KIND_TAG", "demo/ev:after")]
