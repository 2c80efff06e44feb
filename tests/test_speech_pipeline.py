"""Speech end to end: the speech arch in Tokenizer, training through the audio modality, evaluation,
the audio codec and `vqkit encode`/`decode` on wav files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from vqkit.cli import main
from vqkit.codec import ModelMismatchError, TokenFile
from vqkit.codec.priors import save_prior
from vqkit.codec.tiled import Codec
from vqkit.evaluate import evaluate
from vqkit.modalities import AUDIO, Evaluation, modality_of, open_codec
from vqkit.modalities.audio.codec import AudioAdapter, Waveform, resample
from vqkit.modalities.audio.report import write_audio_report
from vqkit.models import Tokenizer, TokenizerConfig
from vqkit.train import load_config, train

TINY = {"channels": 8, "max_channels": 32, "backbone_dim": 32, "backbone_layers": 1, "intermediate": 64,
        "strides": [2, 4, 5, 8]}
RATE, HOP = 16000, 320
LIBRISPEECH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "audio"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """Tiny models on a busy 2-core machine run faster (and steadier) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced-speech-like audio: a 100-200 Hz pulse train through formant-ish resonances, amplitude-modulated."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)))
    x = voiced * envelope + 0.01 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real LibriSpeech when the shared data is there (first 1.3-2.3 s of 8 utterances of different
    speakers), else speech-like synthetic clips: train/ (6) and val/ (2)."""
    from vqkit.modalities.audio.io import find_audio, load_audio

    root = tmp_path_factory.mktemp("speech")
    real = LIBRISPEECH / "librispeech-train-clean-100"
    files = find_audio(real)[::30][:8] if real.is_dir() else []
    for split, n, offset in (("train", 6, 0), ("val", 2, 6)):
        (root / split).mkdir()
        for i in range(n):
            seconds = 1.3 + 0.2 * i
            clip = (load_audio(files[offset + i], RATE).numpy()[: int(seconds * RATE)] if files
                    else speech_like(seconds, seed=offset + i))
            sf.write(root / split / f"{i}.wav", clip, RATE)
    return root


def tokenizer(quantizer: str = "simvq", args: dict[str, Any] | None = None, seed: int = 0) -> Tokenizer:
    torch.manual_seed(seed)
    config = TokenizerConfig(arch="speech", quantizer=quantizer, quantizer_args=args or {"dim": 16,
                             "codebook_size": 256}, arch_args=TINY)
    return Tokenizer(config).eval()


def test_speech_tokenizer_shapes_and_decode_of_encode() -> None:
    model = tokenizer()
    audio = torch.from_numpy(speech_like(1.0, 0))[None, None]
    recon, out = model(audio)
    assert recon.shape == (1, 1, RATE) and out.indices.shape == (1, RATE // HOP)
    assert torch.allclose(model.decode(model.encode(audio)), recon, atol=1e-5)
    assert model.token_grid(RATE) == (RATE // HOP,)
    with pytest.raises(ValueError, match=r"expected audio of shape \(B, 1, T\)"):
        model.encode(torch.zeros(1, 3, 640))
    with pytest.raises(ValueError, match="multiples of the downsample factor 320"):
        model.encode(torch.zeros(1, 1, 1000))
    residual = tokenizer("rfsq", {"levels": [4, 4, 4], "num_stages": 2})
    assert residual.encode(audio).shape == (1, RATE // HOP, 2)


def test_speech_config_is_validated_and_saved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        TokenizerConfig(arch="speech", arch_args={"chanels": 8})
    with pytest.raises(ValueError, match="takes none"):
        TokenizerConfig(arch="rfsq_conv", arch_args={"channels": 8})
    model = tokenizer()
    model.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    audio = torch.from_numpy(speech_like(0.6, 1))[None, None][..., : 30 * HOP]
    assert torch.equal(again(audio)[0], model(audio)[0])
    assert again.config.arch_args["strides"] == (2, 4, 5, 8)
    assert modality_of("speech").name == "audio" and modality_of("vqgan").name == "image"


def evaluate_audio(model: Tokenizer, dataset: Any, device: str, full: bool, keep_samples: int = 0) -> Evaluation:
    """Whole utterances through the one evaluation loop with the speech scorer."""
    scorer = AUDIO.scorer(model, torch.device(device), full=full)
    return evaluate(model, AUDIO.eval_loader(dataset, 1), device, scorer, keep_samples=keep_samples)


def _train(corpus: Path, out: Path, steps: int, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(data=str(corpus), out=str(out), arch_args=json.dumps(TINY),
                                   quantizer_args=json.dumps({"dim": 16, "codebook_size": 256}), steps=steps,
                                   batch_size=4, segment=3200, eval_every=steps, ckpt_every=steps, log_every=1, lr=2e-3,
                                   prior_images=4)
    cfg = load_config("speech-cpu", None, **{**options, **overrides})
    return train(cfg)


def test_training_lowers_the_mel_loss_and_fits_a_prior(corpus: Path, tmp_path: Path) -> None:
    """On the whole training utterances (real speech when the shared data is there), the trained model's
    mel distance is well below that of the same model at initialisation (the trainer's seed)."""
    from vqkit.modalities.audio.io import AudioFolder

    summary = _train(corpus, tmp_path / "run", steps=200, segment=6400, quantizer="fsq",
                     quantizer_args=json.dumps({"levels": [8, 5, 5], "dim": 16}))
    cfg = load_config(None, tmp_path / "run" / "config.json")
    torch.manual_seed(cfg.run.seed)
    clips = AudioFolder(corpus / "train", RATE, train=False)
    before = evaluate_audio(Tokenizer(cfg.tokenizer_config()), clips, "cpu", full=False).metrics["mel_distance"]
    after = evaluate_audio(Tokenizer.from_pretrained(tmp_path / "run"), clips, "cpu", full=False).metrics
    assert after["mel_distance"] < 0.85 * before
    assert summary["modality"] == "audio" and summary["val"]["utterances"] == 2
    assert {"mel_distance", "si_sdr", "stoi", "usage", "kbps"} <= set(summary["val"])
    assert (tmp_path / "run" / "final" / "prior.safetensors").is_file()
    assert main(["eval", str(tmp_path / "run"), "--data", str(corpus / "val"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert set(metrics["file_kbps"]) == {"static", "context"} and all(v > 0 for v in metrics["file_kbps"].values())
    per_utterance = metrics["per_utterance"]  # each utterance's scores, by file, for paired comparisons
    assert per_utterance["ids"] == ["0.wav", "1.wav"]
    assert {"pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance"} <= set(per_utterance)
    assert all(len(v) == 2 for v in per_utterance.values())
    assert sum(per_utterance["stoi"]) / 2 == pytest.approx(metrics["stoi"], abs=1e-4)
    assert metrics["kbps"] == pytest.approx(50 * np.log2(200) / 1000)  # FSQ [8, 5, 5] at 50 tokens/s
    assert (tmp_path / "ev" / "spectrograms.png").is_file() and len(list((tmp_path / "ev" / "samples").iterdir())) == 4


def test_adversarial_step_runs_and_logs(corpus: Path, tmp_path: Path) -> None:
    _train(corpus, tmp_path / "gan", steps=2, gan_weight=1.0, fm_weight=2.0, prior_images=0)
    records = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["d_loss"]) for r in records if r.get("split") == "train")


def test_evaluate_audio_and_report(corpus: Path, tmp_path: Path) -> None:
    from vqkit.modalities.audio.io import AudioFolder

    model = tokenizer()
    dataset = AudioFolder(corpus / "val", RATE, train=False)
    result = evaluate_audio(model, dataset, "cpu", full=True, keep_samples=1)
    m = result.metrics
    assert m["utterances"] == 2 and m["kbps"] == pytest.approx(50 * 8 / 1000)
    assert 1.0 <= m["pesq_wb"] <= 4.6 and "checkpoint" in m["utmos"]["unavailable"]
    assert len(result.samples) == 1 and result.samples[0][0].shape == result.samples[0][1].shape
    assert "per_utterance" not in m and {"pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance"} <= set(
        result.per_item)  # beside the metrics, which stay flat for training's logs
    assert sum(result.per_item["stoi"]) / 2 == pytest.approx(m["stoi"])
    results = {"preset": "simvq-audio", "modality": "audio", "configs": [
        {"name": "SimVQ 256", "bits_per_token": 8.0, "metrics": m, "paper": {"usage": 1.0, "pesq_wb": 2.08}}]}
    write_audio_report(tmp_path, results)
    report = (tmp_path / "report.md").read_text()
    assert "LibriSpeech-subset-16k" in report and "| SimVQ 256 | 8.0 | 0.400 |" in report


@pytest.mark.parametrize("quantizer, args", [("simvq", {"dim": 16, "codebook_size": 256}),
                                             ("fsq", {"levels": [8, 5, 5], "dim": 16}),
                                             ("rfsq", {"levels": [4, 4, 4], "num_stages": 2})])
def test_audio_codec_round_trip(quantizer: str, args: dict[str, Any]) -> None:
    model = tokenizer(quantizer, args)
    codec = Codec(model, AudioAdapter(RATE), None, tile=20, margin=4)
    codec.tables = codec.fit_prior([torch.from_numpy(speech_like(1.0, s)) for s in range(3)])
    audio = torch.from_numpy(speech_like(1.57, 7))  # not a multiple of the hop, several chunks
    grid, _, shape = codec.tokens(audio)
    for prior in ("uniform", "static", "context"):
        encoded = codec.encode(audio, prior)
        file = TokenFile.from_bytes(encoded.data)
        assert file.modality == "audio" and file.signal_shape == (1, len(audio))
        decoded = codec.decode(encoded.data)
        rendered = codec.render(grid, None, shape)
        assert decoded.rate == RATE and torch.equal(decoded.samples, rendered.samples)
    whole = Codec(model, AudioAdapter(RATE), None, tile=1000, margin=0)
    assert (whole.tokens(audio)[0] == grid).mean() > 0.95  # chunks with a margin ≈ the whole signal


def test_the_input_rate_is_stored_and_restored() -> None:
    """A waveform at 22.05 kHz is coded at the model's 16 kHz and decodes at 22.05 kHz, at its own length."""
    codec = Codec(tokenizer(), AudioAdapter(RATE), None, tile=1000, margin=100)
    audio = torch.from_numpy(speech_like(0.7, 2))
    native = Waveform(resample(audio, RATE, 22050, 15435), 22050)  # the same speech at 22.05 kHz
    file = TokenFile.from_bytes(codec.encode(native, "uniform").data)
    assert file.signal_shape == (1, len(audio), 22050, 15435) and file.grid[1] == -(-len(audio) // HOP)
    decoded = codec.decode(codec.encode(native, "uniform").data)
    assert decoded.rate == 22050 and decoded.samples.shape == (15435,)
    plain = codec.decode(codec.encode(audio, "uniform").data)  # a tensor is at the model's rate, as before
    assert plain.rate == RATE and plain.samples.shape == audio.shape


def test_a_forged_input_length_is_refused_before_allocating() -> None:
    """The stored input-rate length must describe the same signal as the model-rate one: a 100-byte file
    claiming 50 M samples at 22.05 kHz for one second at 16 kHz is refused, not allocated."""
    from vqkit.codec import TokenFileError

    codec = Codec(tokenizer(), AudioAdapter(RATE), None, tile=1000, margin=100)
    audio = torch.from_numpy(speech_like(1.0, 4))
    file = TokenFile.from_bytes(codec.encode(Waveform(resample(audio, RATE, 22050, 22050), 22050), "uniform").data)
    assert file.signal_shape == (1, RATE, 22050, 22050)
    for shape in [(1, RATE, 22050, 50_000_000), (1, RATE, RATE, RATE)]:
        forged = TokenFile(file.modality, file.prior, file.model_id, shape, file.grid, file.codebook_sizes,
                           file.payload, b"", file.tile)
        with pytest.raises(TokenFileError, match="corrupt or forged"):
            codec.decode(forged.to_bytes())


def test_info_counts_a_resampled_files_rate_at_the_models_rate(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    codec = Codec(tokenizer(), AudioAdapter(RATE), None, tile=1000, margin=100)
    audio = torch.from_numpy(speech_like(1.0, 5))
    data = codec.encode(Waveform(resample(audio, RATE, 22050, 22050), 22050), "uniform").data
    (tmp_path / "a.vqt").write_bytes(data)
    (tmp_path / "bad.vqt").write_bytes(b"VQT")
    assert main(["info", str(tmp_path / "a.vqt"), str(tmp_path / "bad.vqt"), "--json"]) == 1
    out = capsys.readouterr()
    (info,) = json.loads(out.out)  # stdout is the JSON alone: errors go to stderr
    assert info["bits_per_sample"] == pytest.approx(8 * len(data) / RATE) and "bad.vqt" in out.err


def test_encode_decode_wav_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tokenizer()
    model.save_pretrained(tmp_path / "m")
    codec, _ = open_codec(tmp_path / "m")
    save_prior(tmp_path / "m", codec.fit_prior([torch.from_numpy(speech_like(1.0, 3))]))
    sf.write(tmp_path / "a.wav", speech_like(0.9, 5), RATE)
    sf.write(tmp_path / "b.flac", np.stack([speech_like(0.5, 6)] * 2, 1), 22050)  # stereo, another rate
    model_dir = str(tmp_path / "m")
    args = [str(tmp_path / "a.wav"), str(tmp_path / "b.flac"), "-o", str(tmp_path / "vqt"), "--model", model_dir]
    assert main(["encode", *args, "--check"]) == 0
    out = capsys.readouterr().out
    assert "kbps" in out and "SI-SDR" in out
    assert main(["decode", str(tmp_path / "vqt"), "-o", str(tmp_path / "wav"), "--model", model_dir]) == 0
    a, rate = sf.read(tmp_path / "wav" / "a.wav")
    b, rate_b = sf.read(tmp_path / "wav" / "b.wav")
    assert rate == RATE and len(a) == int(0.9 * RATE)
    assert rate_b == 22050 and len(b) == 8000  # decoded at the rate and length it came in
    tokenizer(seed=3).save_pretrained(tmp_path / "other")  # same config and prior tables, other weights
    (tmp_path / "other" / "prior.safetensors").write_bytes((tmp_path / "m" / "prior.safetensors").read_bytes())
    with pytest.raises(ModelMismatchError):
        open_codec(tmp_path / "other")[0].decode((tmp_path / "vqt" / "a.vqt").read_bytes())


@pytest.mark.skipif(not (LIBRISPEECH / "librispeech-test-other").is_dir(), reason="shared LibriSpeech absent")
def test_real_utterance_through_the_codec() -> None:
    from vqkit.modalities.audio.io import find_audio, load_audio

    audio = load_audio(find_audio(LIBRISPEECH / "librispeech-test-other")[0], RATE)
    codec = Codec(tokenizer(), AudioAdapter(RATE), None, tile=1000, margin=100)
    decoded = codec.decode(codec.encode(audio, "uniform").data).samples
    assert decoded.shape == audio.shape and torch.isfinite(decoded).all()


def test_checkpoints_from_before_arch_args_and_adversary_keys_still_load(tmp_path: Path) -> None:
    """Runs saved before speech support (a flat config without arch_args; PatchGAN keys at main.*) resume."""
    from vqkit.modalities.image.objective import ImageAdversary
    from vqkit.models import PatchDiscriminator
    from vqkit.train import PRESETS
    from vqkit.train.checkpoint import load_checkpoint, save_checkpoint

    cfg = load_config("rfsq-cpu", None, gan_weight=0.1)
    preset = dict(PRESETS["rfsq-cpu"])
    old = {**preset, "quantizer_args": json.dumps(preset["quantizer_args"]), "gan_weight": 0.1,
           "max_val_images": preset.pop("max_val_items"), "segment": 16000, "mel_weight": 0.0, "ch": 128}
    save_checkpoint(tmp_path, {"config": old, "step": 3})
    assert load_checkpoint(tmp_path, cfg.to_dict())["step"] == 3
    ImageAdversary(cfg).load_state_dict(PatchDiscriminator().state_dict())  # strict: the same keys


def test_simvq_audio_preset_rows_per_scale() -> None:
    from vqkit.experiments.presets import PRESETS
    from vqkit.models.registry import build_quantizer

    preset = PRESETS["simvq-audio"]
    cpu, paper = preset.rows("cpu"), preset.rows("paper")
    assert [e.name for e in paper] == [e.name for e in cpu] + ["SimVQ 262144"]
    assert {e.args["dim"] for e in cpu} == {64} and {e.args["dim"] for e in paper} == {512}
    sizes = {e.name: build_quantizer(e.quantizer, e.args).codebook_size for e in cpu}
    assert sizes == {"VQ-EMA 4096 (WavTokenizer)": 4096, "FSQ [8,8,8,8] 4096": 4096, "SimVQ 4096": 4096,
                     "FSQ [8,8,8,5,5,5] 64000": 64000, "SimVQ 65536": 65536}
