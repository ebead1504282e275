import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_RESOLVING: _ClassVar[Phase]
    PHASE_WAITING: _ClassVar[Phase]
    PHASE_DOWNLOADING: _ClassVar[Phase]
    PHASE_VERIFYING: _ClassVar[Phase]
    PHASE_DOWNLOADED: _ClassVar[Phase]
    PHASE_COMPLETE: _ClassVar[Phase]
    PHASE_ALREADY_EXISTS: _ClassVar[Phase]
    PHASE_RETRYING: _ClassVar[Phase]
    PHASE_PREPARING: _ClassVar[Phase]
    PHASE_PUSHING: _ClassVar[Phase]
    PHASE_PUSHED: _ClassVar[Phase]
    PHASE_EXISTS_REMOTELY: _ClassVar[Phase]
    PHASE_MOUNTED: _ClassVar[Phase]
    PHASE_SKIPPED: _ClassVar[Phase]
    PHASE_SUMMARY: _ClassVar[Phase]

class AuthMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_MODE_UNSPECIFIED: _ClassVar[AuthMode]
    AUTH_MODE_NONE: _ClassVar[AuthMode]
    AUTH_MODE_TOKENS: _ClassVar[AuthMode]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_TAG: _ClassVar[EventKind]
    EVENT_KIND_UNTAG: _ClassVar[EventKind]
    EVENT_KIND_DELETE: _ClassVar[EventKind]
    EVENT_KIND_PULL: _ClassVar[EventKind]
    EVENT_KIND_PUSH: _ClassVar[EventKind]
    EVENT_KIND_LOAD: _ClassVar[EventKind]
    EVENT_KIND_PRUNE: _ClassVar[EventKind]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INVALID_ARGUMENT: _ClassVar[ErrorReason]
    NOT_FOUND: _ClassVar[ErrorReason]
    FAILED_PRECONDITION: _ClassVar[ErrorReason]
    ABORTED: _ClassVar[ErrorReason]
    PERMISSION_DENIED: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    RESOURCE_EXHAUSTED: _ClassVar[ErrorReason]
    DATA_LOSS: _ClassVar[ErrorReason]
    UNAVAILABLE: _ClassVar[ErrorReason]
    INTERNAL: _ClassVar[ErrorReason]
    REFERENCE_INVALID: _ClassVar[ErrorReason]
    DIGEST_INVALID: _ClassVar[ErrorReason]
    PLATFORM_INVALID: _ClassVar[ErrorReason]
    FILTER_INVALID: _ClassVar[ErrorReason]
    PAGE_TOKEN_INVALID: _ClassVar[ErrorReason]
    PAGE_SIZE_INVALID: _ClassVar[ErrorReason]
    RANGE_INVALID: _ClassVar[ErrorReason]
    IMAGE_ID_AMBIGUOUS: _ClassVar[ErrorReason]
    ARGUMENT_MISSING: _ClassVar[ErrorReason]
    MALFORMED_CONTENT: _ClassVar[ErrorReason]
    OPTION_INVALID: _ClassVar[ErrorReason]
    MESSAGE_ORDER_INVALID: _ClassVar[ErrorReason]
    CURSOR_INVALID: _ClassVar[ErrorReason]
    IMAGE_NOT_FOUND: _ClassVar[ErrorReason]
    BLOB_NOT_FOUND: _ClassVar[ErrorReason]
    PLATFORM_NOT_FOUND: _ClassVar[ErrorReason]
    MANIFEST_UNKNOWN: _ClassVar[ErrorReason]
    REGISTRY_NOT_FOUND: _ClassVar[ErrorReason]
    REMOVE_CONFLICT: _ClassVar[ErrorReason]
    INDEX_INCOMPLETE: _ClassVar[ErrorReason]
    UNSUPPORTED_CONTENT: _ClassVar[ErrorReason]
    UNSUPPORTED_MEDIA_TYPE: _ClassVar[ErrorReason]
    CREDENTIALS_INSECURE: _ClassVar[ErrorReason]
    CREDENTIAL_HELPER_FAILED: _ClassVar[ErrorReason]
    REGISTRY_REFUSED: _ClassVar[ErrorReason]
    REGISTRY_CERTS_INVALID: _ClassVar[ErrorReason]
    STORE_IN_USE: _ClassVar[ErrorReason]
    STORE_ROOT_UNSAFE: _ClassVar[ErrorReason]
    CATALOG_TOO_NEW: _ClassVar[ErrorReason]
    LISTENER_INSECURE: _ClassVar[ErrorReason]
    BLOB_DIR_MISMATCH: _ClassVar[ErrorReason]
    PRUNE_RUNNING: _ClassVar[ErrorReason]
    CHECK_RUNNING: _ClassVar[ErrorReason]
    REGISTRY_UNAUTHORIZED: _ClassVar[ErrorReason]
    ADDRESS_REFUSED: _ClassVar[ErrorReason]
    TOKEN_REDIRECT_REFUSED: _ClassVar[ErrorReason]
    BEARER_TOKEN_INVALID: _ClassVar[ErrorReason]
    SIZE_LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    TOO_MANY_CONCURRENT_CALLS: _ClassVar[ErrorReason]
    DISK_FULL: _ClassVar[ErrorReason]
    REGISTRY_RATE_LIMITED: _ClassVar[ErrorReason]
    REGISTRY_PAYLOAD_TOO_LARGE: _ClassVar[ErrorReason]
    DIGEST_MISMATCH: _ClassVar[ErrorReason]
    DIFF_ID_MISMATCH: _ClassVar[ErrorReason]
    BLOB_CORRUPT: _ClassVar[ErrorReason]
    CATALOG_CORRUPT: _ClassVar[ErrorReason]
    REGISTRY_RESPONSE_INVALID: _ClassVar[ErrorReason]
    CORRUPT_COMPRESSED_DATA: _ClassVar[ErrorReason]
    TRUNCATED_COMPRESSED_DATA: _ClassVar[ErrorReason]
    TRAILING_DATA: _ClassVar[ErrorReason]
    UNSUPPORTED_COMPRESSION: _ClassVar[ErrorReason]
    OUT_OF_RANGE: _ClassVar[ErrorReason]
    CURSOR_EXPIRED: _ClassVar[ErrorReason]
    REGISTRY_UNAVAILABLE: _ClassVar[ErrorReason]
    REGISTRY_CERTIFICATE_UNTRUSTED: _ClassVar[ErrorReason]
    CREDENTIAL_HELPER_TIMEOUT: _ClassVar[ErrorReason]
    IO_ERROR: _ClassVar[ErrorReason]
    LISTEN_FAILED: _ClassVar[ErrorReason]
    CATALOG_UNAVAILABLE: _ClassVar[ErrorReason]
    LEASE_EXPIRED: _ClassVar[ErrorReason]
