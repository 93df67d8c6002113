"""``retriever serve SET``: a set served on a Ray cluster with Ray Serve.

One deployment per shard (``shard-000``, ...; :class:`~retriever.apps.service.shard_server.ShardServer`, with
its replicas and resources configurable, GPUs when asked) and one ingress deployment (FastAPI,
:func:`~retriever.apps.service.set_app.create_set_app`) that encodes each batch of queries once, sends the
vectors to every shard and merges the shards' top-k exactly (:mod:`retriever.apps.service.fanout`). Ray Serve's
HTTP proxy answers on ``host:port``. Every node must see the set at the same path (a shared filesystem).

```python
from retriever.apps.service.distributed import ServeOptions, deploy_set
url = deploy_set("my-set", ServeOptions(shard_replicas=2))      # a local Ray cluster unless address is given
```
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from indexing.errors import RetrieverError
from indexing.set_manifest import read_set_manifest, shard_dir

log = logging.getLogger(__name__)

APP_NAME = "retriever"


@dataclass(frozen=True)
class ServeOptions:
    """How a set is served on Ray (defaults as ``retriever serve``'s).

    Attributes:
        address: Ray cluster address (None: ``RAY_ADDRESS`` or a new local cluster).
        host, port: where Ray Serve's HTTP proxies listen; proxy_location: ``EveryNode`` or ``HeadOnly``.
        shard_replicas: replicas of each shard deployment; shard_cpus/shard_gpus: per replica.
        shard_resources: extra Ray resources per shard replica, e.g. ``{"shard-000": 0.01}`` to pin shards to nodes
            that declare that resource (``{number}`` in a key is replaced by the shard number).
        ingress_replicas: replicas of the ingress (each loads the query encoder); ingress_gpus per replica.
        shard_timeout: seconds a request waits for a missing shard before answering 503.
        device: query encoder device in the ingress; index_device: FAISS device in shard replicas.
        limits, api_key, max_batch, max_wait_ms, max_pending: as ``retriever serve``.
    """

    address: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8000
    proxy_location: str = "EveryNode"
    shard_replicas: int = 1
    shard_cpus: float = 1.0
    shard_gpus: float = 0.0
    shard_resources: dict[str, float] = field(default_factory=dict)
    ingress_replicas: int = 1
    ingress_gpus: float = 0.0
    shard_timeout: float = 5.0
    device: str = "cpu"
    index_device: Optional[str] = None
    query_backend: str = "auto"
    limits: dict[str, int] = field(default_factory=dict)
    api_key: Optional[str] = None
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_pending: int = 4096

    def __post_init__(self) -> None:
        if self.shard_replicas < 1 or self.ingress_replicas < 1:
            raise RetrieverError("--shard-replicas and --ingress-replicas must be >= 1")
        if self.shard_timeout <= 0:
            raise RetrieverError(f"--shard-timeout must be > 0 (got {self.shard_timeout})")
        if min(self.shard_cpus, self.shard_gpus, self.ingress_gpus) < 0:
            raise RetrieverError("--shard-cpus/--shard-gpus/--ingress-gpus must be >= 0")


class SetIngress:
    """The ingress deployment's class: the FastAPI app over a :class:`FanoutState` of the shard handles."""

    def __init__(self, root: str, options: dict[str, Any], *handles: Any):
        from retriever.apps.service.fanout import FanoutState

        self.options = ServeOptions(**options)
        self.state = FanoutState(root, handles, shard_timeout=self.options.shard_timeout, device=self.options.device,
                                 query_backend=self.options.query_backend)
        self.state.encoder  # load the model now: the first request should not pay for it

    def __serve_build_asgi_app__(self) -> Any:
        from retriever.apps.service.schemas import Limits
        from retriever.apps.service.set_app import create_set_app

        o = self.options
        return create_set_app(self.state, limits=Limits(**o.limits), api_key=o.api_key, max_batch=o.max_batch,
                              max_wait_ms=o.max_wait_ms, max_pending=o.max_pending)


def build_application(root: str | Path, options: ServeOptions) -> Any:
    """The Ray Serve application of the set at ``root``: N shard deployments bound into the ingress.

    Raises:
        IndexDirError: no valid set at ``root``. RetrieverError: Ray Serve is not installed.
    """
    serve = _serve()
    root = str(Path(root).resolve())
    manifest = read_set_manifest(Path(root))
    from retriever.apps.service.shard_server import ShardServer

    shards = []
    for number in range(manifest.num_shards):
        resources = {key.replace("{number}", f"{number:03d}"): value for key, value in options.shard_resources.items()}
        actor = {"num_cpus": options.shard_cpus, "num_gpus": options.shard_gpus, **({"resources": resources} if resources else {})}
        deployment = serve.deployment(ShardServer, name=shard_dir(number), num_replicas=options.shard_replicas,
                                      ray_actor_options=actor, max_ongoing_requests=16)
        shards.append(deployment.bind(root, number, index_device=options.index_device))
    ingress = serve.deployment(serve.ingress()(SetIngress), name="ingress", num_replicas=options.ingress_replicas,
                               ray_actor_options={"num_cpus": 0.5, "num_gpus": options.ingress_gpus},
                               max_ongoing_requests=256)
    return ingress.bind(root, asdict(options), *shards)


def deploy_set(root: str | Path, options: ServeOptions = ServeOptions(), *, blocking: bool = False) -> str:
    """Connect to (or start) Ray, start Serve's HTTP proxy on ``options.host:port`` and deploy the set; returns
    the service URL. With ``blocking`` it serves until interrupted.

    Raises:
        IndexDirError: no valid set. RetrieverError: Ray Serve missing, or the cluster cannot be reached.
    """
    import ray

    serve = _serve()
    application = build_application(root, options)
    if not ray.is_initialized():
        try:
            ray.init(address=options.address, include_dashboard=False, ignore_reinit_error=True,
                     runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
        except ConnectionError as exc:
            raise RetrieverError(f"--ray-address {options.address}: cannot reach the Ray cluster ({exc})") from None
    serve.start(http_options={"host": options.host, "port": options.port}, proxy_location=options.proxy_location)
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=blocking)
    return f"http://{options.host}:{options.port}"


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError as exc:
        raise RetrieverError(f"serving a set needs Ray Serve ({exc.name} is missing): pip install 'retriever[dist]'") from None
    return serve
