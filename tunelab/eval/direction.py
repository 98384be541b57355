"""Which way is better for a metric: one rule shared by the loop (best checkpoint, early stopping),
sweeps (Optuna direction) and reports (best row)."""

LOWER_IS_BETTER_WORDS = ("loss", "perplexity", "ppl", "error", "wer", "cer", "mse", "mae", "rmse", "seconds")


def lower_is_better(metric: str) -> bool:
    """eval_loss, perplexity, wer, ... are minimised; accuracy, f1, mcc, bleu, rouge ... maximised."""
    return any(word in metric.lower() for word in LOWER_IS_BETTER_WORDS)