PHASE_UNSPECIFIED: Phase
PHASE_RESOLVING: Phase
PHASE_WAITING: Phase
PHASE_DOWNLOADING: Phase
PHASE_VERIFYING: Phase
PHASE_DOWNLOADED: Phase
PHASE_COMPLETE: Phase
PHASE_ALREADY_EXISTS: Phase
PHASE_RETRYING: Phase
PHASE_PREPARING: Phase
PHASE_PUSHING: Phase
PHASE_PUSHED: Phase
PHASE_EXISTS_REMOTELY: Phase
PHASE_MOUNTED: Phase
PHASE_SKIPPED: Phase
PHASE_SUMMARY: Phase
AUTH_MODE_UNSPECIFIED: AuthMode
AUTH_MODE_NONE: AuthMode
AUTH_MODE_TOKENS: AuthMode
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_TAG: EventKind
EVENT_KIND_UNTAG: EventKind
EVENT_KIND_DELETE: EventKind
EVENT_KIND_PULL: EventKind
EVENT_KIND_PUSH: EventKind
EVENT_KIND_LOAD: EventKind
EVENT_KIND_PRUNE: EventKind
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_ARGUMENT: ErrorReason
NOT_FOUND: ErrorReason
FAILED_PRECONDITION: ErrorReason
ABORTED: ErrorReason
PERMISSION_DENIED: ErrorReason
UNAUTHENTICATED: ErrorReason
RESOURCE_EXHAUSTED: ErrorReason
DATA_LOSS: ErrorReason
UNAVAILABLE: ErrorReason
INTERNAL: ErrorReason
REFERENCE_INVALID: ErrorReason
DIGEST_INVALID: ErrorReason
PLATFORM_INVALID: ErrorReason
FILTER_INVALID: ErrorReason
PAGE_TOKEN_INVALID: ErrorReason
PAGE_SIZE_INVALID: ErrorReason
RANGE_INVALID: ErrorReason
IMAGE_ID_AMBIGUOUS: ErrorReason
ARGUMENT_MISSING: ErrorReason
MALFORMED_CONTENT: ErrorReason
OPTION_INVALID: ErrorReason
MESSAGE_ORDER_INVALID: ErrorReason
CURSOR_INVALID: ErrorReason
IMAGE_NOT_FOUND: ErrorReason
BLOB_NOT_FOUND: ErrorReason
PLATFORM_NOT_FOUND: ErrorReason
MANIFEST_UNKNOWN: ErrorReason
REGISTRY_NOT_FOUND: ErrorReason
REMOVE_CONFLICT: ErrorReason
INDEX_INCOMPLETE: ErrorReason
UNSUPPORTED_CONTENT: ErrorReason
UNSUPPORTED_MEDIA_TYPE: ErrorReason
CREDENTIALS_INSECURE: ErrorReason
CREDENTIAL_HELPER_FAILED: ErrorReason
REGISTRY_REFUSED: ErrorReason
REGISTRY_CERTS_INVALID: ErrorReason
STORE_IN_USE: ErrorReason
STORE_ROOT_UNSAFE: ErrorReason
CATALOG_TOO_NEW: ErrorReason
LISTENER_INSECURE: ErrorReason
BLOB_DIR_MISMATCH: ErrorReason
PRUNE_RUNNING: ErrorReason
CHECK_RUNNING: ErrorReason
REGISTRY_UNAUTHORIZED: ErrorReason
ADDRESS_REFUSED: ErrorReason
TOKEN_REDIRECT_REFUSED: ErrorReason
BEARER_TOKEN_INVALID: ErrorReason
SIZE_LIMIT_EXCEEDED: ErrorReason
TOO_MANY_CONCURRENT_CALLS: ErrorReason
DISK_FULL: ErrorReason
REGISTRY_RATE_LIMITED: ErrorReason
REGISTRY_PAYLOAD_TOO_LARGE: ErrorReason
DIGEST_MISMATCH: ErrorReason
DIFF_ID_MISMATCH: ErrorReason
BLOB_CORRUPT: ErrorReason
CATALOG_CORRUPT: ErrorReason
REGISTRY_RESPONSE_INVALID: ErrorReason
CORRUPT_COMPRESSED_DATA: ErrorReason
TRUNCATED_COMPRESSED_DATA: ErrorReason
TRAILING_DATA: ErrorReason
UNSUPPORTED_COMPRESSION: ErrorReason
OUT_OF_RANGE: ErrorReason
CURSOR_EXPIRED: ErrorReason
REGISTRY_UNAVAILABLE: ErrorReason
REGISTRY_CERTIFICATE_UNTRUSTED: ErrorReason
CREDENTIAL_HELPER_TIMEOUT: ErrorReason
IO_ERROR: ErrorReason
LISTEN_FAILED: ErrorReason
CATALOG_UNAVAILABLE: ErrorReason
LEASE_EXPIRED: ErrorReason

