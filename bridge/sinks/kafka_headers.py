"""CloudEvents Kafka binary-mode headers: ``ce_<name>``, ``datacontenttype`` as ``content-type``.

:func:`binary_headers` gives them as ``(name, value)`` pairs; :class:`BinaryHeaderSection` gives
the same headers already encoded as a Kafka record's header section, which is what
:class:`bridge.sinks.kafka_batch.RecordBatchBuilder` takes.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.sinks.base import EnvelopeTail, envelope_attributes
from bridge.sinks.kafka_batch import encode_headers, varint

Attribute = tuple[str, str | int]
Header = tuple[str, bytes]

_BINARY_NAMES = {"datacontenttype": "content-type"}
_CONSTANT_ATTRIBUTES = 6  # specversion ... sessionepoch: one shared tuple of pairs per event type and session
_PREFIX_CACHE_ENTRIES = 1_024
_SMALL_VARINTS = [varint(n) for n in range(128)]  # lengths of the per-record values (short ids, times)
_TEN_HEADERS = varint(10)


def _header_name(name: str) -> str:
    return _BINARY_NAMES.get(name) or "ce_" + name


def _binary_header(attribute: Attribute) -> Header:
    name, value = attribute
    return _header_name(name), value.encode() if isinstance(value, str) else b"%d" % value


def binary_headers(attributes: Sequence[Attribute]) -> list[Header]:
    """CloudEvents Kafka binary mode: ``ce_<name>`` headers, ``datacontenttype`` as ``content-type``."""
    return [_binary_header(attribute) for attribute in attributes]


def header_section(headers: Sequence[Header]) -> bytes:
    """``headers`` encoded as a record's header section: the count, then the pairs."""
    return varint(len(headers)) + encode_headers([(name.encode(), value) for name, value in headers])


class BinaryHeaderSection:
    """``header_section(binary_headers(attributes))`` for the hot path, the constant headers encoded once.

    The codec gives every record of an event type in a session the same six leading pairs
    (specversion, source, type, datacontenttype, dataschema, sessionepoch: the very same
    objects), so their encoding is cached under the identity of the sixth pair. An entry holds
    its pairs, so that identity is not reused while cached, and is compared with the record's
    (cheap: the same objects), so records built elsewhere (spool replay, tests) get headers from
    their own values. The remaining attributes (id, time, subject, sequence) are encoded per record.
    """

    def __init__(self) -> None:
        self._prefixes: dict[int, tuple[tuple[Attribute, ...], bytes]] = {}

    def __call__(self, attributes: tuple[Attribute, ...]) -> bytes:
        """Headers of a record built from its attributes (spool replay, tests); the codec's records
        take :meth:`enveloped`, the hot path."""
        head = attributes[:_CONSTANT_ATTRIBUTES]
        if not head:
            return b"\x00"  # no headers
        entry = self._prefixes.get(id(head[-1]))
        if entry is None or entry[0] != head:
            entry = self._remember(head)
        tail = attributes[_CONSTANT_ATTRIBUTES:]
        values = [v.encode() if isinstance(v, str) else b"%d" % v for _, v in tail]
        return b"".join(
            [varint(len(attributes)), entry[1]]
            + [_length_prefixed(_header_name(n).encode()) + varint(len(v)) + v
               for (n, _), v in zip(tail, values, strict=True)]
        )  # fmt: skip

    def enveloped(self, head: tuple[Attribute, ...], tail: EnvelopeTail) -> bytes:
        """``self(head + id, time, subject, sequence pairs with tail's values)`` without that tuple:
        a codec record's headers (:meth:`bridge.sinks.base.Record.enveloped`)."""
        if len(head) != _CONSTANT_ATTRIBUTES:
            return self(envelope_attributes(head, tail))
        entry = self._prefixes.get(id(head[-1]))
        if entry is None or (entry[0] is not head and entry[0] != head):
            entry = self._remember(head)
        event_id, time, subject, sequence = tail
        ib, tb, sb = event_id.encode(), time.encode(), subject.encode()
        nb = b"%d" % sequence
        small = _SMALL_VARINTS
        try:
            return b"".join((
                _TEN_HEADERS, entry[1], _ID_NAME, small[len(ib)], ib, _TIME_NAME, small[len(tb)], tb,
                _SUBJECT_NAME, small[len(sb)], sb, _SEQUENCE_NAME, small[len(nb)], nb,
            ))  # fmt: skip
        except IndexError:  # a value of 128 bytes or more
            return b"".join((
                _TEN_HEADERS, entry[1], _ID_NAME, varint(len(ib)), ib, _TIME_NAME, varint(len(tb)), tb,
                _SUBJECT_NAME, varint(len(sb)), sb, _SEQUENCE_NAME, varint(len(nb)), nb,
            ))  # fmt: skip

    def _remember(self, head: tuple[Attribute, ...]) -> tuple[tuple[Attribute, ...], bytes]:
        if len(self._prefixes) >= _PREFIX_CACHE_ENTRIES:
            self._prefixes.clear()
        pairs = [(name.encode(), value) for name, value in binary_headers(head)]
        entry = self._prefixes[id(head[-1])] = (head, encode_headers(pairs))
        return entry


def _length_prefixed(data: bytes) -> bytes:
    return varint(len(data)) + data


_ID_NAME, _TIME_NAME, _SUBJECT_NAME, _SEQUENCE_NAME = (
    _length_prefixed(_header_name(name).encode()) for name in ("id", "time", "subject", "sequence")
)
