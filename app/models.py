"""The reference app's one table. The schema is owned by Alembic (``migrations/``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NOTE_MAX_LENGTH = 500


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(String(NOTE_MAX_LENGTH), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=func.current_timestamp()
    )

    def as_dict(self) -> dict[str, object]:
        created = self.created_at.isoformat() if self.created_at else None
        return {"id": self.id, "text": self.text, "created_at": created}