class Platform(_message.Message):
    __slots__ = ("os", "architecture", "variant")
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    os: str
    architecture: str
    variant: str
    def __init__(self, os: _Optional[str] = ..., architecture: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class ImageName(_message.Message):
    __slots__ = ("familiar", "canonical")
    FAMILIAR_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_FIELD_NUMBER: _ClassVar[int]
    familiar: str
    canonical: str
    def __init__(self, familiar: _Optional[str] = ..., canonical: _Optional[str] = ...) -> None: ...

class Descriptor(_message.Message):
    __slots__ = ("media_type", "digest", "size")
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    digest: str
    size: int
    def __init__(self, media_type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ImageSummary(_message.Message):
    __slots__ = ("id", "repo_tags", "repo_digests", "created", "size", "content_size", "labels", "platform", "stored_at", "labels_truncated", "indexes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REPO_TAGS_FIELD_NUMBER: _ClassVar[int]
    REPO_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    id: str
    repo_tags: _containers.RepeatedCompositeFieldContainer[ImageName]
    repo_digests: _containers.RepeatedCompositeFieldContainer[ImageName]
    created: _timestamp_pb2.Timestamp
    size: int
    content_size: int
    labels: _containers.ScalarMap[str, str]
    platform: Platform
    stored_at: _timestamp_pb2.Timestamp
    labels_truncated: bool
    indexes: _containers.RepeatedCompositeFieldContainer[NamedIndex]
    def __init__(self, id: _Optional[str] = ..., repo_tags: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., repo_digests: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size: _Optional[int] = ..., content_size: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels_truncated: _Optional[bool] = ..., indexes: _Optional[_Iterable[_Union[NamedIndex, _Mapping]]] = ...) -> None: ...

class NamedIndex(_message.Message):
    __slots__ = ("name", "index", "children")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    name: ImageName
    index: Descriptor
    children: _containers.RepeatedCompositeFieldContainer[IndexChild]
    def __init__(self, name: _Optional[_Union[ImageName, _Mapping]] = ..., index: _Optional[_Union[Descriptor, _Mapping]] = ..., children: _Optional[_Iterable[_Union[IndexChild, _Mapping]]] = ...) -> None: ...

class IndexChild(_message.Message):
    __slots__ = ("platform", "manifest", "present", "image_id")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    platform: Platform
    manifest: Descriptor
    present: bool
    image_id: str
    def __init__(self, platform: _Optional[_Union[Platform, _Mapping]] = ..., manifest: _Optional[_Union[Descriptor, _Mapping]] = ..., present: _Optional[bool] = ..., image_id: _Optional[str] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("all", "filters", "page_size", "page_token")
    ALL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    all: bool
    filters: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    def __init__(self, all: _Optional[bool] = ..., filters: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageSummary]
    next_page_token: str
    def __init__(self, images: _Optional[_Iterable[_Union[ImageSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("image", "platform", "include_raw")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RAW_FIELD_NUMBER: _ClassVar[int]
    image: str
    platform: Platform
    include_raw: bool
    def __init__(self, image: _Optional[str] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ..., include_raw: _Optional[bool] = ...) -> None: ...

class ContainerConfig(_message.Message):
    __slots__ = ("env", "cmd", "entrypoint", "working_dir", "user", "labels", "exposed_ports", "volumes", "stop_signal", "shell", "on_build")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENV_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_PORTS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    STOP_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    ON_BUILD_FIELD_NUMBER: _ClassVar[int]
    env: _containers.RepeatedScalarFieldContainer[str]
    cmd: _containers.RepeatedScalarFieldContainer[str]
    entrypoint: _containers.RepeatedScalarFieldContainer[str]
    working_dir: str
    user: str
    labels: _containers.ScalarMap[str, str]
    exposed_ports: _containers.RepeatedScalarFieldContainer[str]
    volumes: _containers.RepeatedScalarFieldContainer[str]
    stop_signal: str
    shell: _containers.RepeatedScalarFieldContainer[str]
    on_build: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, env: _Optional[_Iterable[str]] = ..., cmd: _Optional[_Iterable[str]] = ..., entrypoint: _Optional[_Iterable[str]] = ..., working_dir: _Optional[str] = ..., user: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., exposed_ports: _Optional[_Iterable[str]] = ..., volumes: _Optional[_Iterable[str]] = ..., stop_signal: _Optional[str] = ..., shell: _Optional[_Iterable[str]] = ..., on_build: _Optional[_Iterable[str]] = ...) -> None: ...

class InspectResponse(_message.Message):
    __slots__ = ("image", "author", "comment", "config", "diff_ids", "manifest", "config_descriptor", "layers", "last_tag_time", "raw_manifest", "raw_config", "labels_truncated")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DIFF_IDS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LAST_TAG_TIME_FIELD_NUMBER: _ClassVar[int]
    RAW_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    RAW_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LABELS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    image: ImageSummary
    author: str
    comment: str
    config: ContainerConfig
    diff_ids: _containers.RepeatedScalarFieldContainer[str]
    manifest: Descriptor
    config_descriptor: Descriptor
    layers: _containers.RepeatedCompositeFieldContainer[Descriptor]
    last_tag_time: _timestamp_pb2.Timestamp
    raw_manifest: bytes
    raw_config: bytes
    labels_truncated: bool
    def __init__(self, image: _Optional[_Union[ImageSummary, _Mapping]] = ..., author: _Optional[str] = ..., comment: _Optional[str] = ..., config: _Optional[_Union[ContainerConfig, _Mapping]] = ..., diff_ids: _Optional[_Iterable[str]] = ..., manifest: _Optional[_Union[Descriptor, _Mapping]] = ..., config_descriptor: _Optional[_Union[Descriptor, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[Descriptor, _Mapping]]] = ..., last_tag_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., raw_manifest: _Optional[bytes] = ..., raw_config: _Optional[bytes] = ..., labels_truncated: _Optional[bool] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("image", "platform")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    image: str
    platform: Platform
    def __init__(self, image: _Optional[str] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("created", "created_by", "size", "comment", "empty_layer", "layer_digest")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    EMPTY_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAYER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    created: _timestamp_pb2.Timestamp
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    layer_digest: str
    def __init__(self, created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., size: _Optional[int] = ..., comment: _Optional[str] = ..., empty_layer: _Optional[bool] = ..., layer_digest: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...

class TagRequest(_message.Message):
    __slots__ = ("source", "target")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class TagResponse(_message.Message):
    __slots__ = ("target", "image_ids", "displaced_image_ids")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    DISPLACED_IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    target: ImageName
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    displaced_image_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[_Union[ImageName, _Mapping]] = ..., image_ids: _Optional[_Iterable[str]] = ..., displaced_image_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("images", "force", "no_prune")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    NO_PRUNE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[str]
    force: bool
    no_prune: bool
    def __init__(self, images: _Optional[_Iterable[str]] = ..., force: _Optional[bool] = ..., no_prune: _Optional[bool] = ...) -> None: ...

class RemoveResult(_message.Message):
    __slots__ = ("item", "untagged", "deleted_image_ids", "freed_blobs", "error")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    DELETED_IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    FREED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item: str
    untagged: _containers.RepeatedCompositeFieldContainer[ImageName]
    deleted_image_ids: _containers.RepeatedScalarFieldContainer[str]
    freed_blobs: _containers.RepeatedScalarFieldContainer[str]
    error: _status_pb2.Status
    def __init__(self, item: _Optional[str] = ..., untagged: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., deleted_image_ids: _Optional[_Iterable[str]] = ..., freed_blobs: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RemoveResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RemoveResult, _Mapping]]] = ...) -> None: ...

class PruneRequest(_message.Message):
    __slots__ = ("all", "filters", "dry_run")
    ALL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    all: bool
    filters: _containers.RepeatedScalarFieldContainer[str]
    dry_run: bool
    def __init__(self, all: _Optional[bool] = ..., filters: _Optional[_Iterable[str]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PruneResponse(_message.Message):
    __slots__ = ("deleted_image_ids", "untagged", "deleted_blobs", "reclaimed_bytes", "stale_ingests", "dry_run", "deleted_image_count", "untagged_count", "deleted_blob_count", "truncated")
    DELETED_IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    DELETED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STALE_INGESTS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    DELETED_IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNTAGGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BLOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    deleted_image_ids: _containers.RepeatedScalarFieldContainer[str]
    untagged: _containers.RepeatedCompositeFieldContainer[ImageName]
    deleted_blobs: _containers.RepeatedScalarFieldContainer[str]
    reclaimed_bytes: int
    stale_ingests: int
    dry_run: bool
    deleted_image_count: int
    untagged_count: int
    deleted_blob_count: int
    truncated: bool
    def __init__(self, deleted_image_ids: _Optional[_Iterable[str]] = ..., untagged: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., deleted_blobs: _Optional[_Iterable[str]] = ..., reclaimed_bytes: _Optional[int] = ..., stale_ingests: _Optional[int] = ..., dry_run: _Optional[bool] = ..., deleted_image_count: _Optional[int] = ..., untagged_count: _Optional[int] = ..., deleted_blob_count: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class RegistryAuth(_message.Message):
    __slots__ = ("username", "password", "identity_token", "registry_token")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    identity_token: str
    registry_token: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., identity_token: _Optional[str] = ..., registry_token: _Optional[str] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("image", "platforms", "auth", "all_platforms", "all_tags")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ALL_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    ALL_TAGS_FIELD_NUMBER: _ClassVar[int]
    image: str
    platforms: _containers.RepeatedCompositeFieldContainer[Platform]
    auth: RegistryAuth
    all_platforms: bool
    all_tags: bool
    def __init__(self, image: _Optional[str] = ..., platforms: _Optional[_Iterable[_Union[Platform, _Mapping]]] = ..., auth: _Optional[_Union[RegistryAuth, _Mapping]] = ..., all_platforms: _Optional[bool] = ..., all_tags: _Optional[bool] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "text", "blob", "subject", "current", "total", "retry_after")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    phase: Phase
    text: str
    blob: Descriptor
    subject: str
    current: int
    total: int
    retry_after: _duration_pb2.Duration
    def __init__(self, phase: _Optional[_Union[Phase, str]] = ..., text: _Optional[str] = ..., blob: _Optional[_Union[Descriptor, _Mapping]] = ..., subject: _Optional[str] = ..., current: _Optional[int] = ..., total: _Optional[int] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PullResult(_message.Message):
    __slots__ = ("name", "digest", "image_ids", "updated", "status", "tags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: ImageName
    digest: str
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    updated: bool
    status: str
    tags: _containers.RepeatedCompositeFieldContainer[PulledTag]
    def __init__(self, name: _Optional[_Union[ImageName, _Mapping]] = ..., digest: _Optional[str] = ..., image_ids: _Optional[_Iterable[str]] = ..., updated: _Optional[bool] = ..., status: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[PulledTag, _Mapping]]] = ...) -> None: ...

class PulledTag(_message.Message):
    __slots__ = ("name", "digest", "image_ids", "updated")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    name: ImageName
    digest: str
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    updated: bool
    def __init__(self, name: _Optional[_Union[ImageName, _Mapping]] = ..., digest: _Optional[str] = ..., image_ids: _Optional[_Iterable[str]] = ..., updated: _Optional[bool] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: PullResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[PullResult, _Mapping]] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("image", "auth", "platform")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    image: str
    auth: RegistryAuth
    platform: Platform
    def __init__(self, image: _Optional[str] = ..., auth: _Optional[_Union[RegistryAuth, _Mapping]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ...) -> None: ...

class PushResult(_message.Message):
    __slots__ = ("name", "digest", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: ImageName
    digest: str
    size: int
    def __init__(self, name: _Optional[_Union[ImageName, _Mapping]] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: PushResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[PushResult, _Mapping]] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("registry", "auth")
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    registry: str
    auth: RegistryAuth
    def __init__(self, registry: _Optional[str] = ..., auth: _Optional[_Union[RegistryAuth, _Mapping]] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class LoadHeader(_message.Message):
    __slots__ = ("declared_size",)
    DECLARED_SIZE_FIELD_NUMBER: _ClassVar[int]
    declared_size: int
    def __init__(self, declared_size: _Optional[int] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: LoadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[LoadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class LoadedImage(_message.Message):
    __slots__ = ("id", "names", "moved", "moved_from")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    MOVED_FROM_FIELD_NUMBER: _ClassVar[int]
    id: str
    names: _containers.RepeatedCompositeFieldContainer[ImageName]
    moved: _containers.RepeatedCompositeFieldContainer[ImageName]
    moved_from: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., names: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., moved: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., moved_from: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadResult(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[LoadedImage]
    def __init__(self, images: _Optional[_Iterable[_Union[LoadedImage, _Mapping]]] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: LoadResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[LoadResult, _Mapping]] = ...) -> None: ...

class SaveRequest(_message.Message):
    __slots__ = ("images", "platform")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[str]
    platform: Platform
    def __init__(self, images: _Optional[_Iterable[str]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ...) -> None: ...

class SaveResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class DiskUsageRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ImageUsage(_message.Message):
    __slots__ = ("id", "repo_tags", "content_size", "shared_size", "unique_size", "created")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPO_TAGS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARED_SIZE_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    repo_tags: _containers.RepeatedCompositeFieldContainer[ImageName]
    content_size: int
    shared_size: int
    unique_size: int
    created: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., repo_tags: _Optional[_Iterable[_Union[ImageName, _Mapping]]] = ..., content_size: _Optional[int] = ..., shared_size: _Optional[int] = ..., unique_size: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DiskUsageResponse(_message.Message):
    __slots__ = ("images", "total_size", "reclaimable", "image_count", "blob_count", "next_page_token")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    RECLAIMABLE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BLOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageUsage]
    total_size: int
    reclaimable: int
    image_count: int
    blob_count: int
    next_page_token: str
    def __init__(self, images: _Optional[_Iterable[_Union[ImageUsage, _Mapping]]] = ..., total_size: _Optional[int] = ..., reclaimable: _Optional[int] = ..., image_count: _Optional[int] = ..., blob_count: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("digest", "offset", "limit")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    offset: int
    limit: int
    def __init__(self, digest: _Optional[str] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadBlobResponse(_message.Message):
    __slots__ = ("chunk", "offset")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    offset: int
    def __init__(self, chunk: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckProgress(_message.Message):
    __slots__ = ("blobs_checked", "blobs_total", "bytes_checked", "bytes_total")
    BLOBS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    blobs_checked: int
    blobs_total: int
    bytes_checked: int
    bytes_total: int
    def __init__(self, blobs_checked: _Optional[int] = ..., blobs_total: _Optional[int] = ..., bytes_checked: _Optional[int] = ..., bytes_total: _Optional[int] = ...) -> None: ...

class CheckProblem(_message.Message):
    __slots__ = ("kind", "subject", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    subject: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., subject: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class CheckSummary(_message.Message):
    __slots__ = ("ok", "problems", "blobs_checked", "images_checked", "unrecorded_blobs")
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    UNRECORDED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    problems: int
    blobs_checked: int
    images_checked: int
    unrecorded_blobs: int
    def __init__(self, ok: _Optional[bool] = ..., problems: _Optional[int] = ..., blobs_checked: _Optional[int] = ..., images_checked: _Optional[int] = ..., unrecorded_blobs: _Optional[int] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("progress", "problem", "unrecorded_blob", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    UNRECORDED_BLOB_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: CheckProgress
    problem: CheckProblem
    unrecorded_blob: str
    summary: CheckSummary
    def __init__(self, progress: _Optional[_Union[CheckProgress, _Mapping]] = ..., problem: _Optional[_Union[CheckProblem, _Mapping]] = ..., unrecorded_blob: _Optional[str] = ..., summary: _Optional[_Union[CheckSummary, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceLimits(_message.Message):
    __slots__ = ("max_concurrent_rpcs", "max_concurrent_streams", "max_response_bytes", "max_layer_size", "max_document_bytes", "max_concurrent_watches")
    MAX_CONCURRENT_RPCS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_LAYER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_WATCHES_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_rpcs: int
    max_concurrent_streams: int
    max_response_bytes: int
    max_layer_size: int
    max_document_bytes: int
    max_concurrent_watches: int
    def __init__(self, max_concurrent_rpcs: _Optional[int] = ..., max_concurrent_streams: _Optional[int] = ..., max_response_bytes: _Optional[int] = ..., max_layer_size: _Optional[int] = ..., max_document_bytes: _Optional[int] = ..., max_concurrent_watches: _Optional[int] = ...) -> None: ...

class LoadLimits(_message.Message):
    __slots__ = ("max_header_bytes", "max_name_bytes", "max_members", "max_kept_bytes", "max_expanded_bytes")
    MAX_HEADER_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_NAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAX_KEPT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_EXPANDED_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_header_bytes: int
    max_name_bytes: int
    max_members: int
    max_kept_bytes: int
    max_expanded_bytes: int
    def __init__(self, max_header_bytes: _Optional[int] = ..., max_name_bytes: _Optional[int] = ..., max_members: _Optional[int] = ..., max_kept_bytes: _Optional[int] = ..., max_expanded_bytes: _Optional[int] = ...) -> None: ...

class RegistryLimits(_message.Message):
    __slots__ = ("max_concurrent_downloads", "max_concurrent_uploads", "attempts", "backoff", "connect_timeout", "idle_timeout", "min_speed", "speed_window", "blob_timeout", "max_index_children", "max_manifest_bytes_per_pull", "max_layers_per_pull", "max_concurrent_small_downloads")
    MAX_CONCURRENT_DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEED_FIELD_NUMBER: _ClassVar[int]
    SPEED_WINDOW_FIELD_NUMBER: _ClassVar[int]
    BLOB_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_INDEX_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    MAX_MANIFEST_BYTES_PER_PULL_FIELD_NUMBER: _ClassVar[int]
    MAX_LAYERS_PER_PULL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_SMALL_DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_downloads: int
    max_concurrent_uploads: int
    attempts: int
    backoff: _duration_pb2.Duration
    connect_timeout: _duration_pb2.Duration
    idle_timeout: _duration_pb2.Duration
    min_speed: int
    speed_window: _duration_pb2.Duration
    blob_timeout: _duration_pb2.Duration
    max_index_children: int
    max_manifest_bytes_per_pull: int
    max_layers_per_pull: int
    max_concurrent_small_downloads: int
    def __init__(self, max_concurrent_downloads: _Optional[int] = ..., max_concurrent_uploads: _Optional[int] = ..., attempts: _Optional[int] = ..., backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., connect_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_speed: _Optional[int] = ..., speed_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., blob_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_index_children: _Optional[int] = ..., max_manifest_bytes_per_pull: _Optional[int] = ..., max_layers_per_pull: _Optional[int] = ..., max_concurrent_small_downloads: _Optional[int] = ...) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("server_version", "api_version", "gzip_backend", "catalog", "root", "tls", "mutual_tls", "auth_mode", "image_count", "blob_count", "stored_bytes", "limits", "load_limits", "registry_limits")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    GZIP_BACKEND_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_TLS_FIELD_NUMBER: _ClassVar[int]
    AUTH_MODE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BLOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    LOAD_LIMITS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_LIMITS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    gzip_backend: str
    catalog: str
    root: str
    tls: bool
    mutual_tls: bool
    auth_mode: AuthMode
    image_count: int
    blob_count: int
    stored_bytes: int
    limits: ServiceLimits
    load_limits: LoadLimits
    registry_limits: RegistryLimits
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., gzip_backend: _Optional[str] = ..., catalog: _Optional[str] = ..., root: _Optional[str] = ..., tls: _Optional[bool] = ..., mutual_tls: _Optional[bool] = ..., auth_mode: _Optional[_Union[AuthMode, str]] = ..., image_count: _Optional[int] = ..., blob_count: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., limits: _Optional[_Union[ServiceLimits, _Mapping]] = ..., load_limits: _Optional[_Union[LoadLimits, _Mapping]] = ..., registry_limits: _Optional[_Union[RegistryLimits, _Mapping]] = ...) -> None: ...

class StatBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class StatBlobResponse(_message.Message):
    __slots__ = ("blob", "diff_id", "uncompressed_size", "stored_at", "referenced", "image_ids", "image_count", "damaged", "damage")
    BLOB_FIELD_NUMBER: _ClassVar[int]
    DIFF_ID_FIELD_NUMBER: _ClassVar[int]
    UNCOMPRESSED_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    REFERENCED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    DAMAGE_FIELD_NUMBER: _ClassVar[int]
    blob: Descriptor
    diff_id: str
    uncompressed_size: int
    stored_at: _timestamp_pb2.Timestamp
    referenced: bool
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    image_count: int
    damaged: bool
    damage: str
    def __init__(self, blob: _Optional[_Union[Descriptor, _Mapping]] = ..., diff_id: _Optional[str] = ..., uncompressed_size: _Optional[int] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., referenced: _Optional[bool] = ..., image_ids: _Optional[_Iterable[str]] = ..., image_count: _Optional[int] = ..., damaged: _Optional[bool] = ..., damage: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("cursor", "time", "kind", "image_id", "name", "target_digest", "labels", "remote", "reclaimed_bytes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    cursor: int
    time: _timestamp_pb2.Timestamp
    kind: EventKind
    image_id: str
    name: ImageName
    target_digest: str
    labels: _containers.ScalarMap[str, str]
    remote: str
    reclaimed_bytes: int
    def __init__(self, cursor: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[EventKind, str]] = ..., image_id: _Optional[str] = ..., name: _Optional[_Union[ImageName, _Mapping]] = ..., target_digest: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., remote: _Optional[str] = ..., reclaimed_bytes: _Optional[int] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("cursor", "since_oldest", "filters")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_OLDEST_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    cursor: int
    since_oldest: bool
    filters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cursor: _Optional[int] = ..., since_oldest: _Optional[bool] = ..., filters: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event", "caught_up")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    event: Event
    caught_up: int
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., caught_up: _Optional[int] = ...) -> None: ...
