"""A sentencepiece .model (a serialised ModelProto) read and edited without the protobuf module.

sentencepiece ships `sentencepiece_model_pb2`, but the protobuf runtime the rest of the stack pins is
older than its generated code and refuses to load it (VersionError); the few fields Tenali needs are
read here instead. No torch: the shard workers use it.
"""

from __future__ import annotations

# ModelProto field numbers (sentencepiece_model.proto)
PIECES, TRAINER, NORMALIZER = 1, 2, 3
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def spans(buf: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value start, value end) of each field of the message in buf[start:end];
    for a varint the span is its encoded bytes. ValueError on a wire type protobuf does not have."""
    i, end = start, len(buf) if end is None else end
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            begin, i = i, _varint(buf, i)[1]
        elif wire == 1:
            begin, i = i, i + 8
        elif wire == 2:
            n, begin = _varint(buf, i)
            i = begin + n
        elif wire == 5:
            begin, i = i, i + 4
        else:
            raise ValueError(f"not a sentencepiece model (protobuf wire type {wire})")
        yield number, wire, begin, i


def fields(buf: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    for number, wire, begin, end in spans(buf):
        yield number, (_varint(buf, begin)[0] if wire == 0 else buf[begin:end])


def with_control_pieces(model: bytes, tokens) -> bytes:
    """The model with `tokens` turned from user-defined pieces (matched wherever text holds them) into
    control pieces (never produced from text; same ids): encoding then spells their strings with
    ordinary and byte pieces. Edited in place: a piece's type is one varint byte either way."""
    wanted = {t.encode() for t in tokens}
    out = bytearray(model)
    for number, wire, begin, end in spans(model):
        if number != PIECES or wire != 2:
            continue
        piece = type_at = None
        for n, _, b, e in spans(model, begin, end):
            if n == 1:
                piece = model[b:e]
            elif n == 3:
                type_at = b
        if piece in wanted and type_at is not None and model[type_at] == USER_DEFINED:
            out[type_at] = CONTROL
    return bytes(out)
