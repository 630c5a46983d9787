"""Check an exported GGUF with llama.cpp itself (a reader nobody here wrote): its tokenizer against the model's own
on the 200 round-trip texts, and its greedy answer (to the end-of-turn token, or --tokens) against transformers' on
the merged safetensors.

llama.cpp does not install on this machine from PyPI (docs/export.md says what was tried); build its
`llama-tokenize` and `llama-completion` once and pass their folder.

Usage: python benchmarks/llama_cpp_check.py --bin DIR --folder EXPORTED_FOLDER [--gguf model-f16.gguf] [--tokens 48]
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.export.gguf_verify import ROUND_TRIP_TEXTS

QUESTION = "How do I read the {articleID} URL parameter of a request in chi?"


def llama_ids(binary: Path, gguf: Path, text: str) -> list[int]:
    command = [str(binary), "-m", str(gguf), "--stdin", "--ids", "--no-bos", "--log-disable"]
    out = subprocess.run(command, input=text, capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--gguf", default="model-f16.gguf")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--tokenizer", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    gguf = args.folder / args.gguf
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    texts = ROUND_TRIP_TEXTS if args.tokenizer else []
    differing = [t for t in texts if llama_ids(args.bin / "llama-tokenize", gguf, t) != tokenizer(t)["input_ids"]]
    print(f"tokenizer: {len(texts) - len(differing)} of {len(texts)} texts encode to the same ids in llama.cpp")
    for text in differing[:5]:
        print(f"  differs: {text!r}")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    ours = model.generate(ids, max_new_tokens=args.tokens, do_sample=False)[0, ids.shape[1] :]
    command = [str(args.bin / "llama-completion"), "-m", str(gguf), "-p", prompt, "-n", str(args.tokens),
               "--temp", "0", "--top-k", "1", "--repeat-penalty", "1", "-no-cnv", "--no-warmup",
               "--no-display-prompt"]  # fmt: skip
    theirs = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    transformers_text = tokenizer.decode(ours, skip_special_tokens=True)  # llama.cpp prints no special tokens
    theirs = theirs.strip().removesuffix("[end of text]").strip()  # llama.cpp's note that generation stopped
    same = theirs == transformers_text.strip()
    print(f"greedy, {args.tokens} tokens (special tokens not shown): {'identical' if same else 'different'}")
    print(f"  transformers: {transformers_text!r}")
    print(f"  llama.cpp:    {theirs!r}")


if __name__ == "__main__":
    main()
