"""The words of generated conversations (`trainer/synthesis/generate.py`): each template's question phrasings, of
which `data.generation.mix` asks so many per fact, drawn with a seeded RNG; and how questions name a symbol's kind and
where a use of it was read."""

PHRASINGS = {
    "what_does": ["What does `{q}` do?", "Explain `{q}` in {pkg}.", "What is `{q}` for?"],
    "signature": ["What is the signature of `{q}`?", "How do I call `{q}`?", "What does `{q}` take and return?"],
    "members": ["What does the `{q}` type contain?", "Which members does `{q}` have?", "Show me the `{q}` type."],
    "example": ["Give an example of using `{q}`.", "Show me example code for `{q}`.", "How is `{q}` used?"],
    "reverse_lookup": ["In {pkg}, which {kind} {rest}?", "Which {pkg} {kind} {rest}?"],
    "returns": ["Which type does `{q}` return?", "What does a call to `{q}` give back?"],
    "overview": ["What is the `{import_path}` package for?", "Give me an overview of package {pkg}."],
    "doc_section": ['Explain "{title}" from the {source} docs.', "What do the {source} docs say about {title}?"],
    "tool_lookup": ["How do I use `{q}`?", "Can you tell me how `{q}` works?"],
    "which_symbol": [
        "Which {pkg} {kind} should I use to {job}?",
        "I want to {job}. Which {source} API does that?",
        "What is the {pkg} {kind} that {third}?",
        "Is there something in {source} to {job}?",
        "I need the {pkg} {kind} that {third}. What is it called?",
        "What is the name of the {source} {kind} that {third}?",
    ],
    "usage": [
        "How do I {job} with {source}?",
        "Show me how to {job} in {source}.",
        "How can I {job} using {source}? Show the code.",
        "In a {source} app, how do I {job}?",
    ],
    "call_in_context": [
        "Show me `{q}` used in real code.",
        "How is `{q}` called in practice?",
        "Give me a short snippet that uses `{q}`.",
    ],
    "contrast": [
        "What is the difference between `{q}` and `{other}`?",
        "Should I use `{q}` or `{other}`?",
        "How does `{q}` relate to `{other}`?",
    ],
    "detail": [
        'Which {pkg} {kind} is this about: "{detail}"',
        'The {source} docs say: "{detail}" Which {kind} is that?',
        'What is the {source} {kind} the docs describe this way: "{detail}"',
    ],
    "no_such_api": [
        "How do I use `{fake}`?",
        "What does `{fake}` do?",
        "Show me how to call `{fake}`.",
        "Is `{fake}` the right way to {job}?",
    ],
}
ORIGINS = {"test": "tests", "example program": "example programs", "example function": "Example functions"}
PROBE_TEMPLATES = ("reverse_lookup", "returns")  # test-split questions (generate.py); generate_probes writes them
KIND_WORDS = {"func": "function", "method": "method", "type": "type", "var": "variable", "const": "constant"}
