from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetHistoricalFeaturesRequest(_message.Message):
    __slots__ = ("features", "entity_rows_arrow", "entity_rows_path", "timestamp_column", "output_path", "summary_only")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ROWS_ARROW_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ROWS_PATH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_ONLY_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    entity_rows_arrow: bytes
    entity_rows_path: str
    timestamp_column: str
    output_path: str
    summary_only: bool
    def __init__(self, features: _Optional[_Iterable[str]] = ..., entity_rows_arrow: _Optional[bytes] = ..., entity_rows_path: _Optional[str] = ..., timestamp_column: _Optional[str] = ..., output_path: _Optional[str] = ..., summary_only: _Optional[bool] = ...) -> None: ...

class MatchedCount(_message.Message):
    __slots__ = ("column", "rows")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    column: str
    rows: int
    def __init__(self, column: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class GetHistoricalFeaturesResponse(_message.Message):
    __slots__ = ("arrow_chunk", "dataset_hash", "row_count", "matched", "output_path", "lineage_recorded")
    ARROW_CHUNK_FIELD_NUMBER: _ClassVar[int]
    DATASET_HASH_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_RECORDED_FIELD_NUMBER: _ClassVar[int]
    arrow_chunk: bytes
    dataset_hash: str
    row_count: int
    matched: _containers.RepeatedCompositeFieldContainer[MatchedCount]
    output_path: str
    lineage_recorded: bool
    def __init__(self, arrow_chunk: _Optional[bytes] = ..., dataset_hash: _Optional[str] = ..., row_count: _Optional[int] = ..., matched: _Optional[_Iterable[_Union[MatchedCount, _Mapping]]] = ..., output_path: _Optional[str] = ..., lineage_recorded: _Optional[bool] = ...) -> None: ...

class CompactOfflineFilesRequest(_message.Message):
    __slots__ = ("view", "version", "dry_run")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    view: str
    version: int
    dry_run: bool
    def __init__(self, view: _Optional[str] = ..., version: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class CompactedFiles(_message.Message):
    __slots__ = ("version", "date", "files_in", "file_out", "rows")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    FILES_IN_FIELD_NUMBER: _ClassVar[int]
    FILE_OUT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    version: int
    date: str
    files_in: _containers.RepeatedScalarFieldContainer[str]
    file_out: str
    rows: int
    def __init__(self, version: _Optional[int] = ..., date: _Optional[str] = ..., files_in: _Optional[_Iterable[str]] = ..., file_out: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class DamagedPartition(_message.Message):
    __slots__ = ("version", "date", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    date: str
    error: str
    def __init__(self, version: _Optional[int] = ..., date: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class CompactOfflineFilesResponse(_message.Message):
    __slots__ = ("merged", "deleted_files", "busy_partitions", "damaged_partitions")
    MERGED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FILES_FIELD_NUMBER: _ClassVar[int]
    BUSY_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    merged: _containers.RepeatedCompositeFieldContainer[CompactedFiles]
    deleted_files: int
    busy_partitions: _containers.RepeatedScalarFieldContainer[str]
    damaged_partitions: _containers.RepeatedCompositeFieldContainer[DamagedPartition]
    def __init__(self, merged: _Optional[_Iterable[_Union[CompactedFiles, _Mapping]]] = ..., deleted_files: _Optional[int] = ..., busy_partitions: _Optional[_Iterable[str]] = ..., damaged_partitions: _Optional[_Iterable[_Union[DamagedPartition, _Mapping]]] = ...) -> None: ...
