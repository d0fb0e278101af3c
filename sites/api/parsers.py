"""Request body parsers that refuse what the stock ones quietly accept or crash on."""

from __future__ import annotations

import codecs
import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, MultiPartParser


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # The stock parser keeps the last of two equal keys: a proxy or a log
    # reading the first would see another request than the one we act on.
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(JSONParser):
    """JSON that is unambiguous: no duplicate keys, no NaN/Infinity, and deep nesting is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            # Only text codecs: a bytes-to-bytes codec such as bz2_codec would
            # decompress a small body past the size limit.
            "".encode(encoding)
        except (LookupError, UnicodeError):
            raise ParseError(f"Unsupported charset {encoding[:64]!r} in the Content-Type header.") from None
        try:
            text = codecs.getreader(encoding)(stream).read()
            return json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
        except RecursionError:
            # The C decoder recurses once per [ or {; a 64 KB body of [[[[...
            # exhausts the interpreter's stack.
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None


class BoundedMultiPartParser(MultiPartParser):
    """Multipart bodies under the same size limit as the others.

    Django checks DATA_UPLOAD_MAX_MEMORY_SIZE against JSON and urlencoded
    bodies, but counts only the plain fields of a multipart body: file parts
    of any size would be read (and spooled to disk) before the view refused
    them. Refuse by the declared length up front instead.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request is not None and limit is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        return super().parse(stream, media_type, parser_context)
