"""The HTTP query service behind ``retriever serve`` (FastAPI + uvicorn; the ``serve`` extra).

- :mod:`retriever.apps.service.schemas`: request/response models (the OpenAPI schema) and the limits.
- :mod:`retriever.apps.service.state`: the served index version, reloaded when ``manifest.json`` changes.
- :mod:`retriever.apps.service.batcher`: queries of concurrent requests searched together in one worker thread.
- :mod:`retriever.apps.service.app`: the FastAPI application (``create_app``).

```python
from retriever.apps.service.app import create_app
from retriever.apps.service.state import IndexState
app = create_app(IndexState("my-index", device="cpu"))   # serve with uvicorn.run(app)
```
"""
