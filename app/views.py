"""HTTP endpoints. They reach the database only through the extension's session
(``get_db()``); ``/readyz`` is the library's (``IdleProof.readiness_blueprint``)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from app.models import Note
from app.payload import BadNote, parse_note
from idleproof import metrics
from idleproof.flask import error_body, get_db

bp = Blueprint("notes", __name__)

RECENT_NOTES = 20


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is alive; says nothing about the database on purpose."""
    return jsonify(status="ok")


@bp.get("/metrics")
def prometheus_metrics() -> ResponseReturnValue:
    """Pool counters summed over every Gunicorn worker; no database round trip."""
    body, content_type = metrics.render()
    return body, 200, {"Content-Type": content_type}


@bp.get("/")
def index() -> ResponseReturnValue:
    session = get_db().session
    notes = session.scalars(select(Note).order_by(Note.id.desc()).limit(RECENT_NOTES)).all()
    return jsonify(notes=[note.as_dict() for note in notes])


@bp.post("/notes")
def create_note() -> ResponseReturnValue:
    try:
        note_text = parse_note(request.mimetype, request.mimetype_params, request.get_data())
    except BadNote as exc:
        return error_body("bad_request", str(exc)), 400
    session = get_db().session
    note = Note(text=note_text)
    session.add(note)
    session.commit()
    return jsonify(note.as_dict()), 201
