"""Markdown the report's sections share."""


def row(cells: list[str]) -> str:
    """One table row."""
    return "| " + " | ".join(cells) + " |"
