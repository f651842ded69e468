#!/usr/bin/env python3
"""Reference ids and chat-template renderings for DeepSeek-R1-Distill-Qwen-7B's real header.

The input is the registry entry `r1-distill-qwen-7b-header` (`aha pull r1-distill-qwen-7b-header`):
the first 99,614,720 bytes of the Q4_K_M GGUF, whose header is whole but whose tensor data is
cut off. The gguf package's reader maps every tensor and fails on such a file, so the tensor
views are skipped here; only the metadata is read.

Tokenizer reference: Hugging Face's `tokenizers` library running the pipeline of the R1 distills'
published tokenizer.json (deepseek-ai/DeepSeek-R1-Distill-Qwen-*), with the vocabulary and merges
read from the header:
  - normalizer NFC;
  - pre-tokenizer: Split on Qwen2's pattern (isolated), then ByteLevel without its own regex;
  - BPE over ids 0..151642, merges as listed;
  - added tokens 151643..151664 (`<｜end▁of▁sentence｜>` ... `<|file_sep|>`), none normalized,
    matched whole in text; special as published (the sentence markers and the vision/quad
    tokens; `<｜User｜>`, `<｜Assistant｜>`, `<think>`, `</think>`, `<|EOT|>`, the FIM and
    `<tool_call>` tokens are added but not special). The header's 399 `[PAD…]` fillers
    (ids 151665..152063, type UNUSED) are no added tokens there;
  - post-processor: `<｜begin▁of▁sentence｜>` (151646) before the text (add_bos_token).
Why not transformers' own GGUF path (`convert_gguf_tokenizer`, as tools/gen_tokenizer_fixture.py
uses for qwen2 and smollm)? For this file it drops the control tokens spelled with `｜`/`▁`
(it takes them for llama.cpp mislabels), so `<｜User｜>` is cut into pieces, and it mints new
ids past the vocabulary (152064, 152065, ...) for `<|endoftext|>` and the BOS/EOS it then adds
again. `--compare` prints how many cases that path and a no-NFC pipeline (llama.cpp's) give
differently.

Template reference: the header's `tokenizer.chat_template` rendered by transformers'
`render_jinja_template` (jinja2 sandbox, trim_blocks, lstrip_blocks, loopcontrols: what
`apply_chat_template` uses), with `bos_token`/`eos_token` set as the tokenizer config has them.
Messages are passed as written (an assistant turn with `content: None` and `tool_calls` keeps
its None: the shape the template was written for).

Setup (no torch needed):
    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install gguf transformers tokenizers jinja2
Run:
    /tmp/tokvenv/bin/python tools/gen_r1_fixture.py [--compare] [HEADER]
HEADER defaults to the file `aha pull r1-distill-qwen-7b-header` writes.

Writes tests/fixtures/tokenizer_deepseek_r1_qwen.json (the format of tokenizer_qwen2.json, plus
`bos_id` and `add_bos_token`) and tests/fixtures/r1_template.json.

Versions used for the committed fixtures: tokenizers 0.23.3, transformers 5.24.0, jinja2 3.1.6,
gguf 0.19.0.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tokenizer_fixture as base  # noqa: E402  (the shared corpus and JSON writing)

REPO_ROOT = base.REPO_ROOT
FIXTURE_DIR = base.FIXTURE_DIR
DEFAULT_HEADER = os.path.join(
    os.environ.get("AHA_MODELS") or os.path.join(os.path.expanduser("~"), ".local", "share", "aha", "models"),
    "r1-distill-qwen-7b-header",
    "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.header.gguf",
)

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIRST_ADDED, LAST_ADDED = 151643, 151664
# The added tokens the published tokenizer.json marks special (the others are plain added ones).
SPECIAL_ADDED = {151643, 151646, 151650, 151651, 151652, 151653, 151654, 151655, 151656}
BOS_ID = 151646

# R1-specific strings on top of the shared corpus: its own special tokens in text, its chat
# format, the tool markers of its template (which are no tokens of this vocabulary), the
# [PAD] fillers, and text that NFC changes.
R1_EXTRA = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<|EOT|>",
    "</think>",
    "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n",
    "<｜begin▁of▁sentence｜>You are terse.<｜User｜>hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜><｜User｜>again<｜Assistant｜>",
    "<｜User｜>안녕하세요? 오늘 날씨 어때요?<｜Assistant｜><think>\n사용자가 날씨를 묻는다.\n</think>\n\n맑습니다.<｜end▁of▁sentence｜>",
    "<｜User｜>用中文解释递归。<｜Assistant｜><think>\n好的，我需要解释递归。\n</think>\n\n递归是函数调用自身。",
    "<think>\nOkay, so I need to find 17 * 23. Let me compute: 17 * 20 = 340, 17 * 3 = 51, total 391.\n</think>\n\n**391**",
    "<think>\n\n</think>\n\n",
    "</think></think><think>",
    "<think>x</think>y<｜end▁of▁sentence｜>",
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Seoul\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{\"temp\": 21}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
    "<tool_call>\n{\"name\": \"search_docs\", \"arguments\": {\"query\": \"KV cache\"}}\n</tool_call>",
    "<｜User｜",
    "｜Assistant｜>",
    "<|User|>",
    "<｜user｜>",
    "▁▁▁ U+2581 lower one eighth block",
    "｜ fullwidth vertical line ｜",
    "[PAD151665]",
    "[PAD152063] after the vocabulary",
    "<|quad_start|><|vision_start|><|image_pad|><|vision_end|><|quad_end|>",
    "<|fim_prefix|>def f(x):<|fim_suffix|>\n    return y<|fim_middle|>",
    "<|repo_name|>aha<|file_sep|>crates/aha-engine/src/tokenizer.rs",
    "Ko\u0308nig und Ko\u0308nigin",
    "\u1112\u1161\u11ab\u1100\u1173\u11af \u110c\u1161\u1106\u1169",
    "\u212b \u2126 \u00c5\u03a9",
    "e\u0301e\u0301e\u0301 \u00e9\u00e9\u00e9",
    "\u0915\u094d\u0937 \u0928\u093f",
    "Let me think step by step.\n\n1. First, 12 × 12 = 144.\n2. Then 144 − 44 = 100.\n\nSo the answer is 100.",
    "Wait, that's not right. Let me re-check: 3 + 5 = 8, not 9. Hmm.",
    "\\boxed{42}",
    "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$",
    "\t\t\n\n  \u3000\u3000 \n",
    "    \n        \n",
    "🤔💭 thinking... 🧠✨",
    "👩🏻‍💻👨🏿‍🔬🧑‍🤝‍🧑",
    "fn main() { let s = \"<think>\"; println!(\"{s}</think>\"); }",
]


def read_header(path):
    """{key: value} of the header's metadata; the tensor views (whose data is missing) skipped."""
    from gguf import GGUFReader

    class HeaderReader(GGUFReader):
        def _build_tensors(self, start_offs, fields):
            self.tensors = []

    reader = HeaderReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def published_pipeline(meta, nfc=True):
    """The R1 distills' tokenizer.json, its vocabulary and merges from the header, as a Tokenizer."""
    from tokenizers import Tokenizer

    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == 152064, len(tokens)
    added = [
        {
            "id": i,
            "content": tokens[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": i in SPECIAL_ADDED,
        }
        for i in range(FIRST_ADDED, LAST_ADDED + 1)
    ]
    bos = tokens[BOS_ID]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [BOS_ID], "tokens": [bos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens[:FIRST_ADDED])},
            "merges": list(meta["tokenizer.ggml.merges"]),
        },
    }
    return Tokenizer.from_str(json.dumps(doc))


