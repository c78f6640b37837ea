"""Lightning training: tokenizer, data, model builders and the LightningModule."""
