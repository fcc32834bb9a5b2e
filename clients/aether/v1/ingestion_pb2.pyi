from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestHeader(_message.Message):
    __slots__ = ("view", "version", "start_us", "end_us", "strict", "source")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    view: str
    version: int
    start_us: int
    end_us: int
    strict: bool
    source: str
    def __init__(self, view: _Optional[str] = ..., version: _Optional[int] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., strict: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class IngestChunk(_message.Message):
    __slots__ = ("header", "arrow_ipc")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    header: IngestHeader
    arrow_ipc: bytes
    def __init__(self, header: _Optional[_Union[IngestHeader, _Mapping]] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

class MaterializeRequest(_message.Message):
    __slots__ = ("header", "source_uri")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    header: IngestHeader
    source_uri: str
    def __init__(self, header: _Optional[_Union[IngestHeader, _Mapping]] = ..., source_uri: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("run_id", "records_in", "accepted", "quarantined", "skipped_outside_window", "online_rows", "offline_paths")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_IN_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_OUTSIDE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    ONLINE_ROWS_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_PATHS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    records_in: int
    accepted: int
    quarantined: int
    skipped_outside_window: int
    online_rows: int
    offline_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., records_in: _Optional[int] = ..., accepted: _Optional[int] = ..., quarantined: _Optional[int] = ..., skipped_outside_window: _Optional[int] = ..., online_rows: _Optional[int] = ..., offline_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class QuarantinedRecord(_message.Message):
    __slots__ = ("id", "run_id", "record_key", "view", "version", "source_kind", "source_id", "payload_json", "reason", "status", "created_at_us", "updated_at_us")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_KEY_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    id: int
    run_id: str
    record_key: str
    view: str
    version: int
    source_kind: str
    source_id: str
    payload_json: str
    reason: str
    status: str
    created_at_us: int
    updated_at_us: int
    def __init__(self, id: _Optional[int] = ..., run_id: _Optional[str] = ..., record_key: _Optional[str] = ..., view: _Optional[str] = ..., version: _Optional[int] = ..., source_kind: _Optional[str] = ..., source_id: _Optional[str] = ..., payload_json: _Optional[str] = ..., reason: _Optional[str] = ..., status: _Optional[str] = ..., created_at_us: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class ListQuarantinedRequest(_message.Message):
    __slots__ = ("view", "reason_contains", "status", "run_id", "limit", "page_token")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    REASON_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    view: str
    reason_contains: str
    status: str
    run_id: str
    limit: int
    page_token: str
    def __init__(self, view: _Optional[str] = ..., reason_contains: _Optional[str] = ..., status: _Optional[str] = ..., run_id: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQuarantinedResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[QuarantinedRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[QuarantinedRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetQuarantinedRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class CorrectedRecord(_message.Message):
    __slots__ = ("id", "payload_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    payload_json: str
    def __init__(self, id: _Optional[int] = ..., payload_json: _Optional[str] = ...) -> None: ...

class ReplayQuarantinedRequest(_message.Message):
    __slots__ = ("ids", "corrected")
    IDS_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    corrected: _containers.RepeatedCompositeFieldContainer[CorrectedRecord]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., corrected: _Optional[_Iterable[_Union[CorrectedRecord, _Mapping]]] = ...) -> None: ...

class ReplayQuarantinedResponse(_message.Message):
    __slots__ = ("replayed", "still_quarantined", "run_id", "run_ids")
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    STILL_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    replayed: _containers.RepeatedScalarFieldContainer[int]
    still_quarantined: _containers.RepeatedCompositeFieldContainer[QuarantinedRecord]
    run_id: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replayed: _Optional[_Iterable[int]] = ..., still_quarantined: _Optional[_Iterable[_Union[QuarantinedRecord, _Mapping]]] = ..., run_id: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DiscardQuarantinedRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DiscardQuarantinedResponse(_message.Message):
    __slots__ = ("discarded",)
    DISCARDED_FIELD_NUMBER: _ClassVar[int]
    discarded: int
    def __init__(self, discarded: _Optional[int] = ...) -> None: ...

class IngestionRun(_message.Message):
    __slots__ = ("run_id", "view", "version", "source_kind", "source_id", "records_in", "accepted", "quarantined", "published")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_IN_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    view: str
    version: int
    source_kind: str
    source_id: str
    records_in: int
    accepted: int
    quarantined: int
    published: int
    def __init__(self, run_id: _Optional[str] = ..., view: _Optional[str] = ..., version: _Optional[int] = ..., source_kind: _Optional[str] = ..., source_id: _Optional[str] = ..., records_in: _Optional[int] = ..., accepted: _Optional[int] = ..., quarantined: _Optional[int] = ..., published: _Optional[int] = ...) -> None: ...

class ListIngestionRunsRequest(_message.Message):
    __slots__ = ("view", "limit")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    view: str
    limit: int
    def __init__(self, view: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListIngestionRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[IngestionRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[IngestionRun, _Mapping]]] = ...) -> None: ...
