"""The experiment record's Lua scripts on a real Redis: one running experiment per model, and every change a
compare-and-set (a guardrail stop and a promote cannot both win)."""

from __future__ import annotations

from pantry import experiments
from pantry.experiments import Guardrails
from pantry.keys import EXPERIMENTS, EXPERIMENTS_RUNNING

KEYS = (EXPERIMENTS, EXPERIMENTS_RUNNING)


def _new(model: str) -> experiments.Experiment:
    return experiments.new_experiment(model=model, control="a", treatment="b", share=0.1, ramp=[],
                                      guardrails=Guardrails(), stage_min_decisions=1, stage_min_seconds=1.0,
                                      by="test")


def test_one_running_per_model_and_compare_and_set(redis_client):
    model = "store-test-model"  # not a real model name: nothing that serves reads it
    first, second = _new(model), _new(model)
    try:
        assert redis_client.eval(experiments.CREATE_SCRIPT, 2, *KEYS, first.id, model,
                                 experiments.encode(first)) is None
        taken = redis_client.eval(experiments.CREATE_SCRIPT, 2, *KEYS, second.id, model, experiments.encode(second))
        assert taken == first.id.encode() and redis_client.hget(EXPERIMENTS, second.id) is None

        raw = redis_client.hget(EXPERIMENTS, first.id)
        stopped = experiments.ended(first, "stopped", "guardrail x", "guardrail")
        promoted = experiments.ended(first, "promoted", "ok", "someone")
        # both read the same record; the first write wins, the second finds it changed
        assert redis_client.eval(experiments.UPDATE_SCRIPT, 2, *KEYS, first.id, raw, experiments.encode(stopped),
                                 model) == 1
        assert redis_client.eval(experiments.UPDATE_SCRIPT, 2, *KEYS, first.id, raw, experiments.encode(promoted),
                                 model) == 0
        assert experiments.decode(redis_client.hget(EXPERIMENTS, first.id)).status == "stopped"
        assert redis_client.hget(EXPERIMENTS_RUNNING, model) is None  # the model is free again
        assert redis_client.eval(experiments.CREATE_SCRIPT, 2, *KEYS, second.id, model,
                                 experiments.encode(second)) is None
    finally:
        redis_client.hdel(EXPERIMENTS, first.id, second.id)
        redis_client.hdel(EXPERIMENTS_RUNNING, model)
