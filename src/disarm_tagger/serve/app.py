"""The FastAPI app: the review page and a JSON API, each endpoint a thin wrapper over one library call.

    GET  /healthz                       {"status": "ok", "model": ...}
    POST /api/suggest                   text or a file upload -> the `suggest --format json` object
    GET  /api/techniques?q=             techniques whose id or name matches (the "add technique" picker)
    POST /api/annotations               -> the record `disarm-tagger annotate` writes (annotate.annotate)
    POST /api/export/{stix|navigator|misp}   a reviewed set -> formats.export_article's document
    GET  /                              the review page (static/index.html + app.js + app.css)
    GET  /docs                          OpenAPI docs (Swagger UI from the swagger-ui-bundle package)

Errors are ``{"error": "..."}`` with a 4xx status; an unexpected failure is a 500 without a traceback.
No endpoint takes a filesystem path from the request: uploaded file names are labels only.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path, PurePath

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__, annotate, corpus, formats, render, text
from ..schema import Article, Evidence, Suggestion
from .batcher import BusyError, MicroBatcher
from .security import BodyLimit, Guard, SecurityHeaders

STATIC = Path(__file__).with_name("static")
FORM_ROOM = 64 * 1024  # a body may exceed the text limit by this much: JSON keys, multipart boundaries
log = logging.getLogger("disarm_tagger.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


# ------------------------------------------------------------------------------------------ request bodies
class SuggestRequest(BaseModel):
    text: str = Field(description="The article: plain text, markdown (front matter optional) or HTML.")
    top_k: int = Field(10, ge=1, le=400, description="How many suggestions.")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="Drop suggestions scoring below this.")
    source: str = Field("", description="A label for the input (file name or URL), echoed as 'input'.")


class AnnotationRequest(BaseModel):
    text: str = Field(description="The article, as given to /api/suggest.")
    labels: list[str] | str = Field(description="Confirmed technique ids (a list, or comma separated).")
    annotator: str = Field("", max_length=200)
    note: str = Field("", max_length=10_000)
    source: str = Field("", description="File name or URL the text came from (a label, never opened).")


class ReviewedEvidence(BaseModel):
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class ReviewedTechnique(BaseModel):
    technique_id: str
    score: float = Field(1.0, ge=0.0, le=1.0, description="The model's score; 1.0 for one the analyst added.")
    evidence: list[ReviewedEvidence] = []


class ExportRequest(BaseModel):
    text: str = Field("", description="The article text the evidence offsets refer to.")
    title: str = ""
    source: str = Field("", description="File name or URL; seeds the export ids (default: the text's sha256).")
    techniques: list[ReviewedTechnique] = Field(description="The accepted and added techniques, in order.")


class ExportFormat(str, Enum):
    stix = "stix"
    navigator = "navigator"
    misp = "misp"


def _body_doc(model: type[BaseModel], file_fields: dict) -> dict:
    """OpenAPI for an endpoint taking JSON or a multipart form with a ``file`` (parsed by hand below)."""
    form = {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}, **file_fields}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()},
                                                          "multipart/form-data": {"schema": form}}}}  # fmt: skip


def _label(name: str) -> str:
    """An uploaded file's name reduced to a printable base name: a label, never a path."""
    return "".join(c for c in PurePath(name.replace("\\", "/")).name if c.isprintable())[:200]


async def read_input(request: Request, max_bytes: int) -> dict:
    """The request's fields as a dict, from JSON or from a multipart form whose ``file`` part (decoded as
    the CLI decodes files) becomes ``text`` and whose file name becomes ``source``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = await request.json()
        except ValueError as exc:
            raise ApiError(400, f"body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        return data
    if kind != "multipart/form-data":
        raise ApiError(415, "send application/json or multipart/form-data")
    async with request.form(max_files=1, max_fields=20) as form:
        fields: dict = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        if isinstance(upload, UploadFile):
            data = await upload.read(max_bytes + 1)
            source = _label(upload.filename or "upload")
            if len(data) > max_bytes:
                raise ApiError(413, f"{source}: over the {max_bytes:,}-byte limit")
            # on a thread: reading a long PDF's text layer takes seconds, and other requests go on meanwhile
            fields["text"] = await run_in_threadpool(text.decode_bytes, data, source=source,
                                                     max_bytes=max_bytes)  # fmt: skip
            fields.setdefault("source", source)
        if "labels" in fields:  # "T1,T2" or the field repeated
            fields["labels"] = ",".join(v for v in form.getlist("labels") if isinstance(v, str))
    return fields


def _validated(model: type[BaseModel], data: dict, max_bytes: int):
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, _validation_message(exc.errors())) from None
    if len(_utf8(request.text)) > max_bytes:
        raise ApiError(413, f"text over the {max_bytes:,}-byte limit")
    if not request.text.strip():
        raise ApiError(400, "text is empty")
    return request


def _utf8(*strings: str) -> bytes:
    """The strings as UTF-8; JSON's "\\ud800" escapes can make strings that are not (400, not a crash later)."""
    try:
        return "".join(strings).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"text is not valid Unicode (an unpaired surrogate at character {exc.start})") from None


def _validation_message(errors) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