def transformers_gguf_ids(path, texts):
    """What transformers' GGUF tokenizer path gives (for --compare only)."""
    import gguf

    orig = gguf.GGUFReader._build_tensors
    gguf.GGUFReader._build_tensors = lambda self, offs, fields: setattr(self, "tensors", [])
    try:
        wrapper, _, _ = base.build_reference(path)
    finally:
        gguf.GGUFReader._build_tensors = orig
    return [wrapper.encode(t, add_special_tokens=False) for t in texts]


def corpus():
    texts = list(base.CORPUS) + R1_EXTRA
    assert len(texts) == len(set(texts)), "duplicate corpus entries"
    return texts


# --------------------------------------------------------------------------
# Chat template cases
# --------------------------------------------------------------------------

TOOLS_SYSTEM = (
    "You are aha's agent. You can call these tools:\n"
    '{"name": "search_docs", "parameters": {"query": "string"}}\n'
    '{"name": "run_code", "parameters": {"language": "string", "code": "string"}}\n'
    "To call one, write <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>."
)

TEMPLATE_CASES = [
    ("one user turn", [{"role": "user", "content": "What is 2+2?"}], True),
    ("no generation prompt", [{"role": "user", "content": "What is 2+2?"}], False),
    (
        "multi-turn with reasoning: earlier reasoning is cut at the last </think>",
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is 17 * 23?"},
            {
                "role": "assistant",
                "content": "<think>\n17 * 20 = 340, 17 * 3 = 51, so 391.\n</think>\n\n391",
            },
            {"role": "user", "content": "And 391 / 17?"},
            {"role": "assistant", "content": "<think>\nIt undoes the product.\n</think>\n\n23"},
            {"role": "user", "content": "Thanks! Now in Korean: 고마워요?"},
        ],
        True,
    ),
    (
        "reasoning with two </think> and an answer without any",
        [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "<think>a</think>b</think>\n\nfinal 1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "plain answer, no reasoning"},
            {"role": "user", "content": "Q3 😀"},
        ],
        True,
    ),
    (
        "system prompt given late still goes first",
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "<think>\ngreet\n</think>\n\nHello."},
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "bye"},
        ],
        True,
    ),
    (
        "tools as aha's agent sends them: tool results, then the answer after them",
        [
            {"role": "system", "content": TOOLS_SYSTEM},
            {"role": "user", "content": "How does the KV cache get reused?"},
            {
                "role": "assistant",
                "content": "<think>\nI should search the docs.\n</think>\n\n"
                '<tool_call>\n{"name": "search_docs", "arguments": {"query": "KV cache reuse"}}\n</tool_call>',
            },
            {"role": "tool", "content": "engine.rs: the cache keeps the common prefix of turns."},
            {"role": "tool", "content": "ARCHITECTURE.md: Turns and branches reuse it by common prefix."},
            {
                "role": "assistant",
                "content": "<think>\nThe results say prefix reuse.\n</think>\n\nBy common prefix: the engine truncates the cache to it.",
            },
            {"role": "user", "content": "And across a compaction?"},
        ],
        True,
    ),
    (
        "the prompt ends with tool results: no assistant tag after them",
        [
            {"role": "user", "content": "Run it."},
            {
                "role": "assistant",
                "content": '<tool_call>\n{"name": "run_code", "arguments": {"language": "python", "code": "print(6*7)"}}\n</tool_call>',
            },
            {"role": "tool", "content": "42\n"},
        ],
        True,
    ),
    (
        "OpenAI-style tool calls (content None), two results, then the answer",
        [
            {"role": "user", "content": "Weather in Seoul and Busan?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Seoul"}'},
                    },
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Busan"}'},
                    },
                ],
            },
            {"role": "tool", "content": '{"temp": 21}'},
            {"role": "tool", "content": '{"temp": 24}'},
            {"role": "assistant", "content": "Seoul 21°C, Busan 24°C."},
            {"role": "user", "content": "Which is warmer?"},
        ],
        True,
    ),
    (
        "OpenAI-style single tool call",
        [
            {"role": "user", "content": "Weather in Jeju?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Jeju"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 19}'},
        ],
        True,
    ),
]


