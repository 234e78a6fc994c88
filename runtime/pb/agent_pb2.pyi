from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "internal_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    internal_name: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., internal_name: _Optional[str] = ...) -> None: ...

class AgentSubscribe(_message.Message):
    __slots__ = ("server_name", "replica_idx", "capabilities", "memory_bytes", "over_commit_percentage", "host", "server_http_port", "server_grpc_port", "agent_http_port", "agent_grpc_port", "loaded", "evicted")
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICA_IDX_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVER_COMMIT_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SERVER_HTTP_PORT_FIELD_NUMBER: _ClassVar[int]
    SERVER_GRPC_PORT_FIELD_NUMBER: _ClassVar[int]
    AGENT_HTTP_PORT_FIELD_NUMBER: _ClassVar[int]
    AGENT_GRPC_PORT_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    server_name: str
    replica_idx: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    memory_bytes: int
    over_commit_percentage: int
    host: str
    server_http_port: int
    server_grpc_port: int
    agent_http_port: int
    agent_grpc_port: int
    loaded: _containers.RepeatedCompositeFieldContainer[ModelRef]
    evicted: _containers.RepeatedCompositeFieldContainer[ModelRef]
    def __init__(self, server_name: _Optional[str] = ..., replica_idx: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., memory_bytes: _Optional[int] = ..., over_commit_percentage: _Optional[int] = ..., host: _Optional[str] = ..., server_http_port: _Optional[int] = ..., server_grpc_port: _Optional[int] = ..., agent_http_port: _Optional[int] = ..., agent_grpc_port: _Optional[int] = ..., loaded: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., evicted: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ...) -> None: ...

class ModelOperation(_message.Message):
    __slots__ = ("op", "model", "spec_json", "memory_bytes")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[ModelOperation.Op]
        LOAD: _ClassVar[ModelOperation.Op]
        UNLOAD: _ClassVar[ModelOperation.Op]
    OP_UNSPECIFIED: ModelOperation.Op
    LOAD: ModelOperation.Op
    UNLOAD: ModelOperation.Op
    OP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    op: ModelOperation.Op
    model: ModelRef
    spec_json: str
    memory_bytes: int
    def __init__(self, op: _Optional[_Union[ModelOperation.Op, str]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., spec_json: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class ModelEvent(_message.Message):
    __slots__ = ("server_name", "replica_idx", "model", "event", "reason", "available_memory_bytes")
    class Event(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EVENT_UNSPECIFIED: _ClassVar[ModelEvent.Event]
        LOADING: _ClassVar[ModelEvent.Event]
        LOADED: _ClassVar[ModelEvent.Event]
        LOAD_FAILED: _ClassVar[ModelEvent.Event]
        UNLOADING: _ClassVar[ModelEvent.Event]
        UNLOADED: _ClassVar[ModelEvent.Event]
        UNLOAD_FAILED: _ClassVar[ModelEvent.Event]
        EVICTING: _ClassVar[ModelEvent.Event]
        RESIDENT: _ClassVar[ModelEvent.Event]
    EVENT_UNSPECIFIED: ModelEvent.Event
    LOADING: ModelEvent.Event
    LOADED: ModelEvent.Event
    LOAD_FAILED: ModelEvent.Event
    UNLOADING: ModelEvent.Event
    UNLOADED: ModelEvent.Event
    UNLOAD_FAILED: ModelEvent.Event
    EVICTING: ModelEvent.Event
    RESIDENT: ModelEvent.Event
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICA_IDX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    server_name: str
    replica_idx: int
    model: ModelRef
    event: ModelEvent.Event
    reason: str
    available_memory_bytes: int
    def __init__(self, server_name: _Optional[str] = ..., replica_idx: _Optional[int] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., event: _Optional[_Union[ModelEvent.Event, str]] = ..., reason: _Optional[str] = ..., available_memory_bytes: _Optional[int] = ...) -> None: ...

class EventAck(_message.Message):
    __slots__ = ("routes_applied",)
    ROUTES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    routes_applied: bool
    def __init__(self, routes_applied: _Optional[bool] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("server_name", "replica_idx")
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICA_IDX_FIELD_NUMBER: _ClassVar[int]
    server_name: str
    replica_idx: int
    def __init__(self, server_name: _Optional[str] = ..., replica_idx: _Optional[int] = ...) -> None: ...

class DrainedModel(_message.Message):
    __slots__ = ("name", "version", "server", "replicas", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    server: str
    replicas: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., server: _Optional[str] = ..., replicas: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("moved", "not_moved")
    MOVED_FIELD_NUMBER: _ClassVar[int]
    NOT_MOVED_FIELD_NUMBER: _ClassVar[int]
    moved: _containers.RepeatedCompositeFieldContainer[DrainedModel]
    not_moved: _containers.RepeatedCompositeFieldContainer[DrainedModel]
    def __init__(self, moved: _Optional[_Iterable[_Union[DrainedModel, _Mapping]]] = ..., not_moved: _Optional[_Iterable[_Union[DrainedModel, _Mapping]]] = ...) -> None: ...

class ModelLoad(_message.Message):
    __slots__ = ("model", "in_flight", "requests_per_second")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    in_flight: float
    requests_per_second: float
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., in_flight: _Optional[float] = ..., requests_per_second: _Optional[float] = ...) -> None: ...

class LoadReport(_message.Message):
    __slots__ = ("server_name", "replica_idx", "window_seconds", "models")
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICA_IDX_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    server_name: str
    replica_idx: int
    window_seconds: float
    models: _containers.RepeatedCompositeFieldContainer[ModelLoad]
    def __init__(self, server_name: _Optional[str] = ..., replica_idx: _Optional[int] = ..., window_seconds: _Optional[float] = ..., models: _Optional[_Iterable[_Union[ModelLoad, _Mapping]]] = ...) -> None: ...

class LoadAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
