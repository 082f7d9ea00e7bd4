"""The run as a pure state machine: `RunMachine.activate(message) -> Completion`.

Everything a workflow run does is decided here (coroutine driving, replay by position, steps,
retries and timeouts, sleeps, signals, children, cancellation, saga compensation); the host
(`actorflow._host`) only routes messages in, writes the completion's events into its journal batch
and releases the completion's effects once that batch is durable.
"""

from ._completion import (
    ABANDON,
    APPEND,
    ARM,
    BLOCKED,
    CREATE_CHILD,
    CREATE_ELSEWHERE,
    DEL_SIGNAL,
    DEL_TIMER,
    DISARM,
    DISPATCH,
    FINISHED,
    OP_NAMES,
    PUT_TIMER,
    REPLY,
    SEND,
    Codec,
    Completion,
    Env,
)
from ._machine import RunMachine
from ._state import FAMILY, Detached, describe_error, failure_text

__all__ = [
    "APPEND",
    "ARM",
    "BLOCKED",
    "ABANDON",
    "CREATE_ELSEWHERE",
    "CREATE_CHILD",
    "DEL_SIGNAL",
    "DEL_TIMER",
    "DISARM",
    "DISPATCH",
    "FAMILY",
    "FINISHED",
    "OP_NAMES",
    "PUT_TIMER",
    "REPLY",
    "SEND",
    "Codec",
    "Completion",
    "Detached",
    "Env",
    "RunMachine",
    "describe_error",
    "failure_text",
]
