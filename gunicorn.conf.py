# Gunicorn configuration for the reference app:
#
#   gunicorn -c gunicorn.conf.py app.wsgi:app
#
# It is the library's own config module, unchanged: every setting, its range and its
# GUNICORN_* variable are explained in src/idleproof/gunicorn_conf.py. An application of
# yours uses it the same way (--config python:idleproof.gunicorn_conf), or imports it into
# its own config file as this one does and overrides what it must below the import.
from idleproof.gunicorn_conf import *  # noqa: F403
