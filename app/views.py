"""HTTP endpoints. They only ever reach the database through ``get_db(current_app)``."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select, text

from app import metrics
from app.db import get_db
from app.errors import error_body
from app.models import Note
from app.payload import BadNote, parse_note

bp = Blueprint("notes", __name__)

RECENT_NOTES = 20


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is alive; says nothing about the database on purpose."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """One round trip, bounded by DB_PING_TIMEOUT; the 503 comes from the error handler."""
    with get_db(current_app).quick_connection() as conn:
        conn.execute(text("SELECT 1"))
    return jsonify(status="ready")


@bp.get("/metrics")
def prometheus_metrics() -> ResponseReturnValue:
    """Pool counters summed over every Gunicorn worker; no database round trip."""
    body, content_type = metrics.render()
    return body, 200, {"Content-Type": content_type}


@bp.get("/")
def index() -> ResponseReturnValue:
    session = get_db(current_app).session
    notes = session.scalars(select(Note).order_by(Note.id.desc()).limit(RECENT_NOTES)).all()
    return jsonify(notes=[note.as_dict() for note in notes])


@bp.post("/notes")
def create_note() -> ResponseReturnValue:
    try:
        note_text = parse_note(request.mimetype, request.mimetype_params, request.get_data())
    except BadNote as exc:
        return error_body("bad_request", str(exc)), 400
    session = get_db(current_app).session
    note = Note(text=note_text)
    session.add(note)
    session.commit()
    return jsonify(note.as_dict()), 201
