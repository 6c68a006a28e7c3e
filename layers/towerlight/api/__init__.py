"""HTTP APIs (FastAPI apps wrapped by Mangum in the handlers)."""
