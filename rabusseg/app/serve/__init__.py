"""``rabusseg serve``: a local web workbench (FastAPI, server-side templates, plain JavaScript).

Import :func:`rabusseg.app.serve.app.create_app` to embed it; the command is ``rabusseg serve``.
"""
