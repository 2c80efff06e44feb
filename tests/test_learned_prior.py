"""The learned prior: integer inference that any machine reproduces bit for bit, trained weights that code
real structure in fewer bits than the count tables, and the same refusals as every other prior."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from vqkit.codec import PriorTables, StageSpec, TokenFile, decode, encode
from vqkit.codec.container import PRIORS, TokenFileError
from vqkit.codec.priors import Learned, quantized_weights
from vqkit.codec.priors.learned import (
    EXP_ONE,
    FH,
    FL,
    FW,
    HIDDEN,
    HIDDEN_CAP,
    LOGIT_SPAN,
    WEIGHT_CAP,
    IntMLP,
    exp_table,
    n_features,
)

SPECS = [StageSpec.digits([5, 4, 3])] * 2  # two RFSQ-like stages of three FSQ digits


def digit_grids(n: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Grids like an FSQ tokenizer's: each digit a smooth field over positions plus noise, stage 2 close to
    stage 1 (what neighbours and the previous stage predict, and per-digit counts cannot)."""
    rng = np.random.default_rng(seed)
    spec, out = SPECS[0], []
    for _ in range(n):
        stages, prev = [], None
        for _s in range(len(SPECS)):
            digits = []
            for j, r in enumerate(spec.radices):
                if prev is None:
                    coarse = rng.uniform(0, r - 1, size=(shape[0] // 3 + 2, shape[1] // 3 + 2))
                    field = np.kron(coarse, np.ones((3, 3)))[: shape[0], : shape[1]]
                else:
                    field = prev[j]
                digits.append(np.clip(np.round(field + rng.normal(0, 0.4, shape)), 0, r - 1).astype(np.int64))
            prev = digits
            stages.append(spec.join(np.stack([d.reshape(-1) for d in digits])).reshape(shape))
        out.append(np.stack(stages))
    return out


@pytest.fixture(scope="module")
def tables() -> PriorTables:
    return PriorTables.fit(SPECS, digit_grids(16, (12, 14), seed=0), learned=True)


def held_out() -> list[np.ndarray]:
    return digit_grids(4, (10, 13), seed=99)


def test_round_trip_and_rate_as_coded(tables: PriorTables) -> None:
    prior = tables.prior("learned")
    for grid in held_out():
        for layered in (False, True):
            payload, bits = encode(prior, grid, layered)
            assert np.array_equal(decode(prior, payload, grid.shape, layered), grid)
            assert bits <= 8 * len(payload) <= bits + 64 * (2 if layered else 1) + 16
        assert prior.cross_entropy_bits(grid) == pytest.approx(encode(prior, grid)[1])


def test_learned_codes_structure_in_fewer_bits_than_the_static_counts(tables: PriorTables) -> None:
    grids = held_out()
    names = ("static", "context", "learned")
    bits = {name: sum(tables.prior(name).cross_entropy_bits(g) for g in grids) for name in names}
    assert bits["learned"] < 0.8 * bits["static"], bits


def test_no_symbol_ever_has_zero_probability(tables: PriorTables) -> None:
    rng = np.random.default_rng(0)
    table = exp_table()
    assert table.min() >= 1 and table[0] == EXP_ONE
    for s, stage in enumerate(tables.learned.nets):  # type: ignore[union-attr]
        for j, net in enumerate(stage):
            f = n_features(SPECS[s], SPECS[s - 1] if s else None, 2)
            x = rng.integers(-8, 9, size=(500, f))  # beyond anything a grid gives
            w = net.weights(x, table)
            assert w.shape == (500, SPECS[s].radices[j]) and w.min() >= 1
            assert quantized_weights(w.astype(np.float64)).min() >= 1


def test_decoding_is_bit_exact_in_other_processes_and_thread_counts(tables: PriorTables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    grid = held_out()[0]
    payload, _ = encode(tables.prior("learned"), grid, True)
    (tmp_path / "tables.bin").write_bytes(tables.to_bytes())
    (tmp_path / "payload.bin").write_bytes(payload)
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        torch.set_num_threads(int(sys.argv[1]))
        from vqkit.codec import PriorTables, decode
        t = PriorTables.from_bytes(open({str(tmp_path / 'tables.bin')!r}, 'rb').read())
        out = decode(t.prior('learned'), open({str(tmp_path / 'payload.bin')!r}, 'rb').read(), {grid.shape!r}, True)
        print(out.tobytes().hex())
    """)
    for threads in ("1", "2"):
        env_out = subprocess.run([sys.executable, "-c", script, threads], capture_output=True, text=True, check=True,
                                 env={"OMP_NUM_THREADS": threads, "PATH": "/usr/bin:/bin",
                                      "PYTHONPATH": ":".join(sys.path)})
        assert bytes.fromhex(env_out.stdout.strip()) == grid.tobytes()


def test_tables_with_a_learned_prior_store_and_verify(tables: PriorTables) -> None:
    back = PriorTables.from_bytes(tables.to_bytes())
    assert back.digest() == tables.digest() and back.learned is not None
    without = PriorTables(tables.static, tables.context)
    assert without.digest() != tables.digest()  # the learned weights enter the model id
    assert "learned" not in json.loads(without.to_arrays()[1])  # tables without one keep their old digest
    arrays, meta = tables.to_arrays()
    big = dict(arrays)
    big["learned.0.0.w1"] = arrays["learned.0.0.w1"] * (1 << 20)  # beyond the fixed-point bounds
    with pytest.raises(ValueError, match="fixed-point bounds"):
        PriorTables.from_arrays(big, meta)
    zero = dict(arrays)
    zero["learned.exp"] = np.zeros_like(arrays["learned.exp"])
    with pytest.raises(ValueError, match="positive integers"):
        PriorTables.from_arrays(zero, meta)
    other = json.loads(meta)
    other["learned"]["fl"] += 1
    with pytest.raises(ValueError, match="fixed-point constants"):
        PriorTables.from_arrays(arrays, json.dumps(other))
    stored = safetensors.numpy.load(tables.to_bytes())  # plain integer arrays in safetensors, no pickle
    assert stored["learned.exp"].dtype == np.int64 and stored["learned.0.0.w1"].dtype == np.int64


def test_nominal_stages_and_wrong_rank_are_refused(tables: PriorTables) -> None:
    with pytest.raises(ValueError, match="nominal"):
        PriorTables.fit([StageSpec.nominal(64)], [np.zeros((1, 4, 4), np.int64)], learned=True)
    with pytest.raises(ValueError, match="2-D"):
        tables.prior("learned").cross_entropy_bits(np.zeros((2, 16), np.int64))
    with pytest.raises(ValueError, match="no learned prior"):
        PriorTables(tables.static, tables.context).prior("learned")
    assert PRIORS["learned"] == 4
    bad = IntMLP.__init__
    with pytest.raises(ValueError, match="int64"):
        bad(IntMLP.__new__(IntMLP), np.zeros((2, 2)), np.zeros(2, np.int64), np.zeros((2, 2), np.int64),
            np.zeros(2, np.int64), x_max=1)


def test_codec_files_with_the_learned_prior() -> None:
    from test_compress import image_codec, photo, tokenizer

    codec = image_codec(tokenizer("fsq"))
    codec.tables = codec.fit_prior([photo(32, 32, seed=s) for s in range(3)], learned=True)
    assert "learned" in codec.fitted_priors
    image = photo(27, 35, seed=7)
    encoded = codec.encode(image, "learned")
    assert TokenFile.from_bytes(encoded.data).prior == "learned"
    grid, side, shape = codec.tokens(image)
    assert np.array_equal(codec.decode(encoded.data), codec.render(grid, side, shape))
    assert isinstance(codec.tables.learned, Learned)


def test_cli_fit_learned_then_encode_and_decode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from test_compress import photo, tokenizer
    from vqkit.cli import main

    model, data = tmp_path / "model", tmp_path / "train"
    tokenizer("fsq").save_pretrained(model)
    data.mkdir()
    for s in range(3):
        Image.fromarray(photo(32, 40, seed=s)).save(data / f"{s}.png")
    assert main(["encode", str(data / "0.png"), "-o", str(tmp_path / "x"), "--model", str(model),
                 "--prior", "learned"]) == 2  # no tables yet: a usage error naming the fix
    assert main(["fit-prior", str(model), "--data", str(data), "--learned"]) == 0
    assert main(["encode", str(data / "1.png"), "-o", str(tmp_path / "vqt"), "--model", str(model),
                 "--prior", "learned", "--check"]) == 0
    assert TokenFile.from_bytes((tmp_path / "vqt" / "1.vqt").read_bytes()).prior == "learned"
    assert main(["decode", str(tmp_path / "vqt"), "-o", str(tmp_path / "png"), "--model", str(model)]) == 0
    assert (tmp_path / "png" / "1.png").is_file()


def test_overflowing_or_extreme_weights() -> None:
    """INT64_MIN passes an abs() check (abs(INT64_MIN) < 0) and wraps a product: refused. Logits further apart
    than the table reaches still give every symbol a weight of at least 1."""
    h, f, r = 4, 3, 5
    zeros = (np.zeros((h, f), np.int64), np.zeros(h, np.int64), np.zeros((r, h), np.int64), np.zeros(r, np.int64))
    for i in range(4):
        bad = list(zeros)
        bad[i] = bad[i].copy()
        bad[i].flat[0] = np.iinfo(np.int64).min
        with pytest.raises(ValueError, match="fixed-point bounds"):
            IntMLP(*bad, x_max=7)
    spread = zeros[3].copy()
    spread[0] = 1 << 30  # one logit ~2^30 / 2^(FW+FH-FL) far above the others: beyond the table's span
    net = IntMLP(zeros[0], zeros[1], zeros[2], spread, x_max=7)
    w = net.weights(np.ones((3, f), np.int64), exp_table())
    assert (w[:, 0] == EXP_ONE).all() and (w[:, 1:] == exp_table()[-1]).all() and w.min() >= 1


def test_float64_products_are_the_exact_integer_products() -> None:
    """The two products run in float64 BLAS; at the bounds the load check allows (every weight ±2^24, every
    feature ±x_max, hidden units at their cap) they equal Python's exact integer arithmetic bit for bit."""
    rng = np.random.default_rng(0)
    f, r, x_max = 55, 8, 7
    w1 = rng.choice([-WEIGHT_CAP, WEIGHT_CAP, WEIGHT_CAP - 1], (HIDDEN, f)).astype(np.int64)
    b1 = rng.choice([-WEIGHT_CAP, WEIGHT_CAP], HIDDEN).astype(np.int64)
    w2 = rng.choice([-WEIGHT_CAP, WEIGHT_CAP, 3], (r, HIDDEN)).astype(np.int64)
    b2 = rng.choice([-(WEIGHT_CAP << FH), WEIGHT_CAP << FH], r).astype(np.int64)
    x = rng.choice([-x_max, x_max, 1, 0], (300, f)).astype(np.int64)
    x[0] = np.sign(w1[0]) * x_max  # a row whose first hidden sum is the largest the bounds allow
    net = IntMLP(w1, b1, w2, b2, x_max=x_max)

    def exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # Python integers: no rounding anywhere
        return np.array([[sum(int(u) * int(v) for u, v in zip(row, col, strict=True)) for col in b.T] for row in a],
                        dtype=object)

    h = np.clip((exact(x, w1.T) + b1) >> (FW - FH), 0, HIDDEN_CAP).astype(np.int64)
    assert h.max() == HIDDEN_CAP  # the caps are reached: the test is at the bounds
    logits = ((exact(h, w2.T) + b2) >> (FW + FH - FL)).astype(np.int64)
    gap = np.minimum(logits.max(axis=1, keepdims=True) - logits, len(exp_table()) - 1)
    assert np.array_equal(net.weights(x, exp_table()), exp_table()[gap])


def test_features_that_could_reach_2_to_the_53_are_refused() -> None:
    """A radix so large that feature × weight sums could leave float64's exact integers: refused on load."""
    zeros = (np.zeros((HIDDEN, 40), np.int64), np.zeros(HIDDEN, np.int64), np.zeros((3, HIDDEN), np.int64),
             np.zeros(3, np.int64))
    IntMLP(*zeros, x_max=1 << 20)
    with pytest.raises(ValueError, match="2\\^53"):
        IntMLP(*zeros, x_max=1 << 24)


def test_chunked_coding_is_the_same_code(tables: PriorTables, monkeypatch: pytest.MonkeyPatch) -> None:
    """Features are built a chunk of positions at a time: the chunk size changes memory, not one byte."""
    import vqkit.codec.priors.learned as learned

    grid = digit_grids(1, (20, 23), seed=5)[0]
    whole = encode(tables.prior("learned"), grid, True)[0]
    monkeypatch.setattr(learned, "CHUNK", 7)
    assert encode(tables.prior("learned"), grid, True)[0] == whole


# -- golden file: the learned prior's per-position probabilities through the coder, layered ---------------------
GOLDEN = Path(__file__).parent / "data" / "codec" / "learned-layered.vqt"


def golden_learned() -> tuple[Learned, np.ndarray]:
    """Integer-only construction (weights from integer formulas, a synthetic exp table): the same prior and
    tokens on every machine, independent of torch training and of libm's exp."""
    specs = [StageSpec.digits([4, 3]), StageSpec.digits([4, 3])]
    nets = []
    for s, spec in enumerate(specs):
        f = n_features(spec, specs[s - 1] if s else None, 2)
        stage = []
        for j, r in enumerate(spec.radices):
            a = np.arange(HIDDEN * f, dtype=np.int64).reshape(HIDDEN, f)
            w1 = ((a * 37 + 11 * j + 5 * s) % 97 - 48) * 40
            b1 = (np.arange(HIDDEN, dtype=np.int64) * 13 % 29 - 14) * 100
            w2 = ((np.arange(r * HIDDEN, dtype=np.int64).reshape(r, HIDDEN) * 31 + j) % 61 - 30) * 30
            b2 = np.arange(r, dtype=np.int64) * 5000
            stage.append(IntMLP(w1, b1, w2, b2, x_max=3))
        nets.append(stage)
    table = np.maximum(EXP_ONE >> (np.arange(LOGIT_SPAN * (1 << FL) + 1, dtype=np.int64) // 22), 1)
    y, x = np.mgrid[0:9, 0:11]
    base = (y // 3 + x // 2 + (y * x) % 5) % 12
    tokens = np.stack([base, (base * 5 + x + y) % 12]).astype(np.int64)
    return Learned(specs, nets, table, 2), tokens


def test_golden_learned_layered_file() -> None:
    """A committed file: a numpy or constriction upgrade that changes a learned-prior byte fails here."""
    prior, tokens = golden_learned()
    data = GOLDEN.read_bytes()
    file = TokenFile.from_bytes(data)
    assert file.prior == "learned" and file.layered and file.grid == tokens.shape
    assert np.array_equal(decode(prior, file.payload, file.grid, True), tokens)
    assert encode(prior, tokens, True)[0] == file.payload
    cut = file.truncated(1)
    assert np.array_equal(decode(prior.prefix(1), cut.payload, cut.grid, True), tokens[:1])
    for i in range(0, len(data), 3):  # damage anywhere is refused, never decoded into other tokens
        damaged = bytearray(data)
        damaged[i] ^= 0x41
        with pytest.raises(TokenFileError):
            bad = TokenFile.from_bytes(bytes(damaged))
            decode(prior, bad.payload, bad.grid, bad.layered)


def write_golden() -> None:  # pragma: no cover - run by hand when the format changes on purpose
    prior, tokens = golden_learned()
    payload, _ = encode(prior, tokens, True)
    GOLDEN.write_bytes(TokenFile("image", "learned", bytes(range(16)), (3, 72, 88), tuple(tokens.shape),
                                 tuple(s.size for s in prior.specs), payload, b"", 0, layered=True).to_bytes())
