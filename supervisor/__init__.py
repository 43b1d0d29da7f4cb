"""The master process: `python -m supervisor`."""
