"""lpo_jax.sampling: static-shape jitted generation (prefill + decode loop) and multi-turn agent episodes.

    sampler = Sampler(model)                                    # or Sampler(model, mesh=mesh): data parallel
    cfg = SamplingConfig(max_new_tokens=256, eos_ids=(eos,),
                         stop_sequences=stop_token_patterns(tokenizer, ["</answer>"]))
    out = sampler.generate(prompt_token_lists, key, cfg, num_samples=8)   # SampleOutput (numpy)

`out.logprobs` are log-probs of the sampled tokens under the temperature-1 policy (what RL importance
ratios need); `out.sampling_logprobs` under the sampling distribution actually used.
"""
from lpo_jax.sampling.agent_loop import AgentConfig, branch_episodes, run_episodes
from lpo_jax.sampling.buckets import Buckets, pad_left, pad_right
from lpo_jax.sampling.config import (FINISH_EOS, FINISH_LENGTH, FINISH_NAMES, FINISH_STOP, SamplingConfig)
from lpo_jax.sampling.generation import DecodeState, SampleOutput, append_tokens, decode, generate
from lpo_jax.sampling.episodes import Env, EpisodeBatch, EpisodeRecord
from lpo_jax.sampling.ops import filter_logits, inverse_cdf_sample, select_tokens, top_p_threshold
from lpo_jax.sampling.sampler import Sampler
from lpo_jax.sampling.stop import (cut_text_at_stop, decode_tokens, encode_text, stop_token_patterns,
                                   truncate_at_stop)

__all__ = [
    "AgentConfig", "Buckets", "DecodeState", "Env", "EpisodeBatch", "EpisodeRecord", "FINISH_EOS",
    "FINISH_LENGTH", "FINISH_NAMES", "FINISH_STOP", "SampleOutput", "Sampler", "SamplingConfig",
    "append_tokens", "branch_episodes", "cut_text_at_stop", "decode", "decode_tokens", "encode_text",
    "filter_logits", "generate", "inverse_cdf_sample", "pad_left", "pad_right", "run_episodes",
    "select_tokens", "stop_token_patterns", "top_p_threshold", "truncate_at_stop",
]
