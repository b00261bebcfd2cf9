"""Evaluations sharded over processes, GPUs and nodes with ``torch.distributed``, launched by ``torchrun``.

The expensive evaluations (pointing games, insertion/deletion, RISE and Score-CAM over
thousands of images, parameter studies) are sums of independent per-image results, so they
split by image: each process evaluates a contiguous shard of the images and the per-image
results are gathered, in the images' order, to every process.

The engine is ``torch.distributed`` (NCCL between GPUs, gloo on CPUs), launched by
``torchrun``: torch is already this library's only heavy dependency, ``torchrun`` handles the
rendezvous of one or several nodes and restarts, and no extra service (a scheduler, a
parameter server, a Ray or Dask cluster) has to run beside it. A script written with this
module runs unchanged as a plain ``python script.py`` (a single-process world: no process
group, nothing initialised) and under ``torchrun --nproc_per_node=N script.py``.

- :func:`world`: this process's :class:`World` (rank, world size, local rank, device), read
  from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``); :func:`init` / :func:`shutdown` start and end the process group.
- :func:`shard`: the contiguous, deterministic shard of ``n`` items that a rank evaluates.
- :func:`map_images`: ``[fn(item) for item in items]`` with each rank computing its shard,
  gathered to every rank in the original order (``torch.distributed.all_gather_object``).
- :func:`gather_tensor`: the ``(n_local, ...)`` tensors of the ranks joined into ``(n, ...)``.
- :func:`sharded`: a function of a whole shard (a batch of images) made into one of all the
  items, for evaluations that batch images.

A per-image loop of a chapter, sharded (the metrics are not changed)::

    world = lib.distributed.world()
    classifier = lib.models.load("efficientnet_lite0", device=world.device)
    samples = lib.data.image_set(limit=1000)

    def evaluate(sample):                       # one image: the same computation on any rank
        batch = lib.data.batch([sample], classifier.preprocess, classifier.input_size).to(world.device)
        maps = lib.saliency.gradcam(classifier, batch.images, batch.labels)
        scores = insertion_deletion(classifier, batch.images, maps, batch.labels)
        hit = pointing_game(maps.cpu(), [sample], input_size=classifier.input_size)
        return {"insertion": float(scores.insertion_auc), "deletion": float(scores.deletion_auc),
                "pointing": hit}                 # a PointingResult: join with PointingResult.cat

    rows = lib.distributed.map_images(evaluate, samples)     # every rank: 1,000 rows, in order
    game = PointingResult.cat([row["pointing"] for row in rows])

or, batching a shard's images (:func:`sharded`; the tensor comes back ``(n, ...)``)::

    @lib.distributed.sharded
    def insertion_aucs(samples):                 # this rank's shard of the samples
        aucs = []
        for batch in lib.data.batches(samples, classifier.preprocess, classifier.input_size):
            batch = batch.to(world.device)
            maps = lib.saliency.rise(classifier, batch.images, batch.labels)
            aucs.append(insertion_deletion(classifier, batch.images, maps, batch.labels).insertion_auc)
        return torch.cat(aucs)

    aucs = insertion_aucs(samples)               # (1000,) on every rank

One image per call (:func:`map_images`) gives results equal, bit for bit, to a single
process's on the same device kind: every image goes through exactly the same computation
whichever rank evaluates it (``tests/test_distributed.py`` compares the two tables).
Batches of a shard (:func:`sharded`) group other images together than a single process
would, which batched kernels may round differently in the last bits. Per-image results
that are small Python objects (floats, dicts, small CPU tensors) travel by pickling; write
tables on rank 0 only (:attr:`World.is_main`).

Commands (the README's "Running over several GPUs or nodes")::

    torchrun --standalone --nproc_per_node=4 scripts/sharded_eval.py ...      # 4 GPUs, one node
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=host0:29500 scripts/sharded_eval.py ...          # node 0 of 2 (node 1: --node_rank=1)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .saliency.passes import check_count

__all__ = ["BACKENDS", "LAUNCH_VARIABLES", "World", "world", "init", "shutdown", "shard", "map_images",
           "gather_tensor", "sharded"]

BACKENDS = ("auto", "nccl", "gloo")
"""Process-group backends :func:`init` accepts: ``"auto"`` is NCCL when CUDA is available, else gloo."""

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment variables ``torchrun`` sets for every process and :func:`init` reads."""

