"""Operator tooling for the idle-proof Flask + SQLAlchemy + MariaDB kit."""
