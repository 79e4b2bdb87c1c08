"""SynthHop: KB, questions, search tool, env protocol + snapshot/restore, rewards, vocab, noisy demos."""
import collections
import pickle

import numpy as np
import pytest

from lpo_jax.tasks.base import Example, score_completions
from lpo_jax.tasks import synthhop as sh
from lpo_jax.tasks import synthhop_format as fmt
from lpo_jax.tasks.synthhop_demos import DemoConfig, make_demonstrations
from lpo_jax.tasks.synthhop_env import SearchEnv


@pytest.fixture(scope="module")
def kb():
    return sh.make_kb(sh.SynthHopConfig())


@pytest.fixture(scope="module")
def data(kb):
    return sh.make_dataset(kb, 200, seed=1)


def test_kb_is_seeded_functional_and_sized(kb):
    assert len(kb.entities) == 500 == len(set(kb.entities)) and len(kb.relations) == 8
    assert kb.table.shape == (500, 8) and np.all(kb.table != np.arange(500)[:, None])
    again = sh.make_kb(sh.SynthHopConfig())
    assert again.entities == kb.entities and np.array_equal(again.table, kb.table)
    other = sh.make_kb(sh.SynthHopConfig(seed=1))
    assert other.entities != kb.entities
    for e in range(0, 500, 50):
        assert all(c != e and kb.entities[c][:2] == kb.entities[e][:2] for c in kb.close_entities(e))


def test_questions_have_gold_chain_and_parse_back(kb, data):
    hops = collections.Counter(ex.meta["hops"] for ex in data)
    assert set(hops) == {1, 2, 3, 4} and max(hops.values()) - min(hops.values()) <= 1
    assert len({sh.question_key(ex) for ex in data}) == len(data)
    ex = data[5]
    rels = [kb.relation_index[r] for r in ex.meta["relations"]]
    chain = kb.follow(kb.entity_index[ex.meta["start"]], rels)
    assert ex.answer == kb.entities[chain[-1]]
    # relation applied first is mentioned last: "what is the r_k of ... the r_1 of ENT ?"
    assert ex.prompt.endswith(f"the {ex.meta['relations'][0]} of {ex.meta['start']} ?")
    parsed = sh.parse_question(kb, ex.prompt)
    assert (parsed.prompt, parsed.answer, dict(parsed.meta)) == (ex.prompt, ex.answer, dict(ex.meta))
    with pytest.raises(ValueError, match="not a SynthHop question"):
        sh.parse_question(kb, "what is the color_of of nobody ?")
    held = sh.make_dataset(kb, 50, seed=2, exclude={sh.question_key(e) for e in data})
    assert not {sh.question_key(e) for e in held} & {sh.question_key(e) for e in data}


def test_search_tool_exact_noisy_topk_and_parsing(kb):
    e, r = 17, 3
    ent, rel = kb.entities[e], kb.relations[r]
    exact = sh.SynthHopSearch(kb, sh.SynthHopConfig(eps_ret=0.0))
    rng = np.random.default_rng(0)
    assert exact(f"{ent} {rel}", rng) == kb.fact(e, r)
    assert exact(f"the {rel} of {ent} ?", rng) == kb.fact(e, r)  # lenient parse
    strict = sh.SynthHopSearch(kb, sh.SynthHopConfig(eps_ret=0.0, lenient_parse=False))
    assert strict(f"the {rel} of {ent}", rng) == "no result" and strict(f"{ent} {rel}", rng) == kb.fact(e, r)
    assert exact("nothing here", rng) == "no result"
    noisy = sh.SynthHopSearch(kb, sh.SynthHopConfig(eps_ret=0.3))
    outs = [noisy(f"{ent} {rel}", rng) for _ in range(2000)]
    wrong = np.mean([o != kb.fact(e, r) for o in outs])
    assert abs(wrong - 0.3) < 0.04
    for o in outs:  # distractors are true facts about a close entity or another relation
        s, q, obj = o.split()
        assert kb.fact(kb.entity_index[s], kb.relation_index[q]) == o
        assert o == kb.fact(e, r) or (q == rel and s[:2] == ent[:2] and s != ent) or (s == ent and q != rel)
    top3 = sh.SynthHopSearch(kb, sh.SynthHopConfig(eps_ret=0.0, top_k=3))(f"{ent} {rel}", rng).split(" ; ")
    assert len(top3) == 3 == len(set(top3)) and top3[0] == kb.fact(e, r)