# ------------------------------------------------------------------------------------------ the app
def create_app(tagger, *, model: str, data: Path, token: str | None = None,
               max_bytes: int = text.DEFAULT_MAX_BYTES, allowed_hosts: list[str] | None = None,
               max_batch: int = 32) -> FastAPI:  # fmt: skip
    """The app over a loaded tagger. ``model`` names the model folder (echoed as in the CLI), ``data`` is the
    training_data folder annotations go to; ``token`` makes every API call need ``Authorization: Bearer``;
    ``allowed_hosts`` limits the Host header (a loopback bind passes its names, against DNS rebinding)."""
    batcher = MicroBatcher(tagger, max_batch=max_batch)
    techniques_by_id = {t.id: t for t in tagger.techniques_}
    data = Path(data)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        await batcher.suggest("Warm-up.")  # loads the encoder now, not on the first request
        yield
        batcher.close()

    app = FastAPI(title="disarm-tagger", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Suggest DISARM Red Framework techniques for an article, review them, save the "
                              "review as training data and export it (STIX 2.1, DISARM Navigator, MISP).")  # fmt: skip
    app.openapi_version = "3.0.3"  # what the packaged Swagger UI (4.x) renders; the schemas are 3.0-compatible
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_body=max_bytes + FORM_ROOM)
    app.add_middleware(Guard, token=token)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(SecurityHeaders)
    _errors(app)
    if token:
        _document_bearer_auth(app)

    @app.get("/healthz", tags=["api"])
    def healthz() -> dict:
        return {"status": "ok", "model": model}

    @app.post("/api/suggest", tags=["api"], openapi_extra=_body_doc(SuggestRequest, {
        "top_k": {"type": "integer"}, "min_score": {"type": "number"}}))  # fmt: skip
    async def suggest(request: Request, include_text: bool = Query(False, description="Also return the "
                      "extracted article 'title' and 'text' (evidence offsets refer to it) and the model's "
                      "'threshold'.")) -> dict:  # fmt: skip
        """Exactly `disarm-tagger suggest --format json`'s object for the text or uploaded file."""
        body = _validated(SuggestRequest, await read_input(request, max_bytes), max_bytes)
        try:
            article = await batcher.suggest(body.text, top_k=body.top_k, min_score=body.min_score)
        except BusyError as exc:
            raise ApiError(503, str(exc)) from None
        doc = render.suggestion_document(body.source, model, article.suggestions, article.warnings)
        if include_text:
            doc |= {"title": article.title, "text": article.text, "threshold": tagger.threshold_}
        return doc

    @app.get("/api/techniques", tags=["api"])
    def techniques(q: str = Query("", max_length=200, description="Part of an id or a name."),
                   limit: int = Query(20, ge=1, le=500)) -> dict:  # fmt: skip
        """Techniques whose id starts with q or whose name contains it (all words), best matches first."""
        words = q.lower().split()
        hits = []
        for t in tagger.techniques_:
            name = t.name.lower()
            if not words or t.id.lower().startswith(q.strip().lower()):
                hits.append((0 if words and t.id.lower() == q.strip().lower() else 1, t))
            elif all(w in name or w in t.id.lower() for w in words):
                hits.append((2, t))
        hits.sort(key=lambda h: (h[0], h[1].id))
        return {"total": len(hits), "techniques": [
            {"id": t.id, "name": t.name, "tactic_id": t.tactic_id, "tactic": t.tactic} for _, t in hits[:limit]]}

    @app.post("/api/annotations", tags=["api"], status_code=201, openapi_extra=_body_doc(AnnotationRequest, {
        "labels": {"type": "string"}, "annotator": {"type": "string"}, "note": {"type": "string"}}))  # fmt: skip
    async def annotations(request: Request):
        """Record confirmed labels (201; 200 when they replace the text's earlier labels): the same record
        `disarm-tagger annotate` writes to the training data's annotations.jsonl."""
        body = _validated(AnnotationRequest, await read_input(request, max_bytes), max_bytes)
        try:
            result = await run_in_threadpool(annotate.annotate, body.text, body.labels, data=data,
                                             source=body.source, note=body.note, annotator=body.annotator)
        except annotate.AnnotationBusyError as exc:
            raise ApiError(503, str(exc)) from None
        except annotate.AnnotationError as exc:
            raise ApiError(400, str(exc)) from None
        except corpus.CorpusError as exc:
            raise ApiError(503, f"annotations are not available: {exc}") from None
        return JSONResponse(result.record, status_code=201 if result.previous_labels is None else 200)

    @app.post("/api/export/{fmt}", tags=["api"])
    def export(fmt: ExportFormat, body: ExportRequest) -> dict:
        """The reviewed set as `suggest --format stix|navigator|misp` prints it."""
        if not body.text.strip() and not body.title.strip():
            raise ApiError(400, "give the article text or a title")
        _utf8(body.text, body.title, body.source, *(e.text for t in body.techniques for e in t.evidence))
        unknown = [t.technique_id for t in body.techniques if t.technique_id not in techniques_by_id]
        if unknown:
            raise ApiError(400, f"unknown technique id(s): {', '.join(unknown)}")
        suggestions = tuple(
            Suggestion(rank, t.technique_id, techniques_by_id[t.technique_id].name,
                       techniques_by_id[t.technique_id].tactic_id, techniques_by_id[t.technique_id].tactic,
                       t.score, tuple(Evidence(e.text, e.start, e.end) for e in t.evidence))
            for rank, t in enumerate(body.techniques, 1))  # fmt: skip
        title = body.title or " ".join(body.text.split())[:80]
        article = Article(title, body.text, (), suggestions)
        return formats.export_article(fmt.value, article, techniques_by_id, source=body.source, model=model)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _mount_swagger(app)
    return app


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI schema, so /docs offers "Authorize"."""
    build = app.openapi

    def openapi() -> dict:
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi


def _mount_swagger(app: FastAPI) -> None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # pragma: no cover - a declared dependency
        log.warning("swagger-ui-bundle is not installed: /docs will not render")
        return
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger")


def _errors(app: FastAPI) -> None:
    """Every error as {"error": "..."}; never a traceback to the client."""

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(text.InputError)
    async def input_error(_request, exc: text.InputError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def crash(request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error (logged by the server)"}, status_code=500)