_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """The processes an evaluation is split over, as seen by one of them.

    Attributes:
        rank: this process's index among all processes, ``0 .. world_size - 1``.
        world_size: how many processes take part (1: a single process).
        local_rank: this process's index on its node (its GPU there).
        device: where this process computes: ``cuda:<local_rank>`` under NCCL, else the CPU
            (a single process: ``cuda:0`` when the backend would be NCCL).
        backend: the process group's backend (``"nccl"``, ``"gloo"``), None for a single
            process (no process group).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    def __post_init__(self):
        for name in ("rank", "world_size", "local_rank"):
            check_count(getattr(self, name), f"World: {name}", 1 if name == "world_size" else 0)
        if self.rank >= self.world_size:
            raise ValueError(f"World: rank must be below world_size ({self.world_size}), got {self.rank}")
        if not isinstance(self.device, torch.device):
            raise TypeError(f"World: device must be a torch.device, got {type(self.device).__name__}")
        if self.backend not in (None, "nccl", "gloo"):
            raise ValueError(f"World: backend must be 'nccl', 'gloo' or None (a single process), got {self.backend!r}")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes tables and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether a process group joins this process to others (results travel between ranks)."""
        return self.backend is not None


def _check_backend(backend) -> str:
    """``backend`` resolved: ``"nccl"`` or ``"gloo"`` (``"auto"``: NCCL when CUDA is available)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA, and no CUDA device is available; use backend='gloo' "
                         "(or 'auto') on CPUs")
    return backend


def _launched() -> bool:
    """Whether ``torchrun`` (or an equivalent launcher) started this process: a rank variable is set."""
    return any(name in os.environ for name in _RANK_VARIABLES)


def _launch_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's variables, checked."""
    missing = [name for name in LAUNCH_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(f"distributed launch: {', '.join(missing)} not set, but "
                         f"{', '.join(n for n in _RANK_VARIABLES if n in os.environ)} is; launch with torchrun, which sets "
                         f"all of {', '.join(LAUNCH_VARIABLES)} (or unset them all for a single process)")
    values = {}
    for name in _RANK_VARIABLES:
        text = os.environ[name]
        if not text.isdigit():
            raise ValueError(f"distributed launch: {name} must be a whole number >= 0, got {text!r}")
        values[name] = int(text)
    rank, size, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if size < 1 or rank >= size or local > rank:
        raise ValueError(f"distributed launch: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={size} do not fit "
                         "(accepted: 0 <= LOCAL_RANK <= RANK < WORLD_SIZE)")
    return rank, size, local


def _initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _require_distributed() -> None:
    if not torch.distributed.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run as a single process (without torchrun)")


def init(backend: str = "auto") -> bool:
    """Join this process to the others ``torchrun`` started (``torch.distributed.init_process_group``).

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
    (``init_method="env://"``). Under NCCL the process's GPU is ``cuda:<LOCAL_RANK>``, made
    the current device. Calling it again is harmless (idempotent).

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``"auto"`` (NCCL when CUDA is available, else gloo).

    Returns:
        True when a process group is (now) initialised; False in a process that no launcher
        started (none of ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set): a single process, with
        nothing to join.

    Raises:
        ValueError: an unknown backend, ``"nccl"`` without CUDA, a launch environment that
            lacks a variable or whose values do not fit, more processes on a node than GPUs
            under NCCL, or a process group already initialised with another backend than
            the one asked for.
        RuntimeError: a torch build without ``torch.distributed``.
    """
    chosen = _check_backend(backend)
    if _initialised():
        current = torch.distributed.get_backend()
        if backend != "auto" and current != chosen:
            raise ValueError(f"init: the process group is already initialised with backend {current!r}, not {chosen!r}; "
                             "call shutdown() first to change it")
        return True
    if not _launched():
        return False
    _require_distributed()
    _, _, local_rank = _launch_environment()
    device = None
    if chosen == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"init: LOCAL_RANK={local_rank} but this node sees {torch.cuda.device_count()} CUDA "
                             "device(s); start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=chosen, init_method="env://", device_id=device)
    return True


def shutdown() -> None:
    """Leave the process group (``destroy_process_group``); nothing to do when none is initialised."""
    if _initialised():
        torch.distributed.destroy_process_group()


def world(backend: str = "auto") -> World:
    """This process's :class:`World`, joining the process group first when ``torchrun`` started it.

    Without the launcher's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` all unset) the
    world is this process alone (rank 0 of 1) and no process group is initialised.

    Args:
        backend: as :func:`init`; it also decides the device (``cuda:<local_rank>`` under NCCL,
            else the CPU).

    Raises:
        ValueError, RuntimeError: as :func:`init`.
    """
    chosen = _check_backend(backend)
    if not init(backend):
        return World(device=torch.device("cuda", 0) if chosen == "nccl" else torch.device("cpu"))
    current = torch.distributed.get_backend()
    if _launched():
        _, _, local_rank = _launch_environment()
    else:  # a process group the caller initialised without torchrun's variables
        local_rank = torch.cuda.current_device() if current == "nccl" else 0
    device = torch.device("cuda", local_rank) if current == "nccl" else torch.device("cpu")
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device, current)


