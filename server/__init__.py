"""The HTTP side: a Starlette app served by uvicorn workers under the supervisor."""