def render_template(template, messages, add_generation_prompt, bos, eos):
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos,
        eos_token=eos,
    )
    return rendered[0]


def write_tokenizer_fixture(path, cases, sha_prefix):
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write(f'  "gguf_sha256_prefix": {json.dumps(sha_prefix)},\n')
        f.write('  "pre": "deepseek-r1-qwen",\n')
        f.write('  "reference": "tokenizers (Hugging Face) with the R1 distills\' published tokenizer.json pipeline; see tools/gen_r1_fixture.py",\n')
        f.write(f'  "bos_id": {BOS_ID},\n')
        f.write('  "add_bos_token": true,\n')
        f.write('  "cases": [\n')
        for i, case in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            f.write("    " + base.dump_case(case) + sep + "\n")
        f.write("  ]\n}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("header", nargs="?", default=DEFAULT_HEADER)
    ap.add_argument("--out-dir", default=FIXTURE_DIR)
    ap.add_argument("--compare", action="store_true", help="count cases other tokenizer paths give differently")
    args = ap.parse_args()

    meta = read_header(args.header)
    assert meta["tokenizer.ggml.pre"] == "deepseek-r1-qwen", meta["tokenizer.ggml.pre"]
    assert meta["tokenizer.ggml.bos_token_id"] == BOS_ID
    assert meta["tokenizer.ggml.add_bos_token"] is True
    tok = published_pipeline(meta)
    texts = corpus()
    cases = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        # add_bos_token: the same ids after BOS.
        assert tok.encode(text).ids == [BOS_ID] + ids, text
        cases.append({"text": text, "ids": ids})
    sha = base.sha256_prefix(args.header)
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, "tokenizer_deepseek_r1_qwen.json")
    write_tokenizer_fixture(out, cases, sha)
    print(f"{out}: {len(cases)} cases, {sum(len(c['ids']) for c in cases)} ids")

    template = meta["tokenizer.chat_template"]
    tokens = meta["tokenizer.ggml.tokens"]
    bos, eos = tokens[BOS_ID], tokens[meta["tokenizer.ggml.eos_token_id"]]
    tcases = []
    for name, messages, gen in TEMPLATE_CASES:
        text = render_template(template, messages, gen, bos, eos)
        ids = tok.encode(text, add_special_tokens=False).ids
        tcases.append(
            {"name": name, "add_generation_prompt": gen, "messages": messages, "text": text, "ids": ids}
        )
    tdoc = {
        "gguf_sha256_prefix": sha,
        "reference": "transformers.utils.chat_template_utils.render_jinja_template over the header's tokenizer.chat_template; ids of the rendered text as in tokenizer_deepseek_r1_qwen.json",
        "bos_token": bos,
        "eos_token": eos,
        "cases": tcases,
    }
    tout = os.path.join(args.out_dir, "r1_template.json")
    with open(tout, "w", encoding="utf-8") as f:
        json.dump(tdoc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{tout}: {len(tcases)} conversations")

    if args.compare:
        plain = published_pipeline(meta, nfc=False)
        no_nfc = [t for t, c in zip(texts, cases) if plain.encode(t, add_special_tokens=False).ids != c["ids"]]
        print(f"without NFC (llama.cpp's way): {len(no_nfc)} of {len(texts)} cases differ: {no_nfc!r}")
        tf = transformers_gguf_ids(args.header, texts)
        diff = [t for t, ids, c in zip(texts, tf, cases) if ids != c["ids"]]
        print(f"transformers' GGUF tokenizer: {len(diff)} of {len(texts)} cases differ, e.g. {diff[:8]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