def _default_world() -> World:
    """:func:`world` with the default backend (for functions whose ``world`` argument hides it)."""
    return world()


def _check_world(world_, what: str) -> World:
    """``world_`` as given, :func:`world` for None; a distributed world needs its process group."""
    if world_ is None:
        return _default_world()
    if not isinstance(world_, World):
        raise TypeError(f"{what}: world must be a lib.distributed.World (from lib.distributed.world()) or None, "
                        f"got {type(world_).__name__}")
    if world_.world_size > 1 and not world_.is_distributed:
        raise ValueError(f"{what}: a world of {world_.world_size} processes needs a process group "
                         "(use lib.distributed.world() under torchrun)")
    if world_.is_distributed and not _initialised():
        raise ValueError(f"{what}: the world's process group is not initialised (shut down?); call lib.distributed.world() again")
    return world_


def shard(n_items: int, world: World | None = None) -> range:
    r"""The items rank :math:`r` of :math:`W` evaluates: :math:`[\lfloor rn/W \rfloor, \lfloor (r+1)n/W \rfloor)`.

    Contiguous and deterministic (it depends on ``n_items``, the rank and the world size
    only): the shards of the ranks, in rank order, are ``range(n_items)`` cut into pieces whose
    sizes differ by at most one, so joining the ranks' results in rank order restores the
    items' order.

    Args:
        n_items: how many items there are (>= 0).
        world: the world (None: :func:`world`).

    Returns:
        A ``range`` of item indices (empty when there are fewer items than ranks).

    Raises:
        TypeError: ``n_items`` that is not an integer; ``world`` that is not a :class:`World`.
        ValueError: ``n_items`` below 0.
    """
    n = check_count(n_items, "shard: n_items (how many items to split)", 0)
    if world is None:
        world = _default_world()
    elif not isinstance(world, World):
        raise TypeError(f"shard: world must be a lib.distributed.World or None, got {type(world).__name__}")
    return range(world.rank * n // world.world_size, (world.rank + 1) * n // world.world_size)


def _to_cpu(value):
    """``value`` with every tensor in it (in lists, tuples, named tuples, dicts, dataclasses) detached and on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if type(value) is dict:
        return {key: _to_cpu(item) for key, item in value.items()}
    if type(value) is list:
        return [_to_cpu(item) for item in value]
    if type(value) is tuple:
        return tuple(_to_cpu(item) for item in value)
    if isinstance(value, tuple) and hasattr(type(value), "_make"):  # a named tuple
        return type(value)._make(_to_cpu(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _to_cpu(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def _check_items(items, what: str) -> int:
    """``len(items)`` of items that can be indexed: a sequence, a Dataset, an array or a tensor split along dim 0."""
    if isinstance(items, torch.Tensor):
        if items.dim() == 0:
            raise ValueError(f"{what}: a tensor of items is split along dim 0; got a 0-d tensor")
        return items.shape[0]
    if isinstance(items, (str, bytes, Mapping)) or not (hasattr(items, "__len__") and hasattr(items, "__getitem__")):
        raise TypeError(f"{what}: items must be indexable with a length (a list, a range, a lib.data.Dataset, an "
                        f"array, a tensor split along dim 0), got {type(items).__name__}; a generator: wrap it in list()")
    return len(items)


@dataclass(frozen=True)
class _Failure:
    """What a rank reports instead of results when its computation raised."""

    rank: int
    where: str
    error: str


def _exchange(world: World, n_items: int, compute: Callable[[], object], what: str,
              where: Callable[[], str] = lambda: "its shard") -> list:
    """Run ``compute`` here and gather ``(n_items, result or failure)`` from every rank: the ranks' results.

    A rank whose ``compute`` raised still takes part in the gather, so no other rank waits
    for it forever; then every rank raises (the failing one its own error, the others a
    RuntimeError naming the rank and ``where()`` it failed).
    """
    error = None
    try:
        local = compute()
    except Exception as caught:  # reported to the other ranks, then raised again below
        error = caught
        local = _Failure(world.rank, where(), f"{type(caught).__name__}: {caught}")
    gathered = [None] * world.world_size
    torch.distributed.all_gather_object(gathered, (n_items, local))
    if error is not None:
        raise error
    failures = [part for _, part in gathered if isinstance(part, _Failure)]
    if failures:
        first = failures[0]
        raise RuntimeError(f"{what}: rank {first.rank} failed at {first.where} ({first.error}); every rank stops here")
    counts = [count for count, _ in gathered]
    if len(set(counts)) > 1:
        raise ValueError(f"{what}: the ranks were given different numbers of items ({counts}, by rank); every rank "
                         "must pass the same items (the same dataset, the same order)")
    return [part for _, part in gathered]


def map_images(fn: Callable, items, *, world: World | None = None) -> list:
    """``[fn(items[i]) for i in range(len(items))]``, each rank computing its :func:`shard`, gathered to every rank.

    Each rank calls ``fn`` on the items of its shard (``items[i]``: an image index, a
    :class:`lib.data.Sample`, an image tensor ``(3, H, W)`` of an ``(N, 3, H, W)`` batch); the
    results travel by ``torch.distributed.all_gather_object`` and come back on every rank as
    one list in the items' order. In a single-process world nothing travels.

    Every rank must pass the same ``items``. When ``fn`` raises on some rank, that rank raises
    its error and every other rank a RuntimeError naming the rank and the item (no rank is
    left waiting).

    Args:
        fn: one item -> its result (a float, a dict, a :class:`~lib.metrics.pointing.PointingResult`,
            a small tensor: anything picklable).
        items: a sequence, a :class:`lib.data.Dataset`, an array, or a tensor split along dim 0.
        world: the world (None: :func:`world`).

    Returns:
        The ``len(items)`` results in the items' order, on every rank; tensors in them (also
        inside lists, tuples, dicts and dataclasses) detached and on the CPU, in every world.

    Raises:
        TypeError: ``fn`` that is not callable, items that cannot be indexed (a generator, a
            dict, a string), ``world`` that is not a :class:`World`.
        ValueError: a 0-d tensor of items; ranks given different numbers of items.
        RuntimeError: ``fn`` raised on another rank.
    """
    if not callable(fn):
        raise TypeError(f"map_images: fn must be callable (one item -> its result), got {type(fn).__name__}")
    n_items = _check_items(items, "map_images")
    world = _check_world(world, "map_images")
    indices = shard(n_items, world)

    current = [None]  # the item being computed, named when fn raises

    def compute() -> list:
        results = []
        for i in indices:
            current[0] = i
            results.append(_to_cpu(fn(items[i])))
        return results

    if not world.is_distributed:
        return compute()
    parts = _exchange(world, n_items, compute, "map_images", lambda: f"item {current[0]}")
    return [result for part in parts for result in part]


def gather_tensor(tensor: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """The ranks' ``(n_local, ...)`` tensors joined along dim 0 in rank order: ``(n, ...)`` on every rank.

    Shards may have different lengths (:func:`shard` of ``n`` items over ``W`` ranks differ
    by one): each rank's tensor is padded to the longest, ``torch.distributed.all_gather``-ed
    and trimmed back. Rank order is the items' order for tensors computed on :func:`shard`.

    Args:
        tensor: this rank's ``(n_local, ...)`` tensor (``n_local`` may be 0); every rank's must
            have the same trailing shape and dtype.
        world: the world (None: :func:`world`).

    Returns:
        The ``(n, ...)`` tensor on ``tensor``'s device and of its dtype; in a single-process
        world ``tensor`` itself.

    Raises:
        TypeError: ``tensor`` that is not a tensor; ``world`` that is not a :class:`World`.
        ValueError: a 0-d tensor; ranks whose tensors differ in trailing shape or dtype.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"gather_tensor: tensor must be a torch.Tensor (n_local, ...), got {type(tensor).__name__}")
    if tensor.dim() == 0:
        raise ValueError("gather_tensor: tensor must be (n_local, ...), split along dim 0; got a 0-d tensor")
    world = _check_world(world, "gather_tensor")
    if not world.is_distributed:
        return tensor
    layouts = [None] * world.world_size
    torch.distributed.all_gather_object(layouts, (tensor.shape[0], tuple(tensor.shape[1:]), tensor.dtype))
    if len({(rest, dtype) for _, rest, dtype in layouts}) > 1:
        shown = ", ".join(f"rank {r}: (n, {', '.join(map(str, rest))}) {dtype}" for r, (_, rest, dtype) in enumerate(layouts))
        raise ValueError(f"gather_tensor: every rank's tensor must have the same trailing shape and dtype; got {shown}")
    counts = [count for count, _, _ in layouts]
    longest = max(counts)
    if longest == 0:
        return tensor.new_empty((0, *tensor.shape[1:]))
    device = world.device if world.backend == "nccl" else torch.device("cpu")
    carried = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor  # bool does not travel on every backend
    padded = carried.new_zeros((longest, *tensor.shape[1:]), device=device)
    padded[: tensor.shape[0]] = carried.to(device)
    pieces = [torch.empty_like(padded) for _ in range(world.world_size)]
    torch.distributed.all_gather(pieces, padded)
    joined = torch.cat([piece[:count] for piece, count in zip(pieces, counts)])
    return joined.to(device=tensor.device, dtype=tensor.dtype)


