"""Reading a request's body into raw inputs: JSON, base64 images, multipart uploads — and what is wrong with it.

Two statuses, one rule: **400** when the body cannot be read at all (malformed JSON, an
empty body, a broken multipart stream, a Content-Length that is not a number); **422**
when it was read but does not say what the route needs (a missing or unknown field, a
wrong type, an empty or over-long list, a string that is not base64, an image that does
not decode, an unknown item). 415 when the body is neither JSON nor (for images) multipart.

Images come as bytes — uploaded, or base64 in JSON — and are decoded from memory; a
string is never taken for a file name, so no request can make the server read its disk.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from deepstrata.errors import DataError
from deepstrata.serve.settings import MAX_ITEMS, MAX_K, MAX_TEXT_CHARS


class MalformedRequest(DataError):
    """A body that cannot be read at all: answered 400 (other ``DeepstrataError`` s of a request: 422)."""

    status = 400


class UnsupportedMedia(DataError):
    status = 415


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
Id = Union[StrictStr, StrictInt]


class TextsBody(_Body):
    """Texts to label or embed, answered in this order."""

    texts: list[Text] = Field(min_length=1, max_length=MAX_ITEMS)


class ImagesBody(_Body):
    """Images as base64 strings (a ``data:image/...;base64,`` prefix is allowed), answered in this order."""

    images: list[StrictStr] = Field(min_length=1, max_length=MAX_ITEMS)


class RecommendBody(_Body):
    user: Id
    k: StrictInt = Field(10, ge=1, le=MAX_K)


class SimilarBody(_Body):
    item: Id
    k: StrictInt = Field(10, ge=1, le=MAX_K)


class EmbedIdsBody(_Body):
    """A recommendation run's rows to embed: user ids or item ids of its log (one of the two)."""

    users: list[Id] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    items: list[Id] | None = Field(None, min_length=1, max_length=MAX_ITEMS)


def validation_message(err: ValidationError) -> str:
    """What pydantic found wrong, as ``field.index: what was wrong``, the first three problems on one line."""
    problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()]
    more = len(problems) - 3
    return "; ".join(problems[:3]) + (f"; and {more} more" if more > 0 else "")


def parse(model: type[_Body], data):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise DataError(validation_message(err)) from None


async def read_json(request) -> dict:
    """The body as a JSON object (400 if it is not JSON; 422 if it is JSON but not an object)."""
    body = await request.body()
    if not body.strip():
        raise MalformedRequest("empty body: expected a JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise MalformedRequest("malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as err:
        raise MalformedRequest(f"malformed JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except RecursionError:
        raise MalformedRequest("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object, got a JSON {type(data).__name__}")
    return data


def _media(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_inputs(request, kind: str) -> tuple[list, list[str]]:
    """``(raw inputs, names)`` of a /predict or /embed request: ``kind`` is ``images`` or ``texts``.

    Images: multipart uploads in the field ``file`` (one or more), or JSON ``{"images": [base64, ...]}``;
    each named by its file name, or ``images[i]``. Texts: JSON ``{"texts": [...]}``; each named ``texts[i]``.
    """
    media = _media(request)
    if kind == "images" and media == "multipart/form-data":
        return await _uploads(request)
    if media not in ("application/json", ""):
        accepted = "application/json" + (" or multipart/form-data" if kind == "images" else "")
        raise UnsupportedMedia(f"Content-Type {media!r}: expected {accepted}")
    data = await read_json(request)
    if kind == "texts":
        texts = parse(TextsBody, data).texts
        return texts, [f"texts[{i}]" for i in range(len(texts))]
    images = parse(ImagesBody, data).images
    names = [f"images[{i}]" for i in range(len(images))]
    return [_base64(s, name) for s, name in zip(images, names)], names


def _base64(text: str, name: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{name}: not valid base64") from None
    if not raw:
        raise DataError(f"{name}: empty image")
    return raw


async def _uploads(request) -> tuple[list, list[str]]:
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=MAX_ITEMS, max_fields=MAX_ITEMS)
    except (MultiPartException, HTTPException) as err:
        raise MalformedRequest(f"malformed multipart body: {getattr(err, 'detail', None) or err}") from None
    try:
        unknown = sorted(set(form.keys()) - {"file"})
        if unknown:
            raise DataError(f"{unknown[0]}: unknown field; upload images in the field 'file'")
        files = form.getlist("file")
        if not files:
            raise DataError("file: no images uploaded; send one or more in the multipart field 'file'")
        raws, names = [], []
        for i, upload in enumerate(files):
            name = f"file[{i}]"
            if isinstance(upload, str):
                raise DataError(f"{name}: expected a file upload, got a text field")
            raw = await upload.read()
            if not raw:
                raise DataError(f"{upload.filename or name}: empty upload")
            raws.append(raw)
            names.append(upload.filename or name)
        return raws, names
    finally:
        await form.close()


def openapi_body(kind: str) -> dict:
    """The ``requestBody`` of /predict and /embed for the OpenAPI schema (the routes read it themselves)."""
    content = {"application/json": {"schema": (TextsBody if kind == "texts" else ImagesBody).model_json_schema()}}
    if kind == "images":
        content["multipart/form-data"] = {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                    "minItems": 1, "maxItems": MAX_ITEMS}}}}
    return {"requestBody": {"required": True, "content": content}}


def openapi_json(model: type[_Body]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
