"""The GPU peer for `aha bench`: PyTorch + transformers, bf16, greedy, on a checkpoint folder that
`aha synth --dtype st-bf16` wrote (same shapes as the real model). Also measures the device's
copy bandwidth, from which the decode ceiling follows.

    python3 tools/peer_transformers.py DIR [PROMPT_TOKENS] [GEN_TOKENS]
    python3 tools/peer_transformers.py --bandwidth     (only the copy bandwidth: {"copy_gb_s": …})

Prints one JSON line: prefill_tok_s, decode_tok_s (generate(128) minus generate(1), so prefill is
not counted), weights_gb_per_token, copy_gb_s (bytes read + written per second), ceiling_tok_s_bf16 (copy bandwidth, read + write
counted, ÷ weights per token: every weight byte must cross the memory bus once per token).
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def sync_time():
    torch.cuda.synchronize()
    return time.perf_counter()


def copy_bandwidth(dev):
    """GB/s read + written by a 4 GiB device-to-device copy, 10 times after 3 warm-ups."""
    x = torch.empty(4 << 30, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    t = sync_time()
    for _ in range(10):
        y.copy_(x)
    gb_s = 2 * 10 * x.numel() / (sync_time() - t) / 1e9
    del x, y
    torch.cuda.empty_cache()
    return gb_s


def main():
    path = sys.argv[1]
    dev = torch.device("cuda")
    if path == "--bandwidth":
        print(json.dumps({"copy_gb_s": round(copy_bandwidth(dev), 1)}))
        return
    p = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    copy = copy_bandwidth(dev)
    try:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cuda")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16).to(dev)
    m.eval()
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, m.config.vocab_size - 16, (1, p), generator=g).to(dev)
    mask = torch.ones_like(ids)
    kw = dict(attention_mask=mask, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        m(ids)
        m.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw)
        t = sync_time()
        m(ids)
        prefill = p / (sync_time() - t)
        one, full = [], []
        for _ in range(3):
            t = sync_time()
            m.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            one.append(sync_time() - t)
            t = sync_time()
            out = m.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
            full.append(sync_time() - t)
        assert out.shape[1] == p + n, out.shape
    one.sort()
    full.sort()
    decode = (n - 1) / (full[1] - one[1])
    nbytes = sum(
        q.numel() * q.element_size() for name, q in m.named_parameters() if "embed_tokens" not in name
    )
    gb = nbytes / 1e9
    print(json.dumps({
        "peer": f"transformers {__import__('transformers').__version__} torch {torch.__version__} bf16",
        "model": path,
        "prefill_tok_s": round(prefill, 1),
        "decode_tok_s": round(decode, 1),
        "weights_gb_per_token": round(gb, 3),
        "copy_gb_s": round(copy, 0),
        "ceiling_tok_s_bf16": round(copy / gb, 1),
    }))


if __name__ == "__main__":
    main()
