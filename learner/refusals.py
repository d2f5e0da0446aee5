"""Why the receiver refuses a well-formed message (each a ProtocolError whose `reason` names
its RejectCounter count): another task, an actor it has not greeted, other settings."""
from fpac_async.wire.protocol import ProtocolError


class TaskMismatchError(ProtocolError):
    """A well-formed message from an actor running another task."""

    reason = "task"


class UnknownActorError(ProtocolError):
    """Steps from an actor whose hello this learner has not accepted (e.g. one that was talking
    to an earlier learner on this port): it is asked to say hello."""

    reason = "unknown_actor"


class SettingsMismatchError(ProtocolError):
    """A hello from an actor or evaluator started with other settings than this run's."""

    reason = "config"
