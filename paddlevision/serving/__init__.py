"""The HTTP service of deploy/py_serving. ``protocol`` is paddle-free (the client uses it);
``app`` imports paddle, so submodules are imported explicitly."""
