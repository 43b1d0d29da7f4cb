"""Lua scripts of the job path (data files; see jobs/scripts.py)."""
