"""Several training tasks in one Flower message: the wire format of both sides.

Flower's simulation engine hands each SuperNode one message per 0.1 s, so a
node that gets one task per message trains at most ~10 tasks a second,
however small they are. When several tasks wait for the same SuperNode, the
server sends them in one message of type :data:`BATCH_MESSAGE_TYPE`
(``train.batch``, Flower's ``<category>.<action>`` routing), which fedstale's
ClientApp answers with all their results in one reply
(:mod:`fedstale.client.batch`); the server splits the reply back into one
reply per task (:mod:`fedstale.strategies.batches`). Only a node whose
ClientApp said so in the ``prepare`` handshake (:data:`CAPABILITY_KEY`) is
sent batches; any other ClientApp keeps one plain ``train`` message per task.

The batch message
    Task ``i``'s own TRAIN message content (records ``arrays`` and
    ``config`` as :class:`~fedstale.strategies.placement.Placement` builds
    them) is stored under ``"<i>.<name>"``. An ArrayRecord that is the very
    object of an earlier task's (tasks on the same model version share the
    one ArrayRecord the loop builds per version) is stored once: the
    :data:`BATCH_RECORD` ConfigRecord lists it in ``links`` as
    ``"<i>.<name>=<j>.<name>"``. ``size`` is the number of tasks.

The batch reply
    Task ``i``'s reply content (after the ClientApp's mods) under
    ``"<i>.<name>"``; the :data:`BATCH_RECORD` ConfigRecord holds ``size``,
    ``error-code`` and ``error-reason`` per task (-1 and "" when the task
    did not fail), ``seconds``, the wall seconds the ClientApp spent on
    each task (the server sizes later batches with them), and
    ``delivered-at``, the batch message's ``metadata.delivered_at`` as the
    ClientApp saw it (when Flower's engine handed it over; "" if unset).

Everything is built from Flower's own Message, RecordDict, ArrayRecord and
ConfigRecord; the per-task messages on either side are ordinary Flower
messages (:func:`task_messages`, :func:`task_replies`), so mods and the
loop see exactly what they would see for a task sent alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    RecordDict,
)

BATCH_MESSAGE_TYPE = f"{MessageType.TRAIN}.batch"
"""Message type of a batch of TRAIN tasks (routed to the ClientApp's ``train("batch")``)."""

BATCH_RECORD = "fedstale-batch"
"""Name of the ConfigRecord describing the batch, in the message and in the reply."""

CAPABILITY_KEY = "batch-tasks"
"""Key of the ``prepare`` reply's ConfigRecord: True when the node accepts batches."""

NO_ERROR = -1
"""``error-code`` of a task that did not fail."""


def _key(index: int, name: str) -> str:
    return f"{index}.{name}"


def pack_tasks(messages: Sequence[Message]) -> Message:
    """One :data:`BATCH_MESSAGE_TYPE` message carrying the tasks of TRAIN ``messages``.

    The messages must be for one SuperNode; the batch takes its TTL and
    group id from the first.
    """
    content, links, seen = RecordDict(), [], {}
    for index, message in enumerate(messages):
        for name, record in message.content.items():
            key = _key(index, name)
            if isinstance(record, ArrayRecord) and id(record) in seen:
                links.append(f"{key}={seen[id(record)]}")
                continue
            if isinstance(record, ArrayRecord):
                seen[id(record)] = key
            content[key] = record
    content[BATCH_RECORD] = ConfigRecord({"size": len(messages), "links": links})
    first = messages[0].metadata
    return Message(
        content,
        dst_node_id=first.dst_node_id,
        message_type=BATCH_MESSAGE_TYPE,
        ttl=first.ttl,
        group_id=first.group_id,
    )


def _split(content: RecordDict, size: int) -> list[RecordDict]:
    """The per-task RecordDicts of a batch's ``content`` (links not applied)."""
    parts = [RecordDict() for _ in range(size)]
    for key, record in content.items():
        index, sep, name = key.partition(".")
        if key != BATCH_RECORD and sep and index.isdigit() and int(index) < size:
            parts[int(index)][name] = record
    return parts


def _metadata(template: Metadata, message_id: str, reply_to: str, group_id: str) -> Metadata:
    return Metadata(
        run_id=template.run_id,
        message_id=message_id,
        src_node_id=template.src_node_id,
        dst_node_id=template.dst_node_id,
        reply_to_message_id=reply_to,
        group_id=group_id,
        created_at=template.created_at,
        ttl=template.ttl,
        message_type=MessageType.TRAIN,
    )


def task_messages(batch: Message) -> list[Message]:
    """The TRAIN message of each task of ``batch``, in order (ClientApp side)."""
    info = batch.content[BATCH_RECORD]
    parts = _split(batch.content, int(info["size"]))  # type: ignore[arg-type]
    for link in info.get("links", []):  # type: ignore[union-attr]
        key, _, source = str(link).partition("=")
        index, _, name = key.partition(".")
        parts[int(index)][name] = batch.content[source]
    template = batch.metadata
    return [
        Message(
            metadata=_metadata(template, template.message_id, "", template.group_id),
            content=part,
        )
        for part in parts
    ]


def pack_replies(batch: Message, replies: Sequence[Message], seconds: Sequence[float]) -> Message:
    """The reply to ``batch`` holding each task's reply (content or error) and its seconds."""
    content = RecordDict()
    codes, reasons = [], []
    for index, reply in enumerate(replies):
        if reply.has_error():
            codes.append(int(reply.error.code))
            reasons.append(str(reply.error.reason))
            continue
        codes.append(NO_ERROR)
        reasons.append("")
        for name, record in reply.content.items():
            content[_key(index, name)] = record
    content[BATCH_RECORD] = ConfigRecord(
        {
            "size": len(replies),
            "error-code": codes,
            "error-reason": reasons,
            "seconds": [float(s) for s in seconds],
            "delivered-at": str(batch.metadata.delivered_at or ""),
        }
    )
    return Message(content, reply_to=batch)


def task_replies(reply: Message, reply_to: Sequence[str], group_ids: Sequence[str]) -> list[Message]:
    """One TRAIN reply per task of the batch ``reply`` answers (server side).

    Task ``i``'s reply answers message id ``reply_to[i]`` (the id the server
    gave the task) in group ``group_ids[i]``. An error reply to the whole
    batch is every task's error; a task the reply says nothing about gets
    an empty content (a malformed update).
    """
    size = len(reply_to)
    if reply.has_error():
        contents: list[RecordDict | Error] = [reply.error] * size
    else:
        info = reply.content.get(BATCH_RECORD, ConfigRecord())
        codes = list(info.get("error-code", []))  # type: ignore[union-attr,arg-type]
        reasons = list(info.get("error-reason", []))  # type: ignore[union-attr,arg-type]
        parts = _split(reply.content, size)
        contents = []
        for index, part in enumerate(parts):
            code = int(codes[index]) if index < len(codes) else NO_ERROR  # type: ignore[arg-type]
            if code == NO_ERROR:
                contents.append(part)
            else:
                contents.append(Error(code=code, reason=str(reasons[index])))
    messages = []
    for index, body in enumerate(contents):
        metadata = _metadata(
            reply.metadata, f"{reply.metadata.message_id}/{index}", reply_to[index], group_ids[index]
        )
        if isinstance(body, Error):
            messages.append(Message(metadata=metadata, error=body))
        else:
            messages.append(Message(metadata=metadata, content=body))
    return messages


def task_seconds(reply: Message) -> list[float]:
    """The ClientApp's wall seconds per task of a batch reply (empty if it has none)."""
    if reply.has_error() or BATCH_RECORD not in reply.content:
        return []
    info = reply.content[BATCH_RECORD]
    return [float(s) for s in info.get("seconds", [])]  # type: ignore[union-attr]


def delivered_at(reply: Message) -> float | None:
    """Unix time at which the engine handed the batch to the ClientApp (None if unknown)."""
    if reply.has_error() or BATCH_RECORD not in reply.content:
        return None
    text = str(reply.content[BATCH_RECORD].get("delivered-at", ""))
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def fit_seconds(reply: Message) -> float | None:
    """The ``fit-seconds`` metric of a single task's TRAIN reply (the bridge reports it), if any."""
    if reply.has_error():
        return None
    for record in reply.content.metric_records.values():
        if "fit-seconds" in record:
            return float(record["fit-seconds"])  # type: ignore[arg-type]
    return None
