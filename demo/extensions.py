"""The extension objects, made once and bound to the app in ``create_app``."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from flask_push import Push

db = SQLAlchemy()
push = Push(db=db)
