"""The HTTP service of ``deploy/py_serving``: Paddle Serving's pipeline protocol on FastAPI
and uvicorn over Paddle Inference, with dynamic batching.

Submodules are imported explicitly: ``protocol`` is paddle-free for clients; ``app``
(the service) imports paddle.
"""
