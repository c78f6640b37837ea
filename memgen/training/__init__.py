"""Lightning training: tokenizer, data, model builders, the LightningModule, the callbacks that
log into a tracked run (``lightning``, ``callbacks``, ``lineage``, ``progress``), and ``runner``
(prepare and fit, as every training command uses them); ``reopen`` loads a finished run's model."""