def _answer_episode(env, ex, kb):
    env.reset(ex)
    entity = ex.meta["start"]
    for rel in ex.meta["relations"]:
        obs, done, reward, info = env.step(f"<think> need {rel} </think> <search> {entity} {rel} </search>")
        assert not done and reward == 0.0 and info["query"] == f"{entity} {rel}"
        entity = obs.split()[3]
    return env.step(f"<think> so </think> <answer> {entity} </answer>")


def test_env_protocol_and_rewards(kb, data):
    env = sh.make_synthhop_env(kb, sh.SynthHopConfig(eps_ret=0.0))
    ex = next(e for e in data if e.meta["hops"] == 3)
    assert env.reset(ex.prompt) == ex.prompt  # str prompts resolve through the question parser
    obs, done, reward, info = _answer_episode(env, ex, kb)
    assert done and reward == 1.0 and obs == "" and info["answer"] == ex.answer and env.state.n_searches == 3
    assert fmt.is_valid_format(env.state.transcript())
    with pytest.raises(RuntimeError, match="finished"):
        env.step("<answer> x </answer>")
    env.reset(ex)
    obs, done, _, info = env.step("i think it is blue")
    assert obs == env.invalid_action_obs and info["invalid_action"] and not done
    for _ in range(3):
        obs, done, reward, info = env.step(f"<search> {ex.meta['start']} born_in </search>")
    assert not done
    obs, done, reward, info = env.step(f"<search> {ex.meta['start']} born_in </search>")  # turn 5 = max_turns
    assert done and info["truncated"] and obs == "" and reward == 0.0 and env.state.n_turns == 5


def test_tool_error_becomes_observation(kb, data):
    def broken(query, rng):
        raise RuntimeError("index offline")

    env = SearchEnv(broken, sh.synthhop_reward_fn, max_turns=3)
    env.reset(data[0])
    obs, done, _, info = env.step("<search> a b </search>")
    assert obs == env.tool_error_obs and not done and "index offline" in info["tool_error"]
    assert env.state.n_tool_errors == 1


def test_snapshot_restore_reproduces_state_and_noise(kb, data):
    env = sh.make_synthhop_env(kb, sh.SynthHopConfig(eps_ret=0.5, top_k=2), seed=3)
    ex = next(e for e in data if e.meta["hops"] == 4)
    env.reset(ex)
    start = ex.meta["start"]
    env.step(f"<search> {start} {ex.meta['relations'][0]} </search>")
    snap = env.snapshot()
    snap = pickle.loads(pickle.dumps(snap))  # states are picklable (host-side checkpointing)
    actions = [f"<search> {start} {r} </search>" for r in kb.relations[:3]]
    first = [env.step(a) for a in actions]
    env.restore(snap)
    assert env.state.n_turns == 1 and env.state.turns == snap.turns
    assert [env.step(a) for a in actions] == first                  # same noise draws after restore
    env.restore(snap, seed=123)
    fresh = [env.step(a)[0] for a in actions]
    env.restore(snap, seed=124)
    assert [env.step(a)[0] for a in actions] != fresh  # reseeded: fresh draws (fixed seeds, deterministic)
    full = env.snapshot()
    prefix = full.prefix(1)
    assert prefix.turns == snap.turns and prefix.n_searches == 1 and not prefix.done
    with pytest.raises(ValueError, match="prefix turn count"):
        full.prefix(9)


