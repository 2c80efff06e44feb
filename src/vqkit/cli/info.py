"""``vqkit info FILE.vqt``: what a token file holds, read from its header alone (no model needed): the
modality and size of the signal, the token grid and codebooks, the prior, the model id and the rate.
With ``--model`` it also says whether that model (or one of its archived prior tables) decodes it."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from ..codec import TokenFile


def describe(path: Path) -> dict[str, Any]:
    """The header of ``path`` as a JSON-ready dict; TokenFileError (a ValueError) if it is no valid file."""
    from ..modalities import MODALITIES

    data = path.read_bytes()
    file = TokenFile.from_bytes(data)
    tokens = math.prod(file.grid[1:])
    modality = MODALITIES[file.modality]
    samples = modality.samples_of(file.signal_shape)
    nominal = tokens * sum(math.log2(k) for k in file.codebook_sizes)
    return {
        "file": str(path), "bytes": len(data), "modality": file.modality, "signal_shape": list(file.signal_shape),
        "token_grid": list(file.grid), "stages": file.grid[0], "codebook_sizes": list(file.codebook_sizes),
        "prior": file.prior, "model_id": file.model_id.hex(), "tile": file.tile,
        "payload_bytes": len(file.payload), "side_info_bytes": len(file.side_info),
        "layer_bytes": [len(layer) for layer in file.layers()] if file.layered else None,
        "header_bytes": len(data) - len(file.payload) - len(file.side_info),
        "bits_per_sample": 8 * len(data) / samples, "nominal_bits_per_sample": nominal / samples,
        "sample_unit": modality.sample_unit,
    }


def format_info(info: dict[str, Any]) -> str:
    unit = info["sample_unit"]
    lines = [f"{info['file']}: {info['bytes']:,} bytes; {info['modality']}, stored shape "
             f"{'x'.join(map(str, info['signal_shape']))}",
             f"  tokens      {'x'.join(map(str, info['token_grid'][1:]))} positions x {info['stages']} stage(s), "
             f"codebooks {info['codebook_sizes']}",
             f"  prior       {info['prior']}; model id {info['model_id']}; tiles of {info['tile']}",
             f"  rate        {info['bits_per_sample']:.4f} bits per {unit} "
             f"(nominal {info['nominal_bits_per_sample']:.4f})",
             f"  bytes       payload {info['payload_bytes']:,}, side information {info['side_info_bytes']:,}, "
             f"header {info['header_bytes']}"]
    if info.get("layer_bytes"):
        lines.append(f"  layers      {info['layer_bytes']} bytes per stage: `vqkit truncate --stages K` keeps "
                     "the first K")
    if "decodes_with" in info:
        lines.append(f"  model       {info['decodes_with']}")
    return "\n".join(lines)


def run_info(files: list[str], model: str | None, as_json: bool) -> int:
    from ..modalities import open_codec

    codec = open_codec(model)[0] if model else None
    failed, infos = 0, []
    for name in files:
        try:
            info = describe(Path(name))
            if codec is not None:
                file = TokenFile.from_bytes(Path(name).read_bytes())
                try:
                    codec.check(file)
                    verdict = "yes"
                except ValueError as err:
                    verdict = f"no: {err}"
                info["decodes_with"] = f"{model}: {verdict}"
        except (ValueError, OSError) as err:
            print(f"vqkit: error: {name}: {err}", file=sys.stderr, flush=True)
            failed += 1
            continue
        infos.append(info)
        if not as_json:
            print(format_info(info))
    if as_json:
        print(json.dumps(infos, indent=2))
    return 1 if failed else 0
