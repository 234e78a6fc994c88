from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "reward", "label")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reward: float
    label: str
    def __init__(self, request_id: _Optional[str] = ..., reward: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("experiment", "candidate", "reward")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    candidate: str
    reward: float
    def __init__(self, experiment: _Optional[str] = ..., candidate: _Optional[str] = ..., reward: _Optional[float] = ...) -> None: ...