def sharded(fn: Callable | None = None, *, world: World | None = None) -> Callable:
    """A function of a shard of items made into a function of all the items (a decorator).

    ``sharded(fn)(items)`` calls ``fn(items[a:b])`` with this rank's :func:`shard` ``a:b``
    (a slice of a list, a :class:`lib.data.Dataset`, a tensor...) and gathers the per-item
    results to every rank, in the items' order: a tensor ``(b - a, ...)`` through
    :func:`gather_tensor` into ``(n, ...)``, a sequence of ``b - a`` results through
    ``all_gather_object`` into a list of ``n`` (on the CPU, as :func:`map_images`). It suits
    evaluations that batch a shard's images; for one image per call use :func:`map_images`.

    Args:
        fn: a shard of items -> one result per item (a tensor along dim 0, or a sequence).
        world: the world (None: :func:`world`, resolved at each call).

    A rank whose shard is empty (fewer items than ranks) still calls ``fn``, on an empty
    slice, and must return the same kind of result as the others (an empty tensor of the same
    trailing shape and dtype, or an empty list).

    Returns:
        The function of all the items (``functools.wraps`` of ``fn``).

    Raises:
        TypeError: ``fn`` that is not callable (here); when the returned function is called:
            items that cannot be indexed, a ``world`` that is not a :class:`World`.
        ValueError: when called: ``fn`` returned neither a tensor nor a sequence of one result
            per item of its shard, a tensor on some ranks and a sequence on others; ranks given
            different numbers of items.
        RuntimeError: when called: ``fn`` raised on another rank.
    """
    if fn is None:
        return functools.partial(sharded, world=world)
    if not callable(fn):
        raise TypeError(f"sharded: fn must be callable (a shard of items -> one result per item), got {type(fn).__name__}")

    @functools.wraps(fn)
    def over_all(items):
        n_items = _check_items(items, f"sharded({fn.__name__})")
        here = _check_world(world, f"sharded({fn.__name__})")
        indices = shard(n_items, here)

        def compute():
            result = fn(items[indices.start:indices.stop])
            is_tensor = isinstance(result, torch.Tensor) and result.dim() > 0
            if not is_tensor and (isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Sequence)):
                raise ValueError(f"sharded: {fn.__name__} returned {type(result).__name__} for a shard of {len(indices)} "
                                 "items; expected a tensor (n_shard, ...) or a sequence of one result per item")
            if len(result) != len(indices):
                raise ValueError(f"sharded: {fn.__name__} returned {len(result)} results for a shard of {len(indices)} "
                                 "items; expected one result per item")
            return result if is_tensor else [_to_cpu(item) for item in result]

        if not here.is_distributed:
            return compute()
        local = []  # this rank's tensor: only its layout travels with the status, the values by gather_tensor

        def checked():
            result = compute()
            if isinstance(result, torch.Tensor):
                local.append(result)
                return "tensor"
            return result

        parts = _exchange(here, n_items, checked, f"sharded({fn.__name__})")
        kinds = {"tensor" if isinstance(part, str) else "list" for part in parts}
        if kinds == {"tensor"}:
            return gather_tensor(local[0], here)
        if len(kinds) > 1:
            raise ValueError(f"sharded: {fn.__name__} returned a tensor on some ranks and a sequence on others; "
                             "return the same kind on every rank")
        return [result for part in parts for result in part]

    return over_all
