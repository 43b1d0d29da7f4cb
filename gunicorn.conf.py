# gunicorn's own knobs. The service's settings (bind, workers, graceful timeout, logging)
# come from the environment; see `python -m supervisor --help`. Values here win over them.

# kill an HTTP worker whose event loop has not reported for this long
timeout = 30
# keep idle client connections open this long (seconds)
keepalive = 5
# listen backlog
backlog = 2048
