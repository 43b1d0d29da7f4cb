"""The store's Lua scripts (package data)."""
