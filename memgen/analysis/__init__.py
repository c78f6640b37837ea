"""Pure-torch analysis on any Hugging Face causal LM: no Lightning, no MLflow."""
