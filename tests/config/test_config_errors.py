"""How refusals are worded: schema errors in the README's words, and typo hints."""

from __future__ import annotations

import jsonschema

from reprogrid.config import errors as config_errors


def test_between_short_names_fewer_edits_count_as_a_typo():
    assert config_errors.edits("fashon", "fashion") == 1
    assert config_errors.edits("FASHION", "fashion") == 0
    assert config_errors.typo_edits("fashon", "fashion") == 2
    assert config_errors.typo_edits("abcd", "abce") == 1
    assert config_errors.typo_edits("ab", "ac") == 0
    assert config_errors.typos_of("fashon", ["default", "fashion"]) == ["fashion"]
    assert config_errors.typos_of("ab", ["ac", "default"]) == []


def test_an_unknown_key_is_reported_first_with_a_hint(schema):
    config = {"train": {"epoch": 3, "lr": -1}}
    errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
    message = config_errors.describe(config_errors.first_error(errors), "my.yaml")
    assert message.startswith(
        "unknown config key 'train.epoch' in my.yaml (did you mean 'train.epochs'?); allowed here: "
    )