def test_reward_normalization_and_shaping():
    golds = ["The Eiffel Tower", "eiffel tower paris"]
    assert fmt.normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert fmt.normalize_answer("An apple, a Pear and THE plum.") == "apple pear and plum"
    assert fmt.exact_match("eiffel tower", golds) and fmt.exact_match("the EIFFEL tower.", golds)
    assert not fmt.exact_match("tower", golds)
    assert fmt.token_f1("eiffel tower in paris", golds) == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert fmt.token_f1("nothing", golds) == 0.0
    ex = Example("q", "The Eiffel Tower", {"aliases": ["Tour Eiffel"]})
    em = fmt.make_qa_reward_fn()
    good = "<think> x </think> <search> q </search> <information> d </information> <answer> tour eiffel </answer>"
    assert em(good, ex) == 1.0 and em("<answer> paris </answer>", ex) == 0.0 and em("tour eiffel", ex) == 0.0
    assert em("<answer> x </answer> <answer> eiffel tower </answer>", ex) == 1.0  # last answer counts
    f1 = fmt.make_qa_reward_fn(fmt.QARewardConfig(match="f1"))
    assert f1("<answer> eiffel tower in paris </answer>", ex) == 1.0 and em("<answer> eiffel tower in paris </answer>", ex) == 0
    shaped = fmt.make_qa_reward_fn(fmt.QARewardConfig(format_shaping=True))
    assert shaped(good, ex) == 1.0
    assert shaped("blah <answer> tour eiffel </answer>", ex) == 0.8
    assert shaped(good.replace("tour eiffel", "paris"), ex) == 0.2
    assert shaped("blah <answer> paris </answer>", ex) == 0.1
    assert shaped("<think> x </think> <search> q </search> <information> d </information>", ex) == 0.2
    assert shaped("<think> x <search> q </search>", ex) == 0.0
    retr = fmt.make_qa_reward_fn(fmt.QARewardConfig(format_shaping=True, scores=fmt.FormatScores(retrieval_score=0.1)))
    assert retr(good.replace("> d <", "> the eiffel tower is tall <").replace("tour eiffel", "paris"), ex) == pytest.approx(0.3)
    for bad in ("<search> q </search> <answer> a </answer>", "<answer> a </answer> <think> x </think>",
                "<think> <think> x </think> </think>", "<answer> </answer>"):
        assert not fmt.is_valid_format(bad), bad
    with pytest.raises(ValueError, match="match"):
        fmt.QARewardConfig(match="bleu")
    rewards, stats = score_completions(em, [good, "<answer> x </answer>"], [ex, ex])
    assert rewards.tolist() == [1.0, 0.0] and stats.n_failed == 0


def test_vocab_covers_all_text_and_demos_are_noisy(kb, data):
    vocab = sh.synthhop_vocab(kb)
    assert len(vocab) == len(set(vocab)) and vocab[:3] == ["<pad>", "<eos>", "<unk>"]
    assert 500 + 8 + 8 < len(vocab) < 700
    demos = make_demonstrations(kb, data, seed=0)
    words = set(vocab)
    for d in demos:
        assert set(d.prompt.split()) <= words and set(d.completion.split()) <= words
        assert all(is_obs == text.startswith("<information>") for text, is_obs in d.segments)
        assert d.n_turns <= 5 and d.reward == sh.synthhop_reward_fn(d.completion, d.example)
    acc = {k: np.mean([d.reward for d in demos if d.example.meta["hops"] == k]) for k in (1, 2, 3, 4)}
    assert acc[1] > 0.7 and 0.05 < acc[4] < acc[1] and acc[4] <= acc[2]  # mid-range success, falls with hops
    clean = make_demonstrations(kb, data[:40], seed=0, cfg=DemoConfig(p_correct_order=1.0, p_relation_error=0.0),
                                env_cfg=sh.SynthHopConfig(eps_ret=0.0))
    assert all(d.correct for d in clean)
    again = make_demonstrations(kb, data[:20], seed=0)
    assert [d.completion for d in again] == [d.completion for d in demos[:20]]


def test_fresh_noise_on_restore_differs_per_env_seed(kb, data):
    ex = next(e for e in data if e.meta["hops"] == 4)
    cfg = sh.SynthHopConfig(eps_ret=0.5, top_k=2)
    src = sh.make_synthhop_env(kb, cfg, seed=0)
    src.reset(ex)
    src.step(f"<search> {ex.meta['start']} born_in </search>")
    snap = src.snapshot()
    actions = [f"<search> {ex.meta['start']} {r} </search>" for r in kb.relations]

    def continue_with(seed):
        env = sh.make_synthhop_env(kb, cfg, seed=seed, fresh_noise_on_restore=True)
        env.restore(snap)
        assert env.state.turns == snap.turns
        return [env.step(a)[0] for a in actions[:4]]

    assert continue_with(1) == continue_with(1) and continue_with(1) != continue_with(2)


def test_word_level_tokenizer_from_vocab_round_trips(kb, data):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = sh.synthhop_vocab(kb)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    demo = make_demonstrations(kb, data[:8], seed=3)
    for d in demo:
        for text in (d.prompt, d.completion):
            ids = tok.encode(text).ids
            assert vocab.index("<unk>") not in ids and len(ids) == len(text.split())
            assert tok.decode(ids) == " ".join(text.split())
