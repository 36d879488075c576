"""All of a message's arrays in one Flower object: the wire format of both sides.

Flower 1.41 sends a message as a tree of objects (the message, its
RecordDict, each record, each Array and each 5 MB chunk of an Array), and
every object is its own request on every hop (ServerApp → SuperLink →
SuperNode → ClientApp and back). A TRAIN message of ``resnet8`` (23 tensors)
is up to 50 objects (the message, its RecordDict, 2 records, 23 Arrays and
their 23 chunks; fewer where tensors are equal, as objects are
content-addressed), its reply as many; packed, it is 7. On real SuperNodes
that count, not the bytes, is most of what an update costs beyond training
(``docs/deployment-speed.md``). Flower has no option to send an ArrayRecord
as one object, so fedstale packs the arrays itself where both ends are
fedstale's: a node whose ClientApp says so in the ``prepare`` handshake
(:data:`CAPABILITY_KEY`) gets every message with its ArrayRecords packed
into one :data:`PACKED_ARRAYS` ArrayRecord holding a single Array, and a
:data:`PACKED_LAYOUT` ConfigRecord saying how to cut it back; fedstale's
ClientApp unpacks with its outermost mod (:func:`packed_arrays_mod`, so
every handler and mod sees the message as sent) and packs its reply the same
way; the strategy unpacks the reply before anything reads it. Any other
ClientApp gets ordinary messages.

Packing copies each Array's serialized bytes (``Array.data``) and its
``dtype``, ``shape`` and ``stype`` as they are, so unpacking gives Arrays
equal to the originals, byte for byte: the rows of a run do not depend on
it (tested).

The layout (:data:`PACKED_LAYOUT`)
    ``order``: the names of all records of the original content, in order;
    ``records``: the names of the ArrayRecords, in order, and ``counts`` the
    number of arrays of each; then per array, in order: ``keys``,
    ``dtypes``, ``stypes``, ``ndims`` (its number of dimensions), ``sizes``
    (its bytes); ``shapes``: all arrays' dimensions, concatenated.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

__all__ = [
    "CAPABILITY_KEY",
    "PACKED_ARRAYS",
    "PACKED_LAYOUT",
    "is_packed",
    "pack_arrays",
    "pack_message",
    "packed_arrays_mod",
    "unpack_arrays",
    "unpack_message",
]

CAPABILITY_KEY = "packed-arrays"
"""Key of the ``prepare`` reply's ConfigRecord: True when the node's ClientApp unpacks."""

PACKED_ARRAYS = "fedstale-packed-arrays"
"""Name of the ArrayRecord holding all arrays' bytes, as one Array."""

PACKED_LAYOUT = "fedstale-packed-layout"
"""Name of the ConfigRecord describing how to cut :data:`PACKED_ARRAYS` back."""

_STYPE = "fedstale.packed"


def is_packed(content: RecordDict) -> bool:
    """Whether ``content`` holds packed arrays."""
    return PACKED_LAYOUT in content


def pack_arrays(content: RecordDict) -> RecordDict:
    """``content`` with all its ArrayRecords packed into one Array (the others kept).

    Content without ArrayRecords is returned as it is.
    """
    if not content.array_records:
        return content
    order = list(content.keys())
    records, counts, keys, dtypes, stypes, ndims, sizes, shapes = [], [], [], [], [], [], [], []
    chunks: list[bytes] = []
    packed = RecordDict()
    for name, record in content.items():
        if not isinstance(record, ArrayRecord):
            packed[name] = record
            continue
        records.append(name)
        counts.append(len(record))
        for key, array in record.items():
            keys.append(key)
            dtypes.append(array.dtype)
            stypes.append(array.stype)
            ndims.append(len(array.shape))
            shapes.extend(int(d) for d in array.shape)
            sizes.append(len(array.data))
            chunks.append(array.data)
    data = b"".join(chunks)
    packed[PACKED_ARRAYS] = ArrayRecord({"data": Array(dtype="uint8", shape=(len(data),), stype=_STYPE, data=data)})
    packed[PACKED_LAYOUT] = ConfigRecord(
        {
            "order": order,
            "records": records,
            "counts": counts,
            "keys": keys,
            "dtypes": dtypes,
            "stypes": stypes,
            "ndims": ndims,
            "sizes": sizes,
            "shapes": shapes,
        }
    )
    return packed


def unpack_arrays(content: RecordDict) -> RecordDict:
    """The content :func:`pack_arrays` packed, its records in their original order.

    Raises
    ------
    ValueError
        If the layout does not match the packed bytes.
    """
    layout = content[PACKED_LAYOUT]
    data = content[PACKED_ARRAYS]["data"].data
    keys, dtypes, stypes = layout["keys"], layout["dtypes"], layout["stypes"]
    ndims, sizes, shapes = layout["ndims"], layout["sizes"], layout["shapes"]
    described, counted = sum(sizes), sum(layout["counts"])  # type: ignore[arg-type]
    if described != len(data):
        raise ValueError(f"packed arrays: the layout describes {described} bytes, got {len(data)}")
    if counted != len(keys):
        raise ValueError(f"packed arrays: the layout counts {counted} arrays, names {len(keys)}")
    arrays: dict[str, ArrayRecord] = {}
    at = dim = index = 0
    for name, count in zip(layout["records"], layout["counts"]):  # type: ignore[call-overload]
        record = ArrayRecord()
        for _ in range(count):
            shape = tuple(shapes[dim : dim + ndims[index]])  # type: ignore[index]
            size = sizes[index]  # type: ignore[index]
            record[keys[index]] = Array(  # type: ignore[index]
                dtype=dtypes[index], shape=shape, stype=stypes[index], data=data[at : at + size]  # type: ignore[index]
            )
            at, dim, index = at + size, dim + ndims[index], index + 1  # type: ignore[index,operator]
        arrays[name] = record
    unpacked = RecordDict()
    for name in layout["order"]:  # type: ignore[union-attr]
        unpacked[name] = arrays[name] if name in arrays else content[name]
    return unpacked


def pack_message(message: Message) -> Message:
    """A new message like ``message`` (not yet sent) with its arrays packed."""
    meta = message.metadata
    return Message(
        pack_arrays(message.content),
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        ttl=meta.ttl,
        group_id=meta.group_id,
    )


def unpack_message(message: Message) -> Message:
    """``message`` with its content unpacked in place (if packed); returns it."""
    if message.has_content() and is_packed(message.content):
        message.content = unpack_arrays(message.content)
    return message


def packed_arrays_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: unpack a packed message for the handler; pack its reply.

    Messages that are not packed pass through untouched, so the ClientApp
    still serves a strategy that does not pack.
    """
    if not (message.has_content() and is_packed(message.content)):
        return call_next(message, context)
    message.content = unpack_arrays(message.content)
    reply = call_next(message, context)
    if reply.has_content():
        reply.content = pack_arrays(reply.content)
    return reply
