"""A learnable generation set shared by the fine-tuning and adapter tests."""

import pandas as pd

WORDS = [
    "apple", "river", "stone", "cloud", "tiger", "piano", "bread", "lemon",
    "chair", "ocean", "maple", "robot", "candle", "garden", "pepper", "silver",
    "window", "rocket", "castle", "button",
]  # fmt: skip


def echo_frame() -> pd.DataFrame:
    """One row per word: the prompt asks to repeat it, the response is the word."""
    return pd.DataFrame([{"prompt": f"Repeat the word: {w}", "response": w} for w in WORDS])
