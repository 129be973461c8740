"""Reading what the gateway needs from a container request while it streams through, unchanged.

A prediction body can be hundreds of megabytes, so it is never held: each chunk is scanned on
its way upstream. From JSON, the small top-level members (``task_config``, ``context``,
``model_version``) are captured and the datasets' rows and columns counted; from multipart,
the ``request`` field is captured, the files' bytes counted and each Parquet file's rows and
columns read from its footer (the last bytes of the part). ``on_request`` fires as soon as the
request JSON is known, so ownership of a ``model_id`` is checked before the body ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tabpfn_gateway.errors import InvalidRequest
from tabpfn_gateway.protocol.serialization import parquet_shape

__all__ = ["BodyScan", "JsonBodyScan", "MultipartBodyScan", "scanner_for"]

#: Top-level members captured from a JSON body (everything else streams past uncounted).
CAPTURED = frozenset({"task_config", "context", "model_version"})
#: JSON member -> dataset name (the multipart field names).
DATASETS = {"X_train": "x_train", "y_train": "y_train", "X_test": "x_test"}
_MAX_CAPTURE = 1 << 20  # bytes of one captured member (a task config is a few hundred)
_MAX_KEY = 256
_STRUCTURAL = re.compile(rb'[\[\]{}",:\\]')
_SLOW = re.compile(rb'["{}]')
_END_AFTER_ROW = re.compile(rb"\][\s]*\]")
_END_BETWEEN_ROWS = re.compile(rb"[\s,]*\]")
_WS = b" \t\r\n"
_PARQUET_TAIL = 1 << 20  # a Parquet footer for thousands of columns fits in this


@dataclass
class DatasetShape:
    """Rows and columns of one dataset, as far as the body has been read."""

    rows: int = 0
    columns: int | None = None
    nbytes: int = 0


@dataclass
class BodyScan:
    """What was learnt from a body (filled in while it streams)."""

    request: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, DatasetShape] = field(default_factory=dict)
    on_request: Callable[[dict[str, Any]], None] | None = None
    _fired: bool = False

    def feed(self, chunk: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """The body ended: fire ``on_request`` if it has not fired yet."""
        self._fire()

    def _fire(self) -> None:
        if not self._fired and self.on_request is not None:
            self._fired = True
            self.on_request(self.request)

    @property
    def encoding(self) -> str:
        return "json"


class JsonBodyScan(BodyScan):
    """Incremental scan of a JSON object (see the module docstring).

    Only structure is tracked (depth, strings, the top-level keys); numbers are never parsed.
    Inside a dataset, stretches without quotes or braces (all-numeric rows) are counted with
    ``bytes.count`` instead of byte by byte, so scanning costs a fraction of reading.
    """

    def __init__(
        self,
        on_request: Callable[[dict[str, Any]], None] | None = None,
        *,
        captured: frozenset[str] = CAPTURED,
    ) -> None:
        super().__init__(on_request=on_request)
        self._captured = captured
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._expect_key = True
        self._key = bytearray()
        self._current: str | None = None  # the top-level member whose value is being read
        self._capture: bytearray | None = None
        self._dataset: DatasetShape | None = None
        self._two_d: bool | None = None  # a dataset of rows ([[...]]) or of scalars
        self._first_row_commas: int | None = None
        self._seen_value = False  # a 1-D dataset has at least one element
        self._commas = 0
        self._started = False
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._capture is not None and len(self._capture) > _MAX_CAPTURE:
            raise InvalidRequest(f"The request member {self._current!r} is too large.")
        pos = 0
        end = len(chunk)
        exact_until = 0  # a dataset ends before here: scan exactly up to it
        while pos < end:
            if (
                pos >= exact_until
                and self._dataset is not None
                and not self._in_string
                and self._depth >= 2
                and self._first_row_commas is None
                and self._two_d is not None
            ):
                moved = self._fast(chunk, pos)
                if moved == pos:
                    found = _SLOW.search(chunk, pos)
                    exact_until = found.start() if found else end
                pos = moved
                if pos >= end:
                    break
            pos = self._step(chunk, pos)

    def _fast(self, chunk: bytes, pos: int) -> int:
        """Count a stretch of a dataset without quotes or braces in bulk; return where the
        byte-by-byte scan must resume. (``find``/``count`` with bounds: memchr speed, no
        copies; this is what keeps the gateway's added time small on large bodies.)"""
        stop = len(chunk)
        for special in (b'"', b"{", b"}"):
            found = chunk.find(special, pos, stop)
            if found != -1:
                stop = found
        if stop <= pos:
            return pos
        opens = chunk.count(b"[", pos, stop)
        closes = chunk.count(b"]", pos, stop)
        if self._depth + opens - closes < 2:
            # The dataset ends inside: count in bulk up to its closing bracket, which the
            # exact scan then reads.
            cut = self._closing_bracket(chunk[pos:stop])
            if cut <= 0:
                return pos
            stop = pos + cut
            opens = chunk.count(b"[", pos, stop)
            closes = chunk.count(b"]", pos, stop)
        assert self._dataset is not None
        if self._two_d:
            self._dataset.rows += opens
        else:
            self._commas += chunk.count(b",", pos, stop)
            if chunk[pos:stop].strip(_WS + b","):
                self._seen_value = True
        self._depth += opens - closes
        return stop

    def _closing_bracket(self, segment: bytes) -> int:
        """Where the bracket that closes the current dataset is in ``segment`` (no quotes or
        braces in it), or -1 when that is not plain to see."""
        if not self._two_d:
            return segment.find(b"]")
        if self._depth == 2:
            between = _END_BETWEEN_ROWS.match(segment)
            if between is not None:
                return between.end() - 1
        found = _END_AFTER_ROW.search(segment)
        return -1 if found is None else found.end() - 1

    def _step(self, chunk: bytes, pos: int) -> int:
        """Scan from ``pos`` to just past the next structural byte (exactly)."""
        if self._in_string:
            return self._string(chunk, pos)
        match = _STRUCTURAL.search(chunk, pos)
        stop = match.start() if match else len(chunk)
        if stop > pos:
            self._plain(chunk[pos:stop])
        if match is None:
            return len(chunk)
        byte = chunk[stop : stop + 1]
        capturing = self._capture is not None
        # A captured value keeps its own brackets, never the comma or brace that ends it.
        if capturing and not (self._depth == 1 and byte in (b",", b"}")):
            self._capture += byte  # type: ignore[operator]
        self._structural(byte)
        if not capturing and self._capture is not None:
            self._capture += byte  # the value began with this byte
        return stop + 1

    def _plain(self, data: bytes) -> None:
        """Bytes between structural characters: numbers, literals, whitespace."""
        if self._capture is not None:
            self._capture += data
            return
        if not data.strip(_WS):
            return
        if not self._started or self._ended:
            raise InvalidRequest("The JSON body must be one object.")
        if self._depth == 1 and not self._expect_key and self._current is not None:
            # A scalar top-level value begins (e.g. "model_version": 3).
            self._begin_value()
            if self._capture is not None:
                self._capture += data
        elif self._dataset is not None and self._depth == 2 and self._two_d is None:
            self._two_d = False
            self._seen_value = True
        elif self._dataset is not None and self._depth == 2 and not self._two_d:
            self._seen_value = True

    def _string(self, chunk: bytes, pos: int) -> int:
        # Inside a string only a quote or a backslash matters.
        i = pos
        end = len(chunk)
        while i < end:
            quote = chunk.find(b'"', i)
            slash = chunk.find(b"\\", i)
            if self._escape:
                self._escape = False
                self._string_bytes(chunk[i : i + 1])
                i += 1
                continue
            nxt = min(x for x in (quote, slash, end) if x >= 0)
            self._string_bytes(chunk[i:nxt])
            if nxt == end:
                return end
            if nxt == slash:
                self._escape = True
                self._string_bytes(b"\\")
                i = nxt + 1
                continue
            self._string_bytes(b'"')
            self._in_string = False
            self._end_string()
            return nxt + 1
        return end

    def _string_bytes(self, data: bytes) -> None:
        if self._depth == 1 and self._expect_key:
            if len(self._key) + len(data) > _MAX_KEY:
                raise InvalidRequest("A JSON member name is too long.")
            self._key += data
        elif self._capture is not None:
            self._capture += data

    def _end_string(self) -> None:
        if self._depth == 1 and self._expect_key:
            raw = bytes(self._key[:-1])  # without the closing quote
            try:
                self._current = json.loads(b'"' + raw + b'"')
            except ValueError:
                raise InvalidRequest("A JSON member name is not valid.") from None
            self._key.clear()

    def _structural(self, byte: bytes) -> None:
        char = byte[0]
        if char == 0x22:  # "
            if not self._started:
                raise InvalidRequest("The JSON body must be one object.")
            if self._depth == 1 and not self._expect_key:
                self._begin_value()
            elif self._depth == 2 and self._dataset is not None and self._two_d is None:
                self._two_d = False
                self._seen_value = True
            elif self._depth == 2 and self._dataset is not None and not self._two_d:
                self._seen_value = True
            self._in_string = True
            if self._depth == 1 and self._expect_key:
                self._key.clear()
            return
        if char in (0x7B, 0x5B):  # { [
            if not self._started:
                if char != 0x7B:
                    raise InvalidRequest("The JSON body must be an object.")
                self._started = True
                self._depth = 1
                return
            if self._ended:
                raise InvalidRequest("The JSON body must be one object.")
            if self._depth == 1:
                if self._expect_key:
                    raise InvalidRequest("The JSON body is not valid JSON.")
                self._begin_value(array=char == 0x5B)
            elif self._depth == 2 and self._dataset is not None:
                if self._two_d is None:
                    self._two_d = char == 0x5B
                if self._two_d and char == 0x5B:
                    self._dataset.rows += 1
                    if self._dataset.columns is None:
                        self._first_row_commas = 0
                elif not self._two_d:
                    self._seen_value = True
            self._depth += 1
            return
        if char in (0x7D, 0x5D):  # } ]
            if not self._started or self._depth <= 0:
                raise InvalidRequest("The JSON body is not valid JSON.")
            self._depth -= 1
            if self._depth == 2 and self._first_row_commas is not None and self._dataset:
                self._dataset.columns = self._first_row_commas + 1
                self._first_row_commas = None
            if self._depth == 1:
                self._end_value()
            elif self._depth == 0:
                self._end_value()
                self._ended = True
            return
        if char == 0x2C:  # ,
            if self._depth == 1:
                self._end_value()
                self._expect_key = True
            elif self._depth == 2 and self._dataset is not None and not self._two_d:
                self._commas += 1
            elif self._depth == 3 and self._first_row_commas is not None:
                self._first_row_commas += 1
            return
        if char == 0x3A:  # :
            if self._depth == 1:
                if not self._expect_key or self._current is None:
                    raise InvalidRequest("The JSON body is not valid JSON.")
                self._expect_key = False
            return

    def _begin_value(self, *, array: bool = False) -> None:
        key = self._current
        if key is None or self._capture is not None or self._dataset is not None:
            return
        if key in self._captured:
            self._capture = bytearray()
        elif key in DATASETS and array:
            shape = DatasetShape()
            self.datasets[DATASETS[key]] = shape
            self._dataset = shape
            self._two_d = None
            self._commas = 0
            self._seen_value = False

    def _end_value(self) -> None:
        key = self._current
        if self._capture is not None and key is not None:
            raw = bytes(self._capture).strip(_WS)
            self._capture = None
            try:
                self.request[key] = json.loads(raw)
            except ValueError:
                raise InvalidRequest(f"The request member {key!r} is not valid JSON.") from None
        if self._dataset is not None:
            if self._two_d is False and self._seen_value:
                self._dataset.rows = self._commas + 1
                self._dataset.columns = 1
            self._dataset = None
            self._two_d = None
        self._current = None

    def close(self) -> None:
        if not self._ended:
            raise InvalidRequest("The JSON body ended before the object did.")
        super().close()


class MultipartBodyScan(BodyScan):
    """Incremental scan of a multipart/form-data body with ``python-multipart``."""

    def __init__(
        self, boundary: bytes, on_request: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        super().__init__(on_request=on_request)
        try:
            from python_multipart import MultipartParser
        except ImportError:
            raise InvalidRequest(
                "Multipart bodies need python-multipart: pip install 'tabpfn-gateway[server]'"
            ) from None
        self._name: str | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._request = bytearray()
        self._tail = bytearray()
        self._part: DatasetShape | None = None
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    @property
    def encoding(self) -> str:
        return "parquet"

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except InvalidRequest:
            raise
        except Exception as exc:  # python-multipart's MultipartParseError and friends
            raise InvalidRequest(
                f"The multipart body is malformed ({type(exc).__name__})."
            ) from None

    def close(self) -> None:
        try:
            self._parser.finalize()
        except Exception:
            raise InvalidRequest("The multipart body is malformed.") from None
        if "task_config" not in self.request:
            raise InvalidRequest(
                "The multipart body needs a 'request' field with the JSON request."
            )
        super().close()

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._part = None

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        self._name = name.decode("latin-1") if name else None
        if self._name is not None and self._name in DATASETS.values():
            self._part = self.datasets.setdefault(self._name, DatasetShape())
            self._tail.clear()
        elif self._name == "request":
            self._request.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None:
            self._part.nbytes += end - start
            self._tail += data[start:end]
            if len(self._tail) > 2 * _PARQUET_TAIL:
                del self._tail[: len(self._tail) - _PARQUET_TAIL]
        elif self._name == "request":
            if len(self._request) + end - start > _MAX_CAPTURE:
                raise InvalidRequest("The multipart 'request' field is too large.")
            self._request += data[start:end]

    def _part_end(self) -> None:
        if self._name == "request":
            try:
                parsed = json.loads(bytes(self._request))
            except ValueError:
                raise InvalidRequest("The multipart 'request' field is not JSON.") from None
            if not isinstance(parsed, dict):
                raise InvalidRequest("The multipart 'request' field must be a JSON object.")
            self.request = parsed
            self._fire()
        elif self._part is not None:
            rows, columns = parquet_shape(bytes(self._tail))
            self._part.rows, self._part.columns = rows, columns
            self._tail.clear()
            self._part = None


def scanner_for(
    content_type: str | None, on_request: Callable[[dict[str, Any]], None] | None = None
) -> BodyScan:
    """The scanner for a body of ``content_type`` (JSON or multipart/form-data)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(content_type or "")
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidRequest("A multipart body needs a boundary in its Content-Type.")
        return MultipartBodyScan(boundary, on_request)
    if media in ("application/json", "") or media.endswith("+json"):
        return JsonBodyScan(on_request)
    raise InvalidRequest(
        f"POST /predict takes application/json or multipart/form-data, not {media!r}."
    )
