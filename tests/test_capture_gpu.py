"""Capture on a CUDA bf16 model: the ``copy_`` into the float32 CPU buffers converts dtype and
device on the way, row by row, as on the CPU (run with ``make test ARGS="-m gpu"``)."""

from __future__ import annotations

import pytest
import torch

from memgen.analysis.capture import capture_last_token, collect_features
from memgen.analysis.generation import encode_prompts
from tests.helpers_analysis import MODELS, PROMPTS, char_tokenizer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_bf16_cuda_capture_fills_each_row_like_one_prompt_alone(arch):
    tokenizer = char_tokenizer()
    cpu_model = MODELS[arch](len(tokenizer))
    model = MODELS[arch](len(tokenizer)).to("cuda", torch.bfloat16)
    sites = ["resid.1", "mlp.1", "mlp.2"]
    features = collect_features(model, tokenizer, PROMPTS, sites, batch_size=3)
    reference = collect_features(cpu_model, tokenizer, PROMPTS, sites, batch_size=3)
    for site, x in features.items():
        assert x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous()
        for row, prompt in enumerate(PROMPTS):
            with torch.no_grad(), capture_last_token(model, [site]) as rec:
                model(**encode_prompts(tokenizer, [prompt], "cuda"))
            # bf16 matmuls differ a little with the batch's padding: bf16's resolution
            torch.testing.assert_close(x[row], rec[site][0], atol=3e-2, rtol=3e-2)
        # the same weights in float32 on the CPU: equal within bf16 precision
        torch.testing.assert_close(x, reference[site], atol=5e-2, rtol=5e-2)
