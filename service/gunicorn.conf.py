"""Gunicorn settings for a streaming service; read by the contract's command.

Threaded workers: a sync worker is killed mid-stream when a feed outlasts its timeout.
The settings are checked here, in the master, so a missing variable stops start-up with
one clear line instead of a worker traceback.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from service.framework.settings import load_settings_or_exit  # noqa: E402

_settings = load_settings_or_exit()

bind = f"0.0.0.0:{_settings.port}"
worker_class = "gthread"
workers = _settings.workers
threads = _settings.threads
# A feed of a large collection streams for many minutes; gthread workers heartbeat
# from their main loop, so this is the silence allowed, not a cap on a response.
timeout = 120
graceful_timeout = 20  # below docker-compose's stop_grace_period (30s)
keepalive = 75
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
