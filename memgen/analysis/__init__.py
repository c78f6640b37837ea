"""Pure-torch analysis on any Hugging Face causal LM: no Lightning, MLflow, Hydra or omegaconf.

- ``settings``: ``AnalysisSettings`` (decoding, sites, k, probes, steering) and the ``Subject``
  (model, tokenizer, task); ``stages``: the stages chained for one model; ``results``: what
  they return;
- ``behavior``, ``generation``: generate, label MEM/GEN/OTHER, find pairs;
- ``sites``, ``capture``, ``stats``, ``neurons``: activations at named sites, NMD and r, the
  ranking and selection; ``probes``, ``input_baseline``; ``consistency``;
- ``steering/``: hooks, controls, evaluation, tuning.
"""
