"""Which chat template a model is trained and served with (`model.chat_template`), and the templates shipped here.

`own` keeps the template the tokenizer carries; a shipped name (`SHIPPED`) or a `.jinja` file replaces it when the
base tokenizer is loaded, so training, evaluation, the checkpoint's tokenizer and the exported folder all render the
same text. How the loss mask is found for a template is `tokenize.py`.
"""

from __future__ import annotations

from pathlib import Path

from trainer.errors import TrainerError

OWN = "own"
TEMPLATES_DIR = Path(__file__).parent / "assets" / "chat_templates"
# ChatML with Qwen 2.5's tool rendering (tools in the system turn, `<tool_call>` JSON blocks, `<tool_response>` turns)
# and no default system prompt: for ChatML models whose own template drops tool calls (SmolLM2).
CHATML_TOOLS = "chatml-tools"
SHIPPED = {CHATML_TOOLS: TEMPLATES_DIR / "chatml_tools.jinja"}


def template_text(choice: str) -> str | None:
    """The template `model.chat_template` names: None for the model's own, else the shipped or file template."""
    if choice == OWN:
        return None
    path = SHIPPED.get(choice, Path(choice))
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        shipped = ", ".join(sorted(SHIPPED))
        raise TrainerError(
            f"model.chat_template={choice!r}: not `{OWN}`, not a shipped template ({shipped}), and not a readable "
            f"file ({type(exc).__name__})"
        ) from None


def apply_template_choice(tokenizer, choice: str) -> None:
    """Give `tokenizer` the template `choice` names (nothing for `own`)."""
    text = template_text(choice)
    if text is not None:
        tokenizer.chat_template = text


def tools_way_out(tokenizer) -> str:
    """What to do when a model's template cannot render tool conversations."""
    if "<|im_start|>" in tokenizer.get_vocab():
        return f"this model speaks ChatML: set model.chat_template={CHATML_TOOLS}, or a .jinja file that renders tools"
    return "set model.chat_template to a .jinja file that renders tools with this model's special tokens"
