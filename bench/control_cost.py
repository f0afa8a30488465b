"""What control adds to each view row of each step, in FLOPs: ControlNet and T2I-Adapter against the UNet.

The networks are built from their published configurations (SD 1.5's UNet, ``lllyasviel``'s ControlNet, TencentARC's
full T2I-Adapter; SDXL's UNet and its ControlNet) on PyTorch's ``meta`` device, so no weights are needed or allocated,
and ``torch.utils.flop_counter`` counts one forward pass of each on one 1024- or 512-px view. Writes
``docs/control_cost.md`` (``--out-dir`` elsewhere); ``--smoke`` counts tiny configurations instead (CI).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent


def flops(call: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def count(config: dict[str, Any], cells: int, width: int) -> tuple[int, dict[str, int]]:
    """FLOPs of the UNet of ``config`` on one view of ``cells`` latent cells, and of its control networks."""
    from diffusers import ControlNetModel, T2IAdapter, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=cells, **config)
        control = ControlNetModel.from_unet(unet)
        x, t = torch.randn(1, 4, cells, cells), torch.tensor([500])
        text, guide = torch.randn(1, 77, width), torch.randn(1, 3, cells * 8, cells * 8)
        extra: dict[str, Any] = {}
        if config.get("addition_embed_type") == "text_time":
            extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)}}
        base = flops(lambda: unet(x, t, encoder_hidden_states=text, **extra))
        cost = {"ControlNet": flops(lambda: control(x, t, encoder_hidden_states=text, controlnet_cond=guide, **extra))}
        if "addition_embed_type" not in config:  # the full SD adapter (SDXL's adapters differ in shape)
            channels = list(config.get("block_out_channels", (320, 640, 1280, 1280)))
            adapter = T2IAdapter(in_channels=3, channels=channels, num_res_blocks=2, downscale_factor=8)
            cost["T2I-Adapter"] = flops(lambda: adapter(guide))
    return base, cost


def rows(smoke: bool) -> list[tuple[str, str, float, float]]:
    """(model, network, GFLOP per view row, fraction of the UNet's)."""
    out = []
    families: list[tuple[str, dict[str, Any], int, int]] = [
        ("SD 1.5 (512 px)", dict(cross_attention_dim=768, attention_head_dim=8), 64, 768),
    ]
    if not smoke:
        families.append(
            (
                "SDXL (1024 px)",
                dict(
                    cross_attention_dim=2048,
                    attention_head_dim=(5, 10, 20),
                    block_out_channels=(320, 640, 1280),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=(1, 2, 10),
                    addition_embed_type="text_time",
                    addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=2816,
                    use_linear_projection=True,
                ),
                128,
                2048,
            )
        )
    for name, config, cells, width in families:
        if smoke:
            config = dict(
                cross_attention_dim=32,
                attention_head_dim=8,
                block_out_channels=(32, 64),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                norm_num_groups=8,
            )
            cells, width = 16, 32
        base, cost = count(config, cells, width)
        out.append((name, "UNet", base / 1e9, 1.0))
        out += [(name, net, f / 1e9, f / base) for net, f in cost.items()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    table = ["| model | network | GFLOP per view row per step | against the UNet |", "|---|---|---|---|"]
    table += [f"| {m} | {n} | {g:.1f} | {r:.1%} |" for m, n, g, r in rows(args.smoke)]
    text = "# What control costs per view\n\nWritten by `python bench/control_cost.py` (FLOP counts on PyTorch's meta "
    text += "device: no weights, no timing). Classifier-free guidance doubles every row alike.\n\n"
    text += "\n".join(table) + "\n"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "control_cost.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
