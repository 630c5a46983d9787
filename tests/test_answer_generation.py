"""Evaluation's greedy answers: batched with left padding, they are the answers of one prompt at a time."""

import pytest

from trainer.evaluation.evaluate import load_plain
from trainer.evaluation.generation import build_prompts, generate
from trainer.synthesis.synthesize import synthesize

PROMPTS, BATCH, NEW_TOKENS = 12, 4, 16


@pytest.mark.slow
def test_batched_left_padded_answers_equal_one_at_a_time_answers(make_config):
    """The tiny 4-bit base as evaluation loads it. Padding changes floating-point sums, so a near-tie between two
    tokens could flip one answer (benchmarks/generation.py counts them); on these prompts none does, and equality is
    what is asserted."""
    config = make_config()
    rows = [row for split in synthesize(config).dataset.values() for row in split]
    model, tokenizer = load_plain(config, "base")
    prompts = build_prompts(tokenizer, rows)[:PROMPTS]
    lengths = [len(p.token_ids) for p in prompts]
    batches = [lengths[i : i + BATCH] for i in range(0, PROMPTS, BATCH)]
    assert len(prompts) == PROMPTS and all(len(set(batch)) > 1 for batch in batches)  # every batch is padded

    one_at_a_time = generate(model, tokenizer, prompts, NEW_TOKENS, batch_size=1)
    batched = generate(model, tokenizer, prompts, NEW_TOKENS, batch_size=BATCH)
    assert batched == one_at_a_time
    assert all(answer.strip() for answer in one_at_a_time)  # real text on both sides, not empty strings
